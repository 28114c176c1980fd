//! The terminal daemon's main loop, driven through the JSON-lines interface
//! (spec/interfaces.md): commands on stdin, events on stdout.
//!
//! A tap on an armed order or top-up runs the tap flow ([`super::core::tap`], performed by
//! [`super::tap`]): journal first, then the ledger, then the offline policy; an approval is
//! shown only once it is on disk.
//!
//! A background task replays pending entries and refreshes the card replica, catalog and
//! staff caches; it reports through a channel, and the main loop writes every event.

use super::client::{LedgerClient, ShiftAnswer};
use super::config::{ReaderBackend, TerminalConfig};
use super::core::login::LoginGuard;
use super::core::policy::OfflineLimits;
use super::core::replay::Backoff;
use super::core::tap::{FlowLimits, Outcome, TapFlow};
use super::frontend::{Front, Input, JsonlFrontend, Leave, TerminalInfo};
use super::journal::{CachedStaff, Catalog, CloseoutState, EntryState, Journal};
use super::sync::{SharedJournal, pull_card_feed, replay_round};
use super::tap::{self, Payment, PaymentKind, Tap, append_void, recover};
use crate::domain::{CardUid, Cents, ClientRequestId, ProductId, StaffId, TerminalSeq};
use crate::protocol::api::{
    ORDER_ITEMS_MAX, OrderItem, PaymentMethod, QUANTITY_MAX, RECHARGE_AMOUNT_CENTS_MAX,
    SHIFT_TOTAL_CENTS_MAX, Scan, TerminalKind, VoidReason, format_time,
};
use crate::protocol::codes::ErrorCode;
use crate::protocol::commands::{Command, CommandItem};
use crate::protocol::events::{Decision, Event, Status};
use crate::reader::ReaderEvent;
use crate::reader::core::{CardType, Feedback};
use chrono::Utc;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

/// The `card` event of a presentation.
pub fn card_event(uid: &CardUid, reader: &str, card_type: Option<CardType>) -> Event {
    Event::Card {
        uid: uid.clone(),
        reader: reader.to_owned(),
        card_type: card_type.map(CardType::as_str),
    }
}

/// The reader name of cards presented with the `tap` command.
pub const SIMULATED_READER: &str = "simulated";
/// Characters of a reader name kept in the scan log.
const SCAN_READER_CHARS_MAX: usize = 128;
/// Scans uploaded per sync round, at most (one `POST /v1/scans`).
const SCANS_PER_ROUND_MAX: usize = 1000;

/// 10 ms waits at shutdown for the sync task's last journal call, at most.
const SHUTDOWN_JOURNAL_WAITS_MAX: u32 = 300;
/// Events the sync task may queue for the main loop.
pub const SYNC_EVENTS_MAX: usize = 64;

/// What a command armed: the next card pays for it, receives it, or shows its balance.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Armed {
    Pay(Payment),
    Balance,
}

/// What `void_last` needs of the last approved operation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LastApproved {
    client_request_id: ClientRequestId,
    card: CardUid,
    /// Its signed effect on the card, as journaled (an order negative, a top-up positive).
    effect: Cents,
}

fn error_event(code: ErrorCode, message: impl Into<String>) -> Event {
    Event::error(code, message)
}

/// The daemon's state between commands.
pub struct Daemon {
    config: TerminalConfig,
    journal: SharedJournal,
    /// For online decisions: its own connection pool, so a tap never waits behind a
    /// replay batch or a feed page on a shared connection.
    client: LedgerClient,
    /// For replay and feeds.
    sync_client: LedgerClient,
    online: Arc<AtomicBool>,
    /// True while a tap runs: its online attempt may be `sending`, which the sync task must
    /// then leave alone (it voids `sending` attempts only when no tap runs).
    tap_in_flight: Arc<AtomicBool>,
    staff: Option<StaffId>,
    armed: Option<Armed>,
    /// The last approved operation of this session, which `void_last` refunds.
    last_approved: Option<LastApproved>,
    guard: LoginGuard,
    started: Instant,
    /// The reader in use (its name), or `simulated`, `waiting`, `disconnected`.
    reader_state: String,
}

type JournalResult<T> = Result<T, super::journal::JournalError>;

impl Daemon {
    /// Opens the journal and recovers from a crash: every online attempt that was being
    /// sent when the daemon stopped is in doubt, and gets a void.
    pub fn open(config: TerminalConfig) -> anyhow::Result<Daemon> {
        let journal = Journal::open(&config.journal).map_err(|e| {
            anyhow::anyhow!("cannot open the journal {}: {e}", config.journal.display())
        })?;
        Daemon::with_journal_handle(config, journal)
    }

    /// A daemon over an already opened journal (tests open one with a size limit to see
    /// what a full disk does); runs the same recovery as [`Daemon::open`].
    pub fn with_journal_handle(
        config: TerminalConfig,
        mut journal: Journal,
    ) -> anyhow::Result<Daemon> {
        recover(&mut journal)?;
        let client = LedgerClient::new(&config.ledger_url, &config.token, config.timeout_ms)?;
        let sync_client = LedgerClient::new(&config.ledger_url, &config.token, config.timeout_ms)?;
        let reader_state = match config.reader_backend {
            ReaderBackend::Simulated => SIMULATED_READER.to_owned(),
            ReaderBackend::Pcsc => "waiting".to_owned(),
        };
        Ok(Daemon {
            config,
            journal: Arc::new(Mutex::new(journal)),
            client,
            sync_client,
            online: Arc::new(AtomicBool::new(true)),
            tap_in_flight: Arc::new(AtomicBool::new(false)),
            staff: None,
            armed: None,
            last_approved: None,
            guard: LoginGuard::default(),
            started: Instant::now(),
            reader_state,
        })
    }

    fn with_journal<T>(
        &self,
        f: impl FnOnce(&mut Journal) -> JournalResult<T>,
    ) -> JournalResult<T> {
        let mut j = self
            .journal
            .lock()
            .map_err(|e| super::journal::JournalError::Invalid(e.to_string()))?;
        f(&mut j)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The `status` event. A front end may ask for it every second, and taps wait for the
    /// journal while it is read: [`Journal::status_counts`] reads no synced entry.
    fn status_event(&self) -> Event {
        match self.with_journal(|j| j.status_counts()) {
            Ok(c) => Event::Status(Status {
                online: self.online.load(Ordering::Relaxed),
                pending: c.pending,
                in_doubt: c.in_doubt,
                rejected: c.rejected,
                declined_offline: c.declined_offline,
                closeouts_pending: c.closeouts_pending,
                journal_writable: self
                    .with_journal(|j| Ok(!j.is_read_only()))
                    .unwrap_or(false),
                last_sync_at: c.last_sync_at.map(format_time),
                last_feed_at: c.last_feed_at.map(format_time),
                reader: self.reader_state.clone(),
                staff: self.staff.as_ref().map(|s| s.as_str().to_owned()),
            }),
            Err(e) => error_event(ErrorCode::JournalUnavailable, e.to_string()),
        }
    }

    /// Who this terminal is and what it sells, from the journal's caches (empty lists when
    /// the journal cannot be read: the front end then shows what it had).
    pub fn info(&self) -> TerminalInfo {
        let (point_of_sale, menu) = match self.with_journal(|j| j.catalog()) {
            Ok(Some((catalog, _))) => (
                catalog.point_of_sale,
                catalog
                    .products
                    .into_iter()
                    .map(|p| (p.product_id.as_str().to_owned(), p.name, p.price_cents))
                    .collect(),
            ),
            Ok(None) => (String::new(), Vec::new()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cached catalog");
                (String::new(), Vec::new())
            }
        };
        let staff = self
            .with_journal(|j| j.staff())
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.active && m.role.may_work_at(self.config.kind))
            .map(|m| (m.staff_id.as_str().to_owned(), m.name))
            .collect();
        TerminalInfo {
            terminal: self.config.name.clone(),
            point_of_sale,
            kind: self.config.kind,
            menu,
            staff,
        }
    }

    /// Handles one command line; returns the events to write and whether to stop.
    pub async fn handle_line(&mut self, line: &str) -> (Vec<Event>, bool) {
        match serde_json::from_str(line) {
            Ok(command) => self.handle(command).await,
            Err(e) => (
                vec![error_event(ErrorCode::InvalidCommand, e.to_string())],
                false,
            ),
        }
    }

    /// Handles one command; returns the events for the front end and whether to stop.
    pub async fn handle(&mut self, command: Command) -> (Vec<Event>, bool) {
        match command {
            Command::Quit {} => (vec![], true),
            Command::Status {} => (vec![self.status_event()], false),
            Command::Cancel {} => {
                self.armed = None;
                (vec![Event::Cancelled], false)
            }
            Command::Login { staff_id, pin } => (vec![self.login(&staff_id, &pin)], false),
            Command::Logout {} => {
                self.staff = None;
                self.armed = None;
                self.last_approved = None;
                (vec![Event::LoggedOut], false)
            }
            Command::Order { items } => (vec![self.arm_order(&items)], false),
            Command::Topup {
                amount_cents,
                payment_method,
            } => (vec![self.arm_topup(amount_cents, payment_method)], false),
            Command::VoidLast {} => (vec![self.void_last()], false),
            Command::Shift {} => (vec![self.shift()], false),
            Command::CloseShift { counted_cash_cents } => {
                (vec![self.close_shift(counted_cash_cents)], false)
            }
            Command::Balance {} => {
                self.armed = Some(Armed::Balance);
                (
                    vec![Event::Armed {
                        operation: "balance",
                        total_cents: None,
                        amount_cents: None,
                    }],
                    false,
                )
            }
            Command::Tap { .. } if self.config.reader_backend == ReaderBackend::Pcsc => (
                vec![error_event(
                    ErrorCode::InvalidCommand,
                    "cards come from the PC/SC reader; tap is for --reader simulated",
                )],
                false,
            ),
            Command::Tap { uid } => match CardUid::parse(&uid) {
                Ok(uid) => (self.present(uid, SIMULATED_READER, None).await, false),
                Err(e) => (
                    vec![error_event(ErrorCode::InvalidUid, e.to_string())],
                    false,
                ),
            },
        }
    }

    fn login(&mut self, staff_id: &str, pin: &str) -> Event {
        let refuse = |message: &str| Event::Login {
            ok: false,
            staff_id: None,
            name: None,
            role: None,
            message: Some(message.to_owned()),
        };
        let Ok(id) = StaffId::parse(staff_id) else {
            return refuse("unknown staff id");
        };
        let now = self.now_ms();
        if let Err(locked) = self.guard.check(&id, now) {
            let seconds = locked.until_ms.saturating_sub(now).div_ceil(1000);
            return refuse(&format!("too many wrong PINs; try again in {seconds} s"));
        }
        let member: Option<CachedStaff> = match self.with_journal(|j| j.staff_member(&id)) {
            Ok(m) => m,
            Err(e) => return error_event(ErrorCode::JournalUnavailable, e.to_string()),
        };
        let Some(member) = member.filter(|m| m.active) else {
            return refuse("unknown staff id");
        };
        let matched = argon2::PasswordHash::new(&member.pin_hash)
            .map(|hash| {
                use argon2::PasswordVerifier;
                argon2::Argon2::default()
                    .verify_password(pin.as_bytes(), &hash)
                    .is_ok()
            })
            .unwrap_or(false);
        if let Some(locked) = self.guard.record(&id, matched, now) {
            let seconds = locked.until_ms.saturating_sub(now).div_ceil(1000);
            return refuse(&format!("wrong PIN; locked for {seconds} s"));
        }
        if !matched {
            return refuse("wrong PIN");
        }
        self.staff = Some(id.clone());
        Event::Login {
            ok: true,
            staff_id: Some(id.as_str().to_owned()),
            name: Some(member.name),
            role: Some(member.role.as_str()),
            message: None,
        }
    }

    fn arm_order(&mut self, items: &[CommandItem]) -> Event {
        let Some(staff) = self.staff.clone() else {
            return error_event(ErrorCode::NotLoggedIn, "log in first");
        };
        if self.config.kind != TerminalKind::Bar {
            return error_event(
                ErrorCode::WrongTerminalKind,
                "a checkpoint terminal does not sell",
            );
        }
        if items.is_empty() || items.len() > ORDER_ITEMS_MAX {
            return error_event(
                ErrorCode::InvalidCommand,
                format!("an order has 1 to {ORDER_ITEMS_MAX} lines"),
            );
        }
        let catalog: Option<(Catalog, _)> = match self.with_journal(|j| j.catalog()) {
            Ok(c) => c,
            Err(e) => return error_event(ErrorCode::JournalUnavailable, e.to_string()),
        };
        let Some((catalog, _)) = catalog else {
            return error_event(
                ErrorCode::NoCatalog,
                "the catalog has not been received from the ledger yet",
            );
        };
        let mut lines = Vec::with_capacity(items.len());
        let mut total = Cents::ZERO;
        for item in items {
            if !(1..=QUANTITY_MAX).contains(&item.quantity) {
                return error_event(
                    ErrorCode::InvalidCommand,
                    format!("quantity is 1 to {QUANTITY_MAX}"),
                );
            }
            let Some(product) = ProductId::parse(&item.product_id)
                .ok()
                .and_then(|id| catalog.products.iter().find(|p| p.product_id == id))
            else {
                return error_event(
                    ErrorCode::UnknownProduct,
                    format!("{} is not on the menu", item.product_id),
                );
            };
            let Ok(line_total) = product
                .price_cents
                .checked_mul(item.quantity)
                .and_then(|l| total.checked_add(l))
            else {
                return error_event(ErrorCode::InvalidCommand, "the total is out of range");
            };
            total = line_total;
            lines.push(OrderItem {
                product_id: product.product_id.clone(),
                quantity: item.quantity,
                unit_price_cents: product.price_cents,
            });
        }
        if total < Cents::new(1) {
            return error_event(
                ErrorCode::InvalidCommand,
                "an order costs at least one cent",
            );
        }
        self.armed = Some(Armed::Pay(Payment {
            staff,
            kind: PaymentKind::Order {
                items: lines,
                total,
            },
        }));
        Event::Armed {
            operation: "order",
            total_cents: Some(total),
            amount_cents: None,
        }
    }

    fn shift(&self) -> Event {
        if self.config.kind != TerminalKind::Checkpoint {
            return error_event(
                ErrorCode::WrongTerminalKind,
                "shifts are kept at checkpoints",
            );
        }
        match self.with_journal(|j| j.shift_summary()) {
            Ok(s) => Event::Shift {
                opened_at: s.opened_at.map(format_time),
                cash_cents: s.cash,
                card_cents: s.card,
                count: s.count,
                voids: s.voids,
            },
            Err(e) => error_event(ErrorCode::JournalUnavailable, e.to_string()),
        }
    }

    fn close_shift(&mut self, counted_cash_cents: i64) -> Event {
        let Some(staff) = self.staff.clone() else {
            return error_event(ErrorCode::NotLoggedIn, "log in first");
        };
        if self.config.kind != TerminalKind::Checkpoint {
            return error_event(
                ErrorCode::WrongTerminalKind,
                "shifts are kept at checkpoints",
            );
        }
        if !(0..=SHIFT_TOTAL_CENTS_MAX).contains(&counted_cash_cents) {
            return error_event(
                ErrorCode::InvalidCommand,
                format!("counted_cash_cents is 0 to {SHIFT_TOTAL_CENTS_MAX}"),
            );
        }
        let crid = ClientRequestId::new_random();
        match self.with_journal(|j| {
            j.close_shift(crid, &staff, Cents::new(counted_cash_cents), Utc::now())
        }) {
            Ok(closed) => {
                // The last top-up belongs to a closed shift now: it is not voided from here.
                self.last_approved = None;
                let c = closed.closeout;
                Event::ShiftClosed {
                    client_request_id: c.client_request_id,
                    staff_id: c.staff_id.as_str().to_owned(),
                    opened_at: format_time(c.opened_at),
                    closed_at: format_time(c.closed_at),
                    cash_cents: c.cash_cents,
                    card_cents: c.card_cents,
                    count: c.count,
                    voids: closed.voids,
                    counted_cash_cents: c.counted_cash_cents,
                    difference_cents: closed.difference,
                }
            }
            Err(e) => error_event(ErrorCode::JournalUnavailable, e.to_string()),
        }
    }

    fn arm_topup(&mut self, amount_cents: i64, method: PaymentMethod) -> Event {
        let Some(staff) = self.staff.clone() else {
            return error_event(ErrorCode::NotLoggedIn, "log in first");
        };
        if self.config.kind != TerminalKind::Checkpoint {
            return error_event(
                ErrorCode::WrongTerminalKind,
                "a bar terminal does not top up",
            );
        }
        if !(1..=RECHARGE_AMOUNT_CENTS_MAX).contains(&amount_cents) {
            return error_event(
                ErrorCode::InvalidCommand,
                format!("amount_cents is 1 to {RECHARGE_AMOUNT_CENTS_MAX}"),
            );
        }
        // The festival's per-top-up limit, as the ledger last reported it; checked here too,
        // so that an offline checkpoint does not take money the ledger would refuse.
        match self.with_journal(|j| j.topup_limits()) {
            Ok(Some(limits)) if Cents::new(amount_cents) > limits.recharge_max_cents => {
                return error_event(
                    ErrorCode::LimitExceeded,
                    format!(
                        "a top-up is at most {} cents",
                        limits.recharge_max_cents.get()
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => return error_event(ErrorCode::JournalUnavailable, e.to_string()),
        }
        self.armed = Some(Armed::Pay(Payment {
            staff,
            kind: PaymentKind::Topup {
                amount: Cents::new(amount_cents),
                method,
            },
        }));
        Event::Armed {
            operation: "topup",
            total_cents: None,
            amount_cents: Some(Cents::new(amount_cents)),
        }
    }

    /// A card presented on `reader`: pays for what is armed, or shows its balance. The
    /// presentation goes to the scan log with what it led to.
    async fn present(
        &mut self,
        uid: CardUid,
        reader: &str,
        card_type: Option<CardType>,
    ) -> Vec<Event> {
        let card = card_event(&uid, reader, card_type);
        vec![card, self.outcome(uid, reader).await]
    }

    /// What a presented card leads to (the `card` event aside), logged in the scan log.
    async fn outcome(&mut self, uid: CardUid, reader: &str) -> Event {
        let outcome = match self.armed.take() {
            None | Some(Armed::Balance) => self.balance(&uid).await,
            Some(Armed::Pay(payment)) => self.pay(uid.clone(), payment).await,
        };
        let (result, crid) = match &outcome {
            Event::Decision(d) => (d.status, d.client_request_id),
            Event::Balance { .. } => ("balance", None),
            _ => ("error", None),
        };
        let seq = crid
            .and_then(|crid| {
                self.with_journal(|j| j.entry_by_request_id(crid))
                    .ok()
                    .flatten()
            })
            .map(|e| e.terminal_seq);
        self.log_scan(&uid, result, reader, seq);
        outcome
    }

    /// Records a presentation in the scan log (best effort: the log is for the organiser's
    /// statistics, and a full disk must not stop a sale that was already decided).
    fn log_scan(&self, uid: &CardUid, result: &str, reader: &str, seq: Option<TerminalSeq>) {
        let scan = Scan {
            card_uid: uid.clone(),
            result: result.to_owned(),
            reader: reader.chars().take(SCAN_READER_CHARS_MAX).collect(),
            scanned_at: Utc::now(),
            terminal_seq: seq,
        };
        if let Err(e) = self.with_journal(|j| j.record_scan(&scan)) {
            tracing::warn!(error = %e, "scan not logged");
        }
    }

    /// What the reader layer reported: events for the front end, and the feedback to give.
    /// For a card, the `card` event is not among them: the caller shows it at once with
    /// [`card_event`], before the ledger is asked.
    pub async fn on_reader(&mut self, event: ReaderEvent) -> (Vec<Event>, Option<Feedback>) {
        match event {
            ReaderEvent::Connected { name } => {
                self.reader_state = name.clone();
                (
                    vec![Event::Reader {
                        state: "connected",
                        name: Some(name),
                        message: None,
                    }],
                    None,
                )
            }
            ReaderEvent::Waiting { filter } => {
                self.reader_state = "waiting".into();
                (
                    vec![Event::Reader {
                        state: "waiting",
                        name: None,
                        message: Some(if filter.is_empty() {
                            "plug in a contactless reader".to_owned()
                        } else {
                            format!("plug in a reader whose name contains {filter:?}")
                        }),
                    }],
                    None,
                )
            }
            ReaderEvent::Disconnected { name, reason } => {
                self.reader_state = "disconnected".into();
                (
                    vec![Event::Reader {
                        state: "disconnected",
                        name: Some(name),
                        message: Some(reason),
                    }],
                    None,
                )
            }
            ReaderEvent::Card {
                reader,
                uid,
                repeat: true,
                ..
            } => {
                tracing::debug!(%uid, reader, "same presentation again: not a tap");
                self.log_scan(&uid, "repeat", &reader, None);
                (Vec::new(), None)
            }
            ReaderEvent::Card { reader, uid, .. } => {
                let outcome = self.outcome(uid, &reader).await;
                let feedback = match &outcome {
                    Event::Decision(d) if d.approved() => Feedback::Approved,
                    Event::Balance { .. } => Feedback::Approved,
                    _ => Feedback::Declined,
                };
                (vec![outcome], Some(feedback))
            }
            ReaderEvent::Failed { reader, error, .. } => {
                if let Some(uid) = error.uid() {
                    self.log_scan(&uid, error.code(), &reader, None);
                }
                (
                    vec![Event::CardError {
                        reader,
                        code: error.code(),
                        message: error.to_string(),
                    }],
                    Some(Feedback::Declined),
                )
            }
        }
    }

    async fn balance(&self, uid: &CardUid) -> Event {
        let balance = |balance_cents, status, source, as_of| Event::Balance {
            card_uid: uid.clone(),
            balance_cents,
            status,
            source,
            as_of,
        };
        if self.online.load(Ordering::Relaxed)
            && let Ok(answer) = self.client.card(uid).await
        {
            if answer.status == 200 {
                let text = |key: &str| answer.body[key].as_str().map(str::to_owned);
                return balance(
                    answer.body["balance_cents"].as_i64().map(Cents::new),
                    text("status"),
                    "ledger",
                    text("updated_at"),
                );
            }
            if answer.status == 404 {
                return balance(None, None, "ledger", None);
            }
        }
        match self.with_journal(|j| Ok((j.replica_card(uid)?, j.local_charges(uid)?))) {
            Ok((Some((card, at)), local)) => balance(
                card.balance.checked_sub(local).ok(),
                Some(if card.blocked { "blocked" } else { "active" }.to_owned()),
                "replica",
                Some(format_time(at)),
            ),
            Ok((None, _)) => balance(None, None, "replica", None),
            Err(e) => error_event(ErrorCode::JournalUnavailable, e.to_string()),
        }
    }

    /// Runs the tap flow for `payment` to its verdict: journal, ledger, offline policy.
    async fn pay(&mut self, uid: CardUid, payment: Payment) -> Event {
        let (flow, first) = TapFlow::start(
            payment.movement(),
            payment.total(),
            self.online.load(Ordering::Relaxed),
            self.flow_limits(),
        );
        let online = Arc::clone(&self.online);
        let mut tap = Tap::new(&self.journal, &uid, &payment);
        self.tap_in_flight.store(true, Ordering::SeqCst);
        let verdict = tap::run(flow, first, &mut tap, &self.client, || {
            online.store(false, Ordering::Relaxed);
        })
        .await;
        self.tap_in_flight.store(false, Ordering::SeqCst);
        let crid = tap.client_request_id(verdict.operation);
        if verdict.outcome != Outcome::Declined
            && let Some(crid) = crid
        {
            self.last_approved = Some(LastApproved {
                client_request_id: crid,
                card: uid.clone(),
                effect: payment.journal_kind().1,
            });
        }
        Event::Decision(Decision {
            client_request_id: crid,
            operation: payment.operation(),
            card_uid: uid,
            status: verdict.outcome.as_str(),
            reason: verdict.reason,
            total_cents: payment.total(),
            balance_cents: verdict.balance,
            target_client_request_id: None,
        })
    }

    /// The limits the tap flow decides offline with: the configuration's offline limits and
    /// the ledger's balance limit as last received.
    fn flow_limits(&self) -> FlowLimits {
        let topup = self.with_journal(|j| j.topup_limits()).ok().flatten();
        FlowLimits {
            offline: OfflineLimits {
                max_order: self.config.offline_max_order,
                max_card_exposure: self.config.offline_max_card_exposure,
                unknown_card: self.config.offline_unknown_card_limit,
            },
            balance_max: topup.map(|l| l.balance_max_cents),
        }
    }

    /// Refunds the last approved operation: a void with its own key, pointing to it,
    /// journaled and replayed like any operation.
    fn void_last(&mut self) -> Event {
        let Some(staff) = self.staff.clone() else {
            return error_event(ErrorCode::NotLoggedIn, "log in first");
        };
        let Some(last) = self.last_approved.clone() else {
            return error_event(
                ErrorCode::NothingToVoid,
                "no approved operation to void in this session",
            );
        };
        let Ok(refund) = last.effect.checked_neg() else {
            return error_event(ErrorCode::InvalidCommand, "the amount is out of range");
        };
        let effect = Some((last.card.clone(), refund));
        let appended = self.with_journal(|j| {
            append_void(
                j,
                last.client_request_id,
                &staff,
                VoidReason::CustomerRefund,
                effect,
            )
        });
        match appended {
            Ok(crid) => {
                self.last_approved = None;
                Event::Decision(Decision {
                    client_request_id: Some(crid),
                    operation: "void",
                    card_uid: last.card,
                    status: "approved_offline",
                    reason: None,
                    total_cents: refund,
                    balance_cents: None,
                    target_client_request_id: Some(last.client_request_id),
                })
            }
            Err(e) => error_event(ErrorCode::JournalUnavailable, e.to_string()),
        }
    }
}

/// Writes the journal's unacknowledged operations, then its pending shift close-outs, as a
/// file `cashless ledger import` applies, for a terminal that never comes back online.
/// In-doubt attempts are left out: their voids are in the file (recovery adds any that are
/// missing first). Returns how many operations and close-outs it wrote.
pub fn export(
    journal_path: &std::path::Path,
    terminal: &str,
    out: &std::path::Path,
) -> anyhow::Result<(usize, usize)> {
    use std::io::Write;
    let mut j = Journal::open(journal_path)
        .map_err(|e| anyhow::anyhow!("cannot open the journal {}: {e}", journal_path.display()))?;
    recover(&mut j)?;
    // Read first, so that too many of them fail the export before anything is written.
    // A terminal closes a few shifts a day: more than the bound means something else is
    // wrong, and the export says so rather than leave some out.
    use crate::protocol::export::EXPORT_CLOSEOUTS_MAX;
    let closeouts = j.pending_closeouts(EXPORT_CLOSEOUTS_MAX + 1)?;
    if closeouts.len() > EXPORT_CLOSEOUTS_MAX {
        anyhow::bail!(
            "the journal holds more than {EXPORT_CLOSEOUTS_MAX} shift close-outs the ledger has \
             not recorded; nothing exported"
        );
    }
    // Written next to the target and renamed, so a half-written export never exists; and
    // streamed page by page, so a terminal with a long backlog does not hold it in memory.
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let head = json!({
        "format": crate::protocol::export::EXPORT_FORMAT,
        "version": crate::protocol::export::EXPORT_VERSION,
        "terminal": terminal,
        "exported_at": format_time(Utc::now()),
    })
    .to_string();
    // `{...}` without its closing brace, then the operations, then the close-outs, last.
    w.write_all(head.trim_end_matches('}').as_bytes())?;
    w.write_all(b",\"operations\":[")?;
    let mut count = 0usize;
    let mut after = None;
    loop {
        let page = j.unacknowledged(after, super::journal::LIST_LIMIT_MAX)?;
        let Some(last) = page.last() else { break };
        after = Some(last.terminal_seq);
        for e in page
            .iter()
            .filter(|e| matches!(e.state, EntryState::Pending | EntryState::Rejected))
        {
            let mut body = e.request()?;
            if let Some(map) = body.as_object_mut() {
                map.insert(
                    "type".into(),
                    Value::String(e.operation.as_str().to_owned()),
                );
            }
            if count > 0 {
                w.write_all(b",")?;
            }
            serde_json::to_writer(&mut w, &body)?;
            count += 1;
        }
    }
    w.write_all(b"],\"closeouts\":")?;
    let closeouts: Vec<_> = closeouts.into_iter().map(|c| c.closeout).collect();
    serde_json::to_writer(&mut w, &closeouts)?;
    w.write_all(b"}\n")?;
    let file = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    file.sync_all()?;
    std::fs::rename(&tmp, out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    Ok((count, closeouts.len()))
}

/// Refreshes the caches and replays the journal, forever; reports through `events`.
async fn sync_loop(
    journal: SharedJournal,
    client: LedgerClient,
    online: Arc<AtomicBool>,
    tap_in_flight: Arc<AtomicBool>,
    config: TerminalConfig,
    events: mpsc::Sender<Event>,
) {
    let backoff = Backoff {
        base_ms: config.sync_backoff_base_ms,
        cap_ms: config.sync_backoff_cap_ms,
    };
    let mut failures: u32 = 0;
    loop {
        let round = sync_round(&journal, &client, &config, &tap_in_flight).await;
        let delay_ms = match round {
            Ok(Round {
                settled: synced,
                more,
            }) => {
                failures = 0;
                online.store(true, Ordering::Relaxed);
                if synced > 0 {
                    let pending = journal
                        .lock()
                        .ok()
                        .and_then(|j| j.status_counts().ok())
                        .map(|c| c.pending);
                    let _ = events.try_send(Event::Synced {
                        count: synced,
                        pending,
                    });
                }
                // A backlog left after a full round: go on at once (the feeds had their turn).
                if more { 0 } else { config.sync_interval_ms }
            }
            Err(e) => {
                tracing::warn!(error = %e, "sync round failed");
                online.store(false, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                let jitter = rand::random_range(0..=1000);
                backoff.delay_ms(failures - 1, jitter).max(100)
            }
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
}

/// One round: replay until nothing is pending (bounded), then the feeds. Returns entries settled.
async fn sync_round(
    journal: &SharedJournal,
    client: &LedgerClient,
    config: &TerminalConfig,
    tap_in_flight: &AtomicBool,
) -> Result<Round, anyhow::Error> {
    heal_journal(journal, config, tap_in_flight)?;
    // Who the ledger says this token is: checked before anything is replayed, so that a
    // terminal configured as the wrong kind or name never sends its journal.
    let me = client.me().await?;
    if me.kind != config.kind.as_str() || me.name != config.name {
        return Err(RegistrationMismatch {
            configured: format!("{} ({})", config.name, config.kind.as_str()),
            registered: format!("{} ({})", me.name, me.kind),
        }
        .into());
    }
    let mut settled = 0;
    let mut more = true;
    for _ in 0..ROUND_BATCHES_MAX {
        let report = replay_round(journal, client, config.sync_batch_max, Utc::now).await?;
        settled += report.acknowledged + report.rejected;
        if report.sent < config.sync_batch_max || report.retry > 0 {
            more = false;
            break;
        }
    }
    pull_card_feed(journal, client, Utc::now).await?;
    let etag = journal
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .catalog_etag()?;
    if let Some((body, etag)) = client.catalog(etag.as_deref()).await? {
        let catalog: Catalog = serde_json::from_value(body)?;
        journal
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .replace_catalog(&catalog, Some(&etag), Utc::now())?;
    }
    let staff = client.staff().await?;
    let mut staff: Vec<CachedStaff> = serde_json::from_value(staff["staff"].clone())?;
    staff.sort_by(|a, b| a.staff_id.cmp(&b.staff_id));
    let limits = me.limits;
    // Written only when changed: each write is an fsync, and a tap waits for the journal
    // while one runs.
    let scans = {
        let mut j = journal.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
        if j.staff()? != staff {
            j.replace_staff(&staff, Utc::now())?;
        }
        if let Some(limits) = limits
            && j.topup_limits()? != Some(limits)
        {
            j.set_topup_limits(limits, Utc::now())?;
        }
        j.unuploaded_scans(SCANS_PER_ROUND_MAX)?
    };
    upload_scans(journal, client, scans).await?;
    send_closeouts(journal, client).await?;
    Ok(Round { settled, more })
}

/// What a sync round did.
struct Round {
    /// Entries settled (acknowledged or rejected).
    settled: usize,
    /// The round stopped at its batch limit with entries still pending.
    more: bool,
}

/// Repairs what a journal failure left behind while the daemon runs, before each sync round:
/// a journal opened read-only (its mount was read-only) is opened again once it can be
/// written, and an online attempt left `sending` by a tap whose answer could not be
/// recorded is voided (as a restart would), unless a tap is running right now.
fn heal_journal(
    journal: &SharedJournal,
    config: &TerminalConfig,
    tap_in_flight: &AtomicBool,
) -> anyhow::Result<()> {
    let mut j = journal.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
    // A cheap probe first: reopening closes the journal, which is only worth it once the
    // file can be written again.
    if j.is_read_only()
        && std::fs::OpenOptions::new()
            .append(true)
            .open(&config.journal)
            .is_ok()
    {
        match j.reopen(&config.journal) {
            Ok(()) if !j.is_read_only() => {
                tracing::info!(journal = %config.journal.display(), "the journal is writable again");
            }
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "cannot open the journal again"),
        }
    }
    // Checked under the journal lock: a tap sets the flag before its first journal write.
    if !tap_in_flight.load(Ordering::SeqCst) && j.has_sending()? {
        let voided = recover(&mut j)?;
        tracing::warn!(
            voided,
            "online attempts whose answer was never recorded voided"
        );
    }
    Ok(())
}

/// Uploads scans to the ledger's `nfc_scan_log` and marks them uploaded (the ledger ignores
/// a scan it already has, so a lost answer only means a resend).
async fn upload_scans(
    journal: &SharedJournal,
    client: &LedgerClient,
    scans: Vec<super::journal::LoggedScan>,
) -> anyhow::Result<()> {
    if scans.is_empty() {
        return Ok(());
    }
    let bodies = scans
        .iter()
        .map(|s| serde_json::to_value(&s.scan))
        .collect::<Result<Vec<_>, _>>()?;
    let answer = client.upload_scans(&bodies).await?;
    if answer.status != 200 {
        anyhow::bail!(
            "the ledger refused the scan log: {} {}",
            answer.status,
            answer.body
        );
    }
    let ids: Vec<i64> = scans.iter().map(|s| s.id).collect();
    journal
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .mark_scans_uploaded(&ids)?;
    Ok(())
}

/// Close-outs sent per sync round, at most.
const CLOSEOUTS_PER_ROUND_MAX: usize = 16;

/// Sends the close-outs the ledger has not recorded (each with its own idempotency key, so a
/// lost answer only means a resend), and records its final answers.
///
/// A close-out the ledger did not take now (no answer, 5xx, 409, 401, 404, ...) is logged and
/// stays pending for the next round: it never fails the round, since a failed round takes
/// the terminal offline and every tap would then be decided offline for a close-out's sake.
/// The rest of the round's close-outs wait too (the next would most likely fail the same
/// way, each after a timeout). Only journal failures are errors.
async fn send_closeouts(journal: &SharedJournal, client: &LedgerClient) -> anyhow::Result<()> {
    let pending = journal
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .pending_closeouts(CLOSEOUTS_PER_ROUND_MAX)?;
    for closed in pending {
        let crid = closed.closeout.client_request_id;
        let (state, answer) = match client.post_shift(&closed.closeout).await {
            Ok(ShiftAnswer::Recorded { shift, .. }) => (
                CloseoutState::Recorded,
                (201, serde_json::to_string(&shift)?),
            ),
            Ok(ShiftAnswer::Rejected(a)) => {
                tracing::error!(client_request_id = %crid, status = a.status, body = %a.body,
                    "the ledger refused a shift close-out");
                (CloseoutState::Rejected, (a.status, a.body.to_string()))
            }
            Ok(ShiftAnswer::Retry(a)) => {
                tracing::warn!(client_request_id = %crid, status = a.status, body = %a.body,
                    "the ledger could not record a shift close-out now; sent again next round");
                break;
            }
            Err(e) => {
                tracing::warn!(client_request_id = %crid, error = %e,
                    "a shift close-out got no answer; sent again next round");
                break;
            }
        };
        journal
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .settle_closeout(crid, state, answer.0, &answer.1)?;
    }
    Ok(())
}

/// The ledger registered this terminal's token under another name or kind than its
/// configuration says: selling would only produce operations the ledger refuses.
#[derive(Debug, thiserror::Error)]
#[error(
    "the configuration says this terminal is {configured}, but the ledger registered its token as \
     {registered}: fix [terminal] name and kind, or the token"
)]
pub struct RegistrationMismatch {
    configured: String,
    registered: String,
}

/// Batches replayed per round at most, before the feeds get their turn.
pub const ROUND_BATCHES_MAX: usize = 20;

/// The reader layer as the main loop sees it: what it reports, and where feedback goes.
pub struct ReaderLink {
    /// Events from the reader thread.
    pub events: mpsc::Receiver<ReaderEvent>,
    /// Asks the reader for LED and buzzer feedback; must not block.
    pub feedback: FeedbackFn,
}

/// Gives feedback on the named reader.
pub type FeedbackFn = Box<dyn Fn(&str, Feedback) + Send>;

/// The next reader event; never, once the reader is gone (or with no reader at all).
async fn next_reader_event(link: &mut Option<ReaderLink>) -> ReaderEvent {
    if let Some(l) = link {
        if let Some(event) = l.events.recv().await {
            return event;
        }
        tracing::error!("the reader layer stopped");
        *link = None;
    }
    std::future::pending().await
}

/// Runs the daemon on the JSON-lines interface until `quit`, end of input, or `shutdown`.
/// With `reader`, cards come from it (PC/SC); without, from `tap` commands.
pub async fn run_jsonl<R, W>(
    daemon: Daemon,
    input: R,
    output: W,
    shutdown: impl std::future::Future<Output = ()>,
    reader: Option<ReaderLink>,
) -> anyhow::Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut front = JsonlFrontend::new(input, output);
    run(daemon, &mut front, shutdown, reader).await.map(|_| ())
}

/// Runs the daemon with front end `front` until it leaves, `quit`, or `shutdown`; says why
/// it stopped. With `reader`, cards come from it (PC/SC); without, from `tap` commands.
pub async fn run<F: Front>(
    mut daemon: Daemon,
    front: &mut F,
    shutdown: impl std::future::Future<Output = ()>,
    mut reader: Option<ReaderLink>,
) -> anyhow::Result<Leave> {
    // Pinned before the first round, so that a signal during it is heard too.
    let mut shutdown = std::pin::pin!(shutdown);
    // What the journal's caches already know (name, menu, staff) is shown while starting.
    if front.wants_description() {
        front.describe(daemon.info());
    }
    front.starting().await?;
    // A first round before `ready`, so that a terminal with network starts with fresh
    // caches; the background task starts after it, so two rounds never run at once. It may
    // take long (a backlog to replay, a slow ledger): a signal drops it at its next await (a
    // journal call already on the blocking pool finishes, as one transaction; an unanswered
    // batch stays pending and is sent again).
    let first = tokio::select! {
        // The signal first: polled (its handler installed) before the round sends anything.
        biased;
        () = &mut shutdown => {
            close_journal(&daemon.journal).await;
            return Ok(Leave::Signal);
        }
        round = sync_round(
            &daemon.journal,
            &daemon.sync_client,
            &daemon.config,
            &daemon.tap_in_flight,
        ) => round,
    };
    if let Err(e) = first {
        if e.is::<RegistrationMismatch>() {
            return Err(e);
        }
        tracing::warn!(error = %e, "first sync failed; starting offline");
        daemon.online.store(false, Ordering::Relaxed);
    }
    let (events_tx, mut events_rx) = mpsc::channel::<Event>(SYNC_EVENTS_MAX);
    let mut sync = tokio::spawn(sync_loop(
        Arc::clone(&daemon.journal),
        daemon.sync_client.clone(),
        Arc::clone(&daemon.online),
        Arc::clone(&daemon.tap_in_flight),
        daemon.config.clone(),
        events_tx,
    ));
    let ready = Event::Ready {
        terminal: daemon.config.name.clone(),
        kind: daemon.config.kind.as_str(),
        online: daemon.online.load(Ordering::Relaxed),
    };
    if front.wants_description() {
        front.describe(daemon.info());
    }
    front.show(&ready).await?;
    let mut status_tick = front.status_every().map(|every| {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut last_status: Option<Event> = None;
    let mut sync_ended = false;
    // Every way out of the loop, errors included, goes through the cleanup below.
    let outcome: anyhow::Result<Leave> = async {
    Ok(loop {
        tokio::select! {
            // Polled in this order, not at random: staff's input first, so that a Cancel (Esc,
            // or the front end's timeout) ready at the same time as a card disarms before the
            // card is read, and the card never pays for an order staff just cancelled; then
            // the reader, before the sync task's reports and the status line, which can wait.
            // A front end is ready only with input, so the others are not starved.
            biased;
            input = front.next_input() => {
                let command = match input? {
                    Input::Command(command) => command,
                    Input::Refused(event) => { front.show(&event).await?; continue; }
                    Input::Leave(leave) => break leave,
                };
                let (events, stop) = daemon.handle(command).await;
                for event in &events {
                    front.show(event).await?;
                }
                if stop { break Leave::Quit; }
            }
            event = next_reader_event(&mut reader) => {
                let name = match &event {
                    ReaderEvent::Card { reader, .. } | ReaderEvent::Failed { reader, .. } => reader.clone(),
                    _ => String::new(),
                };
                // The card is shown as soon as it is read, before the ledger is asked.
                if let ReaderEvent::Card { uid, reader: r, card_type, repeat: false, .. } = &event {
                    front.show(&card_event(uid, r, Some(*card_type))).await?;
                }
                let (events, feedback) = daemon.on_reader(event).await;
                // Feedback first: the light should not wait for the screen.
                if let (Some(feedback), Some(link)) = (feedback, &reader) {
                    (link.feedback)(&name, feedback);
                }
                for event in &events {
                    front.show(event).await?;
                }
            }
            Some(event) = events_rx.recv() => {
                if front.wants_description() {
                    front.describe(daemon.info());
                }
                front.show(&event).await?;
            }
            _ = next_tick(&mut status_tick) => {
                let status = daemon.status_event();
                if last_status.as_ref() != Some(&status) {
                    // The caches may have changed with the last round that reached the ledger.
                    let synced_again = match (&last_status, &status) {
                        (Some(Event::Status(a)), Event::Status(b)) => a.last_sync_at != b.last_sync_at,
                        _ => true,
                    };
                    if synced_again && front.wants_description() {
                        front.describe(daemon.info());
                    }
                    front.show(&status).await?;
                    last_status = Some(status);
                }
            }
            () = &mut shutdown => break Leave::Signal,
            // The sync task never ends by itself: if it did (a panic), nothing would reach
            // the ledger any more. Stop, so that the service manager starts a whole terminal.
            joined = &mut sync, if !sync_ended => {
                sync_ended = true;
                return Err(anyhow::anyhow!("the sync task stopped: {joined:?}"));
            }
        }
    })
    }
    .await;
    if !sync_ended {
        sync.abort();
        // Wait until the sync task is gone before the journal is closed.
        let _ = sync.await;
    }
    close_journal(&daemon.journal).await;
    outcome
}

/// Waits until no one else holds the journal (journal calls a sync round started on the
/// blocking pool finish after the round is dropped; bounded: they are single transactions),
/// then checkpoints it, so that dropping the daemon closes it cleanly.
async fn close_journal(journal: &SharedJournal) {
    for _ in 0..SHUTDOWN_JOURNAL_WAITS_MAX {
        if Arc::strong_count(journal) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The journal is consistent after every call; closing it is all that is left.
    if let Ok(j) = journal.lock() {
        let _ = j.checkpoint();
    }
}

/// The next tick of `tick`; never, without one.
async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
