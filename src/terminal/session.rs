//! What staff do at the terminal, one command at a time: log in and out, arm an order (with
//! its deposits), a top-up (checked against the catalog and the ledger's top-up limits), a
//! deposit return or a balance, present
//! a card, void the last approved operation, read the status and the shift, close the shift.
//!
//! A tap on an armed order or top-up runs the tap flow ([`super::core::tap`], performed by
//! [`super::tap`]): journal first, then the ledger, then the offline policy; an approval is
//! shown only once it is on disk. The main loop ([`super::daemon::run`]) calls the session
//! for each input and shows what it returns; the session's journal calls run on the loop's
//! task, one at a time, each a single statement or transaction.

use super::client::LedgerClient;
use super::config::{CardMode, ReaderBackend, TerminalConfig};
use super::core::deposits::order_deposits;
use super::core::login::LoginGuard;
use super::core::policy::OfflineLimits;
use super::core::tap::{FlowLimits, Outcome, TapFlow};
use super::frontend::TerminalInfo;
use super::journal::{Journal, JournalError};
use super::metrics::{ReaderGauge, TerminalProbe};
use super::sync::SharedJournal;
use super::tap::{self, Payment, PaymentKind, Tap, append_void};
use crate::domain::{AgeFlag, CardUid, Cents, ClientRequestId, ProductId, StaffId, TerminalSeq};
use crate::protocol::api::{
    ORDER_ITEMS_MAX, OrderItem, PaymentMethod, QUANTITY_MAX, RECHARGE_AMOUNT_CENTS_MAX,
    RETURN_AMOUNT_CENTS_MAX, RETURN_ITEMS_MAX, ReturnItem, SHIFT_TOTAL_CENTS_MAX, Scan, StaffRole,
    TerminalKind, VOUCHER_GRANT_UNITS_MAX, VoidReason, format_time,
};
use crate::protocol::codes::ErrorCode;
use crate::protocol::commands::{Command, CommandItem, ReturnCommandItem};
use crate::protocol::events::{Decision, Event, Status};
use crate::reader::ReaderEvent;
use crate::reader::card_auth;
use crate::reader::core::{CardType, Feedback, ReadError};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The `card` event of a presentation.
pub fn card_event(
    uid: &CardUid,
    reader: &str,
    card_type: Option<CardType>,
    key_version: Option<u8>,
) -> Event {
    Event::Card {
        uid: uid.clone(),
        reader: reader.to_owned(),
        card_type: card_type.map(CardType::as_str),
        key_version,
    }
}

/// The reader name of cards presented with the `tap` command.
pub const SIMULATED_READER: &str = "simulated";
/// Characters of a reader name kept in the scan log.
const SCAN_READER_CHARS_MAX: usize = 128;

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

/// Why a command did nothing: shown instead of what it would have done.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// An `error` event.
    Error(ErrorCode, String),
    /// A `login` event that says no, and why.
    Login(String),
}

impl Refusal {
    fn event(self) -> Event {
        match self {
            Refusal::Error(code, message) => Event::error(code, message),
            Refusal::Login(message) => Event::Login {
                ok: false,
                staff_id: None,
                name: None,
                role: None,
                message: Some(message),
            },
        }
    }
}

/// What a command shows: its event, or why it did nothing.
type Answer = Result<Event, Refusal>;

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal::Error(code, message.into())
}

/// Refuses `value` of the command's `field` unless it is `low` to `high`.
fn within(field: &str, value: i64, low: i64, high: i64) -> Result<(), Refusal> {
    if (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(refuse(
            ErrorCode::InvalidCommand,
            format!("{field} is {low} to {high}"),
        ))
    }
}

fn journal_unavailable(e: JournalError) -> Refusal {
    refuse(ErrorCode::JournalUnavailable, e.to_string())
}

/// The state between commands: who is logged in, what is armed, what may be voided.
pub struct Session {
    config: TerminalConfig,
    journal: SharedJournal,
    /// For online decisions: its own connection pool, so a tap never waits behind a
    /// replay batch or a feed page on the sync task's connections.
    client: LedgerClient,
    /// Whether the ledger is reachable, as the sync task and the last tap found it.
    online: Arc<AtomicBool>,
    /// True while a tap runs (see [`super::sync::SyncTask`]).
    tap_in_flight: Arc<AtomicBool>,
    staff: Option<StaffId>,
    armed: Option<Armed>,
    /// The last approved operation of this session, which `void_last` refunds.
    last_approved: Option<LastApproved>,
    guard: LoginGuard,
    started: Instant,
    /// The reader in use (its name), or `simulated`, `waiting`, `disconnected`.
    reader_state: String,
    /// The reader's state for the metrics.
    reader_gauge: ReaderGauge,
}

impl Session {
    /// A session with nobody logged in, over `journal`, asking the ledger through `client`;
    /// `online`, `tap_in_flight` and the reader's state are shared with the sync task.
    pub fn new(
        config: TerminalConfig,
        journal: SharedJournal,
        client: LedgerClient,
        online: Arc<AtomicBool>,
        tap_in_flight: Arc<AtomicBool>,
        reader_gauge: ReaderGauge,
    ) -> Session {
        let reader_state = match config.reader_backend {
            ReaderBackend::Simulated => SIMULATED_READER.to_owned(),
            ReaderBackend::Pcsc => "waiting".to_owned(),
        };
        reader_gauge.set(match config.reader_backend {
            ReaderBackend::Simulated => "simulated",
            ReaderBackend::Pcsc => "waiting",
        });
        Session {
            config,
            journal,
            client,
            online,
            tap_in_flight,
            staff: None,
            armed: None,
            last_approved: None,
            guard: LoginGuard::default(),
            started: Instant::now(),
            reader_state,
            reader_gauge,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &TerminalConfig {
        &self.config
    }

    /// What the metrics server reads (`[metrics] listen`).
    pub fn metrics_probe(&self) -> TerminalProbe {
        TerminalProbe {
            journal: Arc::clone(&self.journal),
            journal_path: self.config.journal.clone(),
            online: Arc::clone(&self.online),
            reader: self.reader_gauge.clone(),
        }
    }

    /// The journal it works on.
    pub fn journal(&self) -> &SharedJournal {
        &self.journal
    }

    /// One journal call, on the caller's task (each is one statement or one transaction).
    fn with_journal<T>(
        &self,
        f: impl FnOnce(&mut Journal) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut j = self
            .journal
            .lock()
            .map_err(|e| JournalError::Invalid(e.to_string()))?;
        f(&mut j)
    }

    /// One journal call; a failure refuses the command with `JOURNAL_UNAVAILABLE`.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut Journal) -> Result<T, JournalError>,
    ) -> Result<T, Refusal> {
        self.with_journal(f).map_err(journal_unavailable)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The `ready` event, shown once the first sync round is over.
    pub fn ready_event(&self) -> Event {
        Event::Ready {
            terminal: self.config.name.clone(),
            kind: self.config.kind.as_str(),
            online: self.online.load(Ordering::Relaxed),
        }
    }

    /// The `status` event. A front end may ask for it every second, and taps wait for the
    /// journal while it is read: [`Journal::status_counts`] reads no synced entry.
    pub fn status_event(&self) -> Event {
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
            Err(e) => journal_unavailable(e).event(),
        }
    }

    /// Who this terminal is and what it sells, from the journal's caches (empty lists when
    /// the journal cannot be read: the front end then shows what it had).
    pub fn info(&self) -> TerminalInfo {
        let (point_of_sale, menu) = match self.with_journal(|j| j.catalog()) {
            Ok(Some((catalog, _))) => (catalog.point_of_sale, catalog.products),
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
                vec![Event::error(ErrorCode::InvalidCommand, e.to_string())],
                false,
            ),
        }
    }

    /// Handles one command; returns the events for the front end and whether to stop.
    pub async fn handle(&mut self, command: Command) -> (Vec<Event>, bool) {
        let answer = match command {
            Command::Quit {} => return (vec![], true),
            Command::Tap { .. } if self.config.reader_backend == ReaderBackend::Pcsc => {
                Err(refuse(
                    ErrorCode::InvalidCommand,
                    "cards come from the PC/SC reader; tap is for --reader simulated",
                ))
            }
            Command::Tap { uid } => match CardUid::parse(&uid) {
                Ok(uid) => return (self.present(uid, SIMULATED_READER, None).await, false),
                Err(e) => Err(refuse(ErrorCode::InvalidUid, e.to_string())),
            },
            Command::Status {} => Ok(self.status_event()),
            Command::Cancel {} => {
                self.armed = None;
                Ok(Event::Cancelled)
            }
            Command::Login { staff_id, pin } => self.login(&staff_id, &pin),
            Command::Logout {} => {
                self.staff = None;
                self.armed = None;
                self.last_approved = None;
                Ok(Event::LoggedOut)
            }
            Command::Order { items } => self.arm_order(&items),
            Command::Return { items } => self.arm_return(&items),
            Command::GrantVouchers { units } => self.arm_voucher_grant(units),
            Command::Topup {
                amount_cents,
                payment_method,
                age_flag,
            } => self.arm_topup(amount_cents, payment_method, age_flag),
            Command::VoidLast {} => self.void_last(),
            Command::Shift {} => self.shift(),
            Command::CloseShift { counted_cash_cents } => self.close_shift(counted_cash_cents),
            Command::Balance {} => {
                self.armed = Some(Armed::Balance);
                Ok(Event::Armed {
                    operation: "balance",
                    total_cents: None,
                    amount_cents: None,
                    units: None,
                })
            }
        };
        (vec![answer.unwrap_or_else(Refusal::event)], false)
    }

    /// Who is logged in; refused when nobody is.
    fn logged_in(&self) -> Result<StaffId, Refusal> {
        self.staff
            .clone()
            .ok_or_else(|| refuse(ErrorCode::NotLoggedIn, "log in first"))
    }

    /// Refuses with `refusal` unless this terminal is a `kind`.
    fn only_at(&self, kind: TerminalKind, refusal: &str) -> Result<(), Refusal> {
        self.only_at_any(&[kind], refusal)
    }

    /// Refuses with `refusal` unless this terminal is one of `kinds`.
    fn only_at_any(&self, kinds: &[TerminalKind], refusal: &str) -> Result<(), Refusal> {
        if kinds.contains(&self.config.kind) {
            Ok(())
        } else {
            Err(refuse(ErrorCode::WrongTerminalKind, refusal))
        }
    }

    fn login(&mut self, staff_id: &str, pin: &str) -> Answer {
        let Ok(id) = StaffId::parse(staff_id) else {
            return Err(Refusal::Login("unknown staff id".into()));
        };
        let now = self.now_ms();
        if let Err(locked) = self.guard.check(&id, now) {
            let seconds = locked.until_ms.saturating_sub(now).div_ceil(1000);
            return Err(Refusal::Login(format!(
                "too many wrong PINs; try again in {seconds} s"
            )));
        }
        let member = self.read(|j| j.staff_member(&id))?;
        let Some(member) = member.filter(|m| m.active) else {
            return Err(Refusal::Login("unknown staff id".into()));
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
            return Err(Refusal::Login(format!("wrong PIN; locked for {seconds} s")));
        }
        if !matched {
            return Err(Refusal::Login("wrong PIN".into()));
        }
        // A new login starts afresh: what the previous staff member armed is not paid in
        // their name, and their last operation is not voided by someone else.
        self.staff = Some(id.clone());
        self.armed = None;
        self.last_approved = None;
        Ok(Event::Login {
            ok: true,
            staff_id: Some(id.as_str().to_owned()),
            name: Some(member.name),
            role: Some(member.role.as_str()),
            message: None,
        })
    }

    fn arm_order(&mut self, items: &[CommandItem]) -> Answer {
        let staff = self.logged_in()?;
        self.only_at(TerminalKind::Bar, "only a bar terminal sells")?;
        if items.is_empty() || items.len() > ORDER_ITEMS_MAX {
            return Err(refuse(
                ErrorCode::InvalidCommand,
                format!("an order has 1 to {ORDER_ITEMS_MAX} lines"),
            ));
        }
        let Some((catalog, _)) = self.read(|j| j.catalog())? else {
            return Err(refuse(
                ErrorCode::NoCatalog,
                "the catalog has not been received from the ledger yet",
            ));
        };
        let mut lines = Vec::with_capacity(items.len());
        let mut voucher_prices = Vec::with_capacity(items.len());
        let mut total = Cents::ZERO;
        let mut min_age = None;
        for item in items {
            within("quantity", item.quantity, 1, QUANTITY_MAX)?;
            let Some(product) = ProductId::parse(&item.product_id)
                .ok()
                .and_then(|id| catalog.products.iter().find(|p| p.product_id == id))
            else {
                return Err(refuse(
                    ErrorCode::UnknownProduct,
                    format!("{} is not on the menu", item.product_id),
                ));
            };
            let unit_price = match (product.open_price_max_cents, item.unit_price_cents) {
                (None, None) => product.price_cents,
                (None, Some(_)) => {
                    return Err(refuse(
                        ErrorCode::InvalidCommand,
                        format!(
                            "{} has a fixed price: its line takes no unit_price_cents",
                            product.product_id
                        ),
                    ));
                }
                (Some(max), typed) => {
                    let Some(typed) = typed.filter(|p| (1..=max.get()).contains(p)) else {
                        return Err(refuse(
                            ErrorCode::InvalidCommand,
                            format!(
                                "{} has an open price: its line needs unit_price_cents of 1 to {}",
                                product.product_id,
                                max.get()
                            ),
                        ));
                    };
                    Cents::new(typed)
                }
            };
            min_age = min_age.max(product.min_age);
            voucher_prices.push(product.voucher_price);
            let Ok(line_total) = unit_price
                .checked_mul(item.quantity)
                .and_then(|l| total.checked_add(l))
            else {
                return Err(refuse(
                    ErrorCode::InvalidCommand,
                    "the total is out of range",
                ));
            };
            total = line_total;
            lines.push(OrderItem {
                product_id: product.product_id.clone(),
                quantity: item.quantity,
                unit_price_cents: unit_price,
            });
        }
        // Each unit of a product that comes in a returnable item adds that item's deposit,
        // one line per item after the order's own lines.
        let deposits = order_deposits(&lines, |id| {
            let item = catalog
                .products
                .iter()
                .find(|p| &p.product_id == id)?
                .deposit_product_id
                .as_ref()?;
            // A deposit whose item is not on the menu (or no longer returnable) adds
            // nothing: the ledger's catalog refuses such a product, an old cache may not.
            let item = catalog
                .products
                .iter()
                .find(|p| &p.product_id == item && p.returnable)?;
            Some((item.product_id.clone(), item.price_cents))
        });
        if lines.len() + deposits.len() > ORDER_ITEMS_MAX {
            return Err(refuse(
                ErrorCode::InvalidCommand,
                format!("an order has 1 to {ORDER_ITEMS_MAX} lines, its deposits included"),
            ));
        }
        for deposit in deposits {
            within("quantity", deposit.quantity, 1, QUANTITY_MAX)?;
            let Ok(with_deposit) = deposit
                .unit_price_cents
                .checked_mul(deposit.quantity)
                .and_then(|l| total.checked_add(l))
            else {
                return Err(refuse(
                    ErrorCode::InvalidCommand,
                    "the total is out of range",
                ));
            };
            total = with_deposit;
            voucher_prices.push(None);
            lines.push(deposit);
        }
        if total < Cents::new(1) {
            return Err(refuse(
                ErrorCode::InvalidCommand,
                "an order costs at least one cent",
            ));
        }
        self.armed = Some(Armed::Pay(Payment {
            staff,
            kind: PaymentKind::Order {
                items: lines,
                total,
                min_age,
                voucher_prices,
            },
        }));
        Ok(Event::Armed {
            operation: "order",
            total_cents: Some(total),
            amount_cents: None,
            units: None,
        })
    }

    fn arm_return(&mut self, items: &[ReturnCommandItem]) -> Answer {
        let staff = self.logged_in()?;
        self.only_at_any(
            &[TerminalKind::Bar, TerminalKind::Return],
            "a checkpoint terminal does not take returnable items back",
        )?;
        if items.is_empty() || items.len() > RETURN_ITEMS_MAX {
            return Err(refuse(
                ErrorCode::InvalidCommand,
                format!("a return has 1 to {RETURN_ITEMS_MAX} lines"),
            ));
        }
        let Some((catalog, _)) = self.read(|j| j.catalog())? else {
            return Err(refuse(
                ErrorCode::NoCatalog,
                "the catalog has not been received from the ledger yet",
            ));
        };
        let mut lines = Vec::with_capacity(items.len());
        let mut amount = Cents::ZERO;
        for item in items {
            within("quantity", item.quantity, 1, QUANTITY_MAX)?;
            let Some(product) = ProductId::parse(&item.product_id)
                .ok()
                .and_then(|id| catalog.products.iter().find(|p| p.product_id == id))
                .filter(|p| p.returnable)
            else {
                return Err(refuse(
                    ErrorCode::UnknownProduct,
                    format!("{} is not a returnable item here", item.product_id),
                ));
            };
            let Ok(sum) = product
                .price_cents
                .checked_mul(item.quantity)
                .and_then(|l| amount.checked_add(l))
            else {
                return Err(refuse(
                    ErrorCode::InvalidCommand,
                    "the amount is out of range",
                ));
            };
            amount = sum;
            lines.push(ReturnItem {
                product_id: product.product_id.clone(),
                quantity: item.quantity,
                unit_deposit_cents: product.price_cents,
            });
        }
        within("amount_cents", amount.get(), 1, RETURN_AMOUNT_CENTS_MAX)?;
        self.armed = Some(Armed::Pay(Payment {
            staff,
            kind: PaymentKind::Return {
                items: lines,
                amount,
            },
        }));
        Ok(Event::Armed {
            operation: "return",
            total_cents: None,
            amount_cents: Some(amount),
            units: None,
        })
    }

    fn arm_voucher_grant(&mut self, units: i64) -> Answer {
        let staff = self.logged_in()?;
        self.only_at(
            TerminalKind::Checkpoint,
            "vouchers are granted at checkpoints",
        )?;
        // Free drinks are a supervisor's decision; the ledger refuses anyone else's grant.
        let role = self.read(|j| j.staff_member(&staff))?.map(|m| m.role);
        if role != Some(StaffRole::Supervisor) {
            return Err(refuse(
                ErrorCode::Forbidden,
                "only a supervisor grants vouchers",
            ));
        }
        within("units", units, 1, VOUCHER_GRANT_UNITS_MAX)?;
        self.armed = Some(Armed::Pay(Payment {
            staff,
            kind: PaymentKind::VoucherGrant { units },
        }));
        Ok(Event::Armed {
            operation: "voucher_grant",
            total_cents: None,
            amount_cents: None,
            units: Some(units),
        })
    }

    fn shift(&self) -> Answer {
        self.only_at(TerminalKind::Checkpoint, "shifts are kept at checkpoints")?;
        let s = self.read(|j| j.shift_summary())?;
        Ok(Event::Shift {
            opened_at: s.opened_at.map(format_time),
            cash_cents: s.cash,
            card_cents: s.card,
            count: s.count,
            voids: s.voids,
        })
    }

    fn close_shift(&mut self, counted_cash_cents: i64) -> Answer {
        let staff = self.logged_in()?;
        self.only_at(TerminalKind::Checkpoint, "shifts are kept at checkpoints")?;
        within(
            "counted_cash_cents",
            counted_cash_cents,
            0,
            SHIFT_TOTAL_CENTS_MAX,
        )?;
        let crid = ClientRequestId::new_random();
        let closed =
            self.read(|j| j.close_shift(crid, &staff, Cents::new(counted_cash_cents), Utc::now()))?;
        // The last top-up belongs to a closed shift now: it is not voided from here.
        self.last_approved = None;
        let c = closed.closeout;
        Ok(Event::ShiftClosed {
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
        })
    }

    fn arm_topup(
        &mut self,
        amount_cents: i64,
        method: PaymentMethod,
        age_flag: Option<AgeFlag>,
    ) -> Answer {
        let staff = self.logged_in()?;
        self.only_at(TerminalKind::Checkpoint, "a bar terminal does not top up")?;
        within("amount_cents", amount_cents, 1, RECHARGE_AMOUNT_CENTS_MAX)?;
        // The festival's per-top-up limit, as the ledger last reported it; checked here too,
        // so that an offline checkpoint does not take money the ledger would refuse.
        if let Some(limits) = self.read(|j| j.topup_limits())?
            && Cents::new(amount_cents) > limits.recharge_max_cents
        {
            return Err(refuse(
                ErrorCode::LimitExceeded,
                format!(
                    "a top-up is at most {} cents",
                    limits.recharge_max_cents.get()
                ),
            ));
        }
        self.armed = Some(Armed::Pay(Payment {
            staff,
            kind: PaymentKind::Topup {
                amount: Cents::new(amount_cents),
                method,
                age_flag,
            },
        }));
        Ok(Event::Armed {
            operation: "topup",
            total_cents: None,
            amount_cents: Some(Cents::new(amount_cents)),
            units: None,
        })
    }

    /// A card presented on `reader`: pays for what is armed, or shows its balance. The
    /// presentation goes to the scan log with what it led to.
    async fn present(
        &mut self,
        uid: CardUid,
        reader: &str,
        card_type: Option<CardType>,
    ) -> Vec<Event> {
        let card = card_event(&uid, reader, card_type, None);
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
    /// A card must have passed [`Session::refusal`] first (the caller shows it then, with
    /// [`card_event`], before the ledger is asked): its `card` event is not among these.
    pub async fn on_reader(&mut self, event: ReaderEvent) -> (Vec<Event>, Option<Feedback>) {
        match event {
            ReaderEvent::Connected { name } => {
                self.reader_state = name.clone();
                self.reader_gauge.set("connected");
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
                self.reader_gauge.set("waiting");
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
                self.reader_gauge.set("disconnected");
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
                let feedback = match error {
                    ReadError::NotGenuine { .. } => Feedback::NotGenuine,
                    _ => Feedback::Declined,
                };
                self.card_failed(
                    &reader,
                    error.uid().as_ref(),
                    error.code(),
                    error.to_string(),
                    feedback,
                )
            }
        }
    }

    /// A card read that is not a tap at all, answered without touching the ledger (`None`:
    /// go on with [`Session::on_reader`]). In AES mode: a card that proved `key_version` (or
    /// no key) but is not what the ledger recorded, as the replica last heard it, is refused
    /// as not genuine; a journal that cannot be read refuses the card too, rather than take
    /// it unchecked. UID mode checks nothing: it proves nothing either.
    pub fn refusal(
        &self,
        uid: &CardUid,
        key_version: Option<u8>,
        reader: &str,
    ) -> Option<(Vec<Event>, Option<Feedback>)> {
        if self.config.cards.mode != CardMode::Aes {
            return None;
        }
        match self.with_journal(|j| j.replica_key_version(uid)) {
            Ok(recorded) => card_auth::check_record(key_version, recorded)
                .err()
                .map(|error| {
                    self.card_failed(
                        reader,
                        Some(uid),
                        error.code(),
                        error.to_string(),
                        Feedback::NotGenuine,
                    )
                }),
            Err(e) => {
                tracing::warn!(error = %e, %uid, "the card's key version not read");
                Some((
                    vec![journal_unavailable(e).event()],
                    Some(Feedback::Declined),
                ))
            }
        }
    }

    /// A card that is no tap: nothing armed is touched (an order waits for a good card),
    /// the scan log says so when the card's UID is known, the reader signals `feedback`; a
    /// card refused as not genuine is also told to the service log.
    fn card_failed(
        &self,
        reader: &str,
        uid: Option<&CardUid>,
        code: &'static str,
        message: String,
        feedback: Feedback,
    ) -> (Vec<Event>, Option<Feedback>) {
        if let Some(uid) = uid {
            self.log_scan(uid, code, reader, None);
        }
        if feedback == Feedback::NotGenuine {
            tracing::warn!(reader, code, card_uid = ?uid.map(CardUid::as_str), %message, "card refused");
        }
        (
            vec![Event::CardError {
                reader: reader.to_owned(),
                code,
                message,
            }],
            Some(feedback),
        )
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
            Err(e) => journal_unavailable(e).event(),
        }
    }

    /// Runs the tap flow for `payment` to its verdict: journal, ledger, offline policy.
    async fn pay(&mut self, uid: CardUid, payment: Payment) -> Event {
        let (flow, first) = TapFlow::start(
            payment.movement(),
            payment.min_age(),
            payment.total(),
            self.online.load(Ordering::Relaxed),
            self.flow_limits(),
        );
        let flow = flow.with_voucher_lines(payment.voucher_lines());
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
            // The money the sale moved: an order paid partly with vouchers charged only its
            // money, and its refund gives back only that.
            let effect = self
                .with_journal(|j| j.entry_by_request_id(crid))
                .ok()
                .flatten()
                .map_or(payment.journal_kind().1, |e| e.money_effect());
            self.last_approved = Some(LastApproved {
                client_request_id: crid,
                card: uid.clone(),
                effect,
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
            vouchers_used: verdict.vouchers_used,
            vouchers_granted: payment
                .vouchers_granted()
                .filter(|_| verdict.outcome != Outcome::Declined),
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
            return_payout_max: self.config.offline_max_return_payout,
        }
    }

    /// Refunds the last approved operation: a void with its own key, pointing to it,
    /// journaled and replayed like any operation.
    fn void_last(&mut self) -> Answer {
        let staff = self.logged_in()?;
        let Some(last) = self.last_approved.clone() else {
            return Err(refuse(
                ErrorCode::NothingToVoid,
                "no approved operation to void in this session",
            ));
        };
        let Ok(refund) = last.effect.checked_neg() else {
            return Err(refuse(
                ErrorCode::InvalidCommand,
                "the amount is out of range",
            ));
        };
        let effect = Some((last.card.clone(), refund));
        let crid = self.read(|j| {
            append_void(
                j,
                last.client_request_id,
                &staff,
                VoidReason::CustomerRefund,
                effect,
            )
        })?;
        self.last_approved = None;
        Ok(Event::Decision(Decision {
            client_request_id: Some(crid),
            operation: "void",
            card_uid: last.card,
            status: "approved_offline",
            reason: None,
            total_cents: refund,
            balance_cents: None,
            target_client_request_id: Some(last.client_request_id),
            vouchers_used: None,
            vouchers_granted: None,
        }))
    }
}
