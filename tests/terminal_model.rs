//! Property test of the terminal's money rules over random sequences of events: the network
//! going down and up, answers lost after the ledger committed, timeouts before delivery,
//! requests delivered twice, server errors, lost replay answers, refunds, and crashes
//! between any two steps of a tap.
//!
//! Everything that decides is the real code: the tap flow (`core::tap`), its adapter
//! (`terminal::tap`) on a real SQLite journal, the replay and card-feed sync
//! (`terminal::sync`), crash recovery (`tap::recover`), and the real ledger store on a real
//! SQLite file. Only the network between them is simulated, behind the `Transport` seam,
//! so that faults land exactly where the test says. A crash is a tap that is never resumed
//! and a journal that is closed and opened again, as after `kill -9` (every journal write is
//! a committed transaction, so what a crash keeps is what was committed).
//!
//! Invariants checked:
//! 1. an approval is shown only for an operation that is in the journal, approved;
//! 2. once the network is back and the terminal has replayed, nothing is left pending, in
//!    doubt or rejected;
//! 3. at the ledger, every order the journal approved (and did not refund) is charged
//!    exactly once, and every other order attempt (declined, in doubt, never answered,
//!    refunded) is charged zero times;
//! 4. every card's balance is its funding minus its charges, and the ledger's audit passes;
//! 5. no order ever took a card below zero: with one terminal, the offline policy (replica
//!    balance minus this terminal's unsynced charges) never approves money the card lacks;
//! 6. vouchers (two cards hold some, and one product costs one): each card's voucher units
//!    are what it was granted less what its approved, unrefunded sales took, and never go
//!    below zero, since offline the terminal spends the replica's vouchers less its own use
//!    since; a refund gives back only the money a sale moved;
//! 7. deposit returns (cups handed back): every return the journal approved (and did not
//!    refund) is credited exactly once, every other attempt zero times, like orders; the
//!    deposit money the terminal credited offline and the ledger had not acknowledged never
//!    exceeded `[offline] max_return_payout_cents` when it was credited.
#![allow(clippy::unwrap_used)]

use cashless::domain::{CardUid, Cents, ClientRequestId, ProductId, StaffId, TerminalSeq};
use cashless::ledger::caller::Terminal;
use cashless::ledger::config::DatabaseUrl;
use cashless::ledger::rules::Limits;
use cashless::ledger::store::{
    AdminStore, FeedStore, NewStaff, NewTerminal, OperationStore, Product, ProductUpsert,
    ReportStore, Store, StoreOptions,
};
use cashless::protocol::api::{
    Mode, Operation, OrderItem, PaymentMethod, RechargeRequest, ReturnItem, StaffRole,
    TerminalKind, VoidReason,
};
use cashless::terminal::client::{Answer, ClientError, FeedCard, FeedPage, Transport};
use cashless::terminal::core::policy::OfflineLimits;
use cashless::terminal::core::tap::{FlowLimits, Outcome, Step, TapFlow};
use cashless::terminal::journal::{Decision, EntryState, Journal, OperationKind};
use cashless::terminal::sync::{SharedJournal, pull_card_feed, replay_round};
use cashless::terminal::tap::{self, Payment, PaymentKind, Tap};
use chrono::Utc;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

const CARDS: usize = 4;
/// What each card is funded with before the events: an empty card, a poor one, two rich ones.
const FUNDING_CENTS: [i64; CARDS] = [0, 500, 2_000, 20_000];
const PRICES_CENTS: [i64; 3] = [200, 450, 900];
/// Voucher units granted to each card before the events (staff drinks on the poor card and
/// on a rich one).
const VOUCHERS: [i64; CARDS] = [0, 2, 0, 1];

/// The deposit of a cup, a returnable item of the bar's catalog.
const CUP_CENTS: i64 = 150;
/// The most deposit money the terminal credits that the ledger has not acknowledged: three
/// cups, so that a few offline returns reach it.
const RETURN_PAYOUT_MAX_CENTS: i64 = 3 * CUP_CENTS;

/// The 4.50 product costs one voucher; the others are money only.
fn voucher_price(price: usize) -> Option<i64> {
    (PRICES_CENTS[price] == 450).then_some(1)
}
const BATCH_MAX: usize = 3;

/// What the simulated network does to the next online request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Delivered and answered.
    None,
    /// Delivered, applied, and the answer lost (the connection cut).
    LostAfterCommit,
    /// Never delivered; the terminal times out.
    TimeoutBeforeDelivery,
    /// Delivered twice (a retrying proxy); the second answer comes back.
    Twice,
    /// Answered 503 without being applied.
    ServerError,
}

#[derive(Debug, Clone)]
enum Event {
    /// A card pays for one product; with `crash_after_steps`, the terminal dies after that
    /// many steps of the tap flow (if the flow is still running).
    Tap {
        card: usize,
        price: usize,
        crash_after_steps: Option<usize>,
    },
    /// Cups handed back and credited to a card; crashes like a tap.
    Return {
        card: usize,
        cups: i64,
        crash_after_steps: Option<usize>,
    },
    /// Staff refund the last approved sale (or return) of this session.
    VoidLast,
    NetworkDown,
    NetworkUp,
    /// The next online request meets this fault.
    NextPost(Fault),
    /// The next replay batch is applied, and its answer lost.
    LoseNextBatchAnswer,
    /// One round of the sync worker: replay, then the card feed.
    Sync,
    /// `kill -9` between taps, and a restart.
    Crash,
}

fn event() -> impl Strategy<Value = Event> {
    let fault = prop_oneof![
        Just(Fault::None),
        Just(Fault::LostAfterCommit),
        Just(Fault::TimeoutBeforeDelivery),
        Just(Fault::Twice),
        Just(Fault::ServerError),
    ];
    prop_oneof![
        6 => (0..CARDS, 0..PRICES_CENTS.len(), prop::option::weighted(0.25, 0usize..8)).prop_map(
            |(card, price, crash_after_steps)| Event::Tap { card, price, crash_after_steps }
        ),
        2 => (0..CARDS, 1..=3i64, prop::option::weighted(0.25, 0usize..8)).prop_map(
            |(card, cups, crash_after_steps)| Event::Return { card, cups, crash_after_steps }
        ),
        1 => Just(Event::VoidLast),
        1 => Just(Event::NetworkDown),
        1 => Just(Event::NetworkUp),
        2 => fault.prop_map(Event::NextPost),
        1 => Just(Event::LoseNextBatchAnswer),
        2 => Just(Event::Sync),
        1 => Just(Event::Crash),
    ]
}

#[derive(Debug)]
struct Network {
    up: bool,
    next_post: Fault,
    lose_next_batch_answer: bool,
}

/// The ledger behind a simulated network: the real store, and faults where the test puts them.
struct SimLedger {
    store: Store,
    bar: Terminal,
    network: Mutex<Network>,
}

fn answer(outcome: &cashless::ledger::outcome::Outcome) -> Answer {
    Answer {
        status: cashless::ledger::api::outcome_status(&outcome.decided),
        body: serde_json::to_value(&outcome.decided).unwrap(),
        replayed: outcome.replayed,
        etag: None,
    }
}

impl SimLedger {
    async fn apply(&self, op: Operation) -> Answer {
        let outcomes = self
            .store
            .apply(self.bar.clone(), "model".into(), vec![op])
            .await
            .unwrap();
        answer(&outcomes[0])
    }

    fn network(&self) -> std::sync::MutexGuard<'_, Network> {
        self.network.lock().unwrap()
    }
}

impl Transport for SimLedger {
    async fn post_operation(&self, op: &Operation) -> Result<Answer, ClientError> {
        let fault = {
            let mut n = self.network();
            if !n.up {
                return Err(ClientError::Unreachable("network down".into()));
            }
            std::mem::replace(&mut n.next_post, Fault::None)
        };
        match fault {
            Fault::None => Ok(self.apply(op.clone()).await),
            Fault::LostAfterCommit => {
                self.apply(op.clone()).await;
                Err(ClientError::Broken(
                    "connection reset after the request".into(),
                ))
            }
            Fault::TimeoutBeforeDelivery => Err(ClientError::Timeout),
            Fault::Twice => {
                self.apply(op.clone()).await;
                Ok(self.apply(op.clone()).await)
            }
            Fault::ServerError => Ok(Answer {
                status: 503,
                body: json!({"error": {"code": "DATABASE_ERROR", "message": "busy"}}),
                replayed: false,
                etag: None,
            }),
        }
    }

    async fn post_batch(&self, operations: &[Value]) -> Result<Vec<Answer>, ClientError> {
        let lose = {
            let mut n = self.network();
            if !n.up {
                return Err(ClientError::Unreachable("network down".into()));
            }
            std::mem::replace(&mut n.lose_next_batch_answer, false)
        };
        let ops: Vec<Operation> = operations
            .iter()
            .map(|v| cashless::ledger::api::parse_batch_entry(&v.to_string()).unwrap())
            .collect();
        let outcomes = self
            .store
            .apply(self.bar.clone(), "model-batch".into(), ops)
            .await
            .unwrap();
        if lose {
            return Err(ClientError::Broken("batch answer lost".into()));
        }
        Ok(outcomes.iter().map(answer).collect())
    }

    async fn card_feed(&self, cursor: &str, limit: u32) -> Result<FeedPage, ClientError> {
        if !self.network().up {
            return Err(ClientError::Unreachable("network down".into()));
        }
        let since = cursor.parse().unwrap_or(0);
        let page = self.store.card_feed(since, limit).await.unwrap();
        Ok(FeedPage {
            cards: page
                .cards
                .into_iter()
                .map(|c| FeedCard {
                    card_uid: c.card_uid,
                    balance_cents: c.balance_cents,
                    status: c.status,
                    version: c.version,
                    age_flag: c.age_flag,
                    voucher_units: c.voucher_units,
                    key_version: c.key_version,
                })
                .collect(),
            next_cursor: page.next_version.to_string(),
        })
    }
}

fn card(i: usize) -> CardUid {
    CardUid::parse(&format!("04A1B2C3D4E5{i:02X}")).unwrap()
}

fn staff() -> StaffId {
    StaffId::parse("s-model").unwrap()
}

fn product(price: usize) -> ProductId {
    ProductId::parse(&format!("p{}", PRICES_CENTS[price])).unwrap()
}

/// A ledger on a new SQLite file: a bar, a checkpoint, one staff member, the products, and
/// the cards funded.
async fn ledger(dir: &Path) -> SimLedger {
    let options = StoreOptions {
        limits: Limits {
            recharge_max: Cents::new(1_000_000),
            balance_max: Cents::new(10_000_000),
        },
        retention_days: 30,
        postgres: Default::default(),
        taxes: cashless::domain::TaxRates::untaxed(),
    };
    let store = Store::open(&DatabaseUrl::Sqlite(dir.join("ledger.db")), options)
        .await
        .unwrap();
    for (name, kind) in [
        ("bar-1", TerminalKind::Bar),
        ("cp-1", TerminalKind::Checkpoint),
    ] {
        store
            .add_terminal(NewTerminal {
                name: name.into(),
                kind,
                point_of_sale: "Main Bar".into(),
                token_sha256: cashless::ledger::store::token_sha256(name),
            })
            .await
            .unwrap();
    }
    store
        .add_staff(NewStaff {
            staff_id: staff(),
            name: "Model".into(),
            role: StaffRole::Supervisor,
            pin_hash: "not-used".into(),
        })
        .await
        .unwrap();
    store
        .upsert_products(
            (0..PRICES_CENTS.len())
                .map(|p| ProductUpsert {
                    point_of_sale: "Main Bar".into(),
                    product: Product {
                        product_id: product(p),
                        name: format!("Product {p}"),
                        price_cents: Cents::new(PRICES_CENTS[p]),
                        category: None,
                        tax_rate: None,
                        min_age: None,
                        open_price_max_cents: None,
                        voucher_price: voucher_price(p),
                        returnable: false,
                        deposit_product_id: None,
                    },
                })
                .chain(std::iter::once(ProductUpsert {
                    point_of_sale: "Main Bar".into(),
                    product: Product {
                        product_id: cup(),
                        name: "Cup".into(),
                        price_cents: Cents::new(CUP_CENTS),
                        category: None,
                        tax_rate: None,
                        min_age: None,
                        open_price_max_cents: None,
                        voucher_price: None,
                        returnable: true,
                        deposit_product_id: None,
                    },
                }))
                .collect(),
        )
        .await
        .unwrap();
    for (i, units) in VOUCHERS.iter().enumerate().filter(|(_, u)| **u > 0) {
        store.grant_vouchers(card(i), *units).await.unwrap();
    }
    let checkpoint = store
        .terminal_by_name("cp-1".into())
        .await
        .unwrap()
        .unwrap();
    let fundings: Vec<Operation> = FUNDING_CENTS
        .iter()
        .enumerate()
        .filter(|(_, cents)| **cents > 0)
        .enumerate()
        .map(|(n, (i, cents))| {
            Operation::Recharge(RechargeRequest {
                client_request_id: ClientRequestId::new_random(),
                terminal_seq: TerminalSeq::new(n as i64 + 1).unwrap(),
                card_uid: card(i),
                amount_cents: Cents::new(*cents),
                payment_method: PaymentMethod::Cash,
                staff_id: staff(),
                created_at: Utc::now(),
                mode: Mode::Online,
                age_flag: None,
            })
        })
        .collect();
    for outcome in store
        .apply(checkpoint, "fund".into(), fundings)
        .await
        .unwrap()
    {
        let answer = answer(&outcome);
        assert_eq!(answer.status, 201, "{}", answer.body);
    }
    let bar = store
        .terminal_by_name("bar-1".into())
        .await
        .unwrap()
        .unwrap();
    SimLedger {
        store,
        bar,
        network: Mutex::new(Network {
            up: true,
            next_post: Fault::None,
            lose_next_batch_answer: false,
        }),
    }
}

fn limits() -> FlowLimits {
    FlowLimits {
        offline: OfflineLimits {
            max_order: Cents::new(1_000),
            max_card_exposure: Cents::new(1_500),
            unknown_card: Cents::ZERO,
        },
        balance_max: None,
        return_payout_max: Cents::new(RETURN_PAYOUT_MAX_CENTS),
    }
}

fn cup() -> ProductId {
    ProductId::parse("cup").unwrap()
}

/// A sale of one unit of product `price`.
fn order_payment(price: usize) -> Payment {
    let total = Cents::new(PRICES_CENTS[price]);
    Payment {
        staff: staff(),
        kind: PaymentKind::Order {
            items: vec![OrderItem {
                product_id: product(price),
                quantity: 1,
                unit_price_cents: total,
            }],
            total,
            min_age: None,
            voucher_prices: vec![voucher_price(price)],
        },
    }
}

/// `cups` cups handed back.
fn return_payment(cups: i64) -> Payment {
    Payment {
        staff: staff(),
        kind: PaymentKind::Return {
            items: vec![ReturnItem {
                product_id: cup(),
                quantity: cups,
                unit_deposit_cents: Cents::new(CUP_CENTS),
            }],
            amount: Cents::new(CUP_CENTS * cups),
        },
    }
}

/// The terminal's side: its journal, whether it believes it is online, and what it showed.
struct Terminal_ {
    journal: SharedJournal,
    path: std::path::PathBuf,
    online: bool,
    last_approved: Option<(ClientRequestId, CardUid, Cents)>,
    /// Every verdict shown: key (if journaled), outcome.
    shown: Vec<(Option<ClientRequestId>, Outcome)>,
    /// Orders refunded by `void_last`.
    refunded: Vec<ClientRequestId>,
}

impl Terminal_ {
    /// One sync round, as the daemon's worker runs it; the terminal is online after a round
    /// that reached the ledger.
    async fn sync(&mut self, ledger: &SimLedger) {
        let replayed = replay_round(&self.journal, ledger, BATCH_MAX, Utc::now).await;
        let pulled = match replayed {
            Ok(_) => pull_card_feed(&self.journal, ledger, Utc::now)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        self.online = pulled.is_ok();
    }

    /// `kill -9` and a restart: whatever was in flight is gone, the journal is opened again
    /// and recovered, and the first sync is tried.
    async fn crash_and_restart(&mut self, ledger: &SimLedger) {
        let reopened = Journal::open(&self.path).unwrap();
        let old = std::mem::replace(&mut *self.journal.lock().unwrap(), reopened);
        drop(old);
        tap::recover(&mut self.journal.lock().unwrap()).unwrap();
        self.last_approved = None;
        self.sync(ledger).await;
    }

    async fn tap(
        &mut self,
        ledger: &SimLedger,
        card_index: usize,
        payment: Payment,
        crash_after_steps: Option<usize>,
    ) {
        let uid = card(card_index);
        // Invariant 7's bound: what the terminal handed out unacknowledged before this tap.
        let returns_before = self
            .journal
            .lock()
            .unwrap()
            .unacknowledged_returns()
            .unwrap();
        let (flow, mut step) = TapFlow::start(
            payment.movement(),
            payment.min_age(),
            payment.total(),
            self.online,
            limits(),
        );
        let mut flow = flow.with_voucher_lines(payment.voucher_lines());
        let mut tap = Tap::new(&self.journal, &uid, &payment);
        let mut performed = 0;
        let verdict = loop {
            if let Step::Show(verdict) = step {
                break Some(verdict);
            }
            if crash_after_steps == Some(performed) {
                break None;
            }
            if step == Step::VoidAttempt {
                self.online = false;
            }
            let input = tap.perform(&step, ledger).await;
            performed += 1;
            step = flow.advance(input);
        };
        let Some(verdict) = verdict else {
            drop(tap);
            self.crash_and_restart(ledger).await;
            return;
        };
        let crid = tap.client_request_id(verdict.operation);
        // Invariant 1: an approval is shown only for an approved journal entry.
        if verdict.outcome != Outcome::Declined {
            let crid = crid.expect("an approval names its journal entry");
            let entry = self
                .journal
                .lock()
                .unwrap()
                .entry_by_request_id(crid)
                .unwrap()
                .expect("a shown approval is in the journal");
            assert!(
                entry.decision.is_some_and(Decision::is_approved),
                "{entry:?}"
            );
            // Invariant 7: an offline return stays within the payout limit.
            if entry.operation == OperationKind::Return
                && verdict.outcome == Outcome::ApprovedOffline
            {
                assert!(
                    returns_before.get() + entry.amount_cents.get() <= RETURN_PAYOUT_MAX_CENTS,
                    "{} handed out unacknowledged, then {entry:?}",
                    returns_before.get()
                );
            }
            // A refund gives back the money the sale moved (vouchers paid the rest).
            let money = Cents::ZERO.checked_sub(entry.money_effect()).unwrap();
            self.last_approved = Some((crid, uid.clone(), money));
        }
        self.shown.push((crid, verdict.outcome));
    }

    fn void_last(&mut self) {
        let Some((target, uid, total)) = self.last_approved.take() else {
            return;
        };
        let mut j = self.journal.lock().unwrap();
        tap::append_void(
            &mut j,
            target,
            &staff(),
            VoidReason::CustomerRefund,
            Some((uid, total)),
        )
        .unwrap();
        self.refunded.push(target);
    }
}

/// How many times the ledger applied an operation of `table` (an order's charge, a deposit
/// return's credit): applied, minus voided.
fn applications(ledger_db: &rusqlite::Connection, table: &str, crid: ClientRequestId) -> i64 {
    let key = crid.to_string();
    let applied: i64 = ledger_db
        .query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE client_request_id = ?1"),
            [&key],
            |r| r.get(0),
        )
        .unwrap();
    let voided: i64 = ledger_db
        .query_row(
            "SELECT COUNT(*) FROM voids WHERE target_client_request_id = ?1 AND status = 'voided'",
            [&key],
            |r| r.get(0),
        )
        .unwrap();
    applied - voided
}

async fn run(events: Vec<Event>) {
    let dir = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })
    .unwrap();
    let ledger = ledger(dir.path()).await;
    let path = dir.path().join("journal.db");
    let mut t = Terminal_ {
        journal: Arc::new(Mutex::new(Journal::open(&path).unwrap())),
        path,
        online: true,
        last_approved: None,
        shown: Vec::new(),
        refunded: Vec::new(),
    };
    t.sync(&ledger).await;
    assert!(t.online, "the first sync reaches the ledger");

    for event in events {
        match event {
            Event::Tap {
                card,
                price,
                crash_after_steps,
            } => {
                t.tap(&ledger, card, order_payment(price), crash_after_steps)
                    .await
            }
            Event::Return {
                card,
                cups,
                crash_after_steps,
            } => {
                t.tap(&ledger, card, return_payment(cups), crash_after_steps)
                    .await
            }
            Event::VoidLast => t.void_last(),
            Event::NetworkDown => ledger.network().up = false,
            Event::NetworkUp => ledger.network().up = true,
            Event::NextPost(fault) => ledger.network().next_post = fault,
            Event::LoseNextBatchAnswer => ledger.network().lose_next_batch_answer = true,
            Event::Sync => t.sync(&ledger).await,
            Event::Crash => t.crash_and_restart(&ledger).await,
        }
    }

    // The network comes back for good, and the sync worker replays (no restart: a running
    // terminal must settle everything by itself).
    {
        let mut n = ledger.network();
        n.up = true;
        n.next_post = Fault::None;
        n.lose_next_batch_answer = false;
    }
    for _ in 0..200 {
        let counts = t.journal.lock().unwrap().counts().unwrap();
        if counts.pending == 0 && counts.in_doubt == 0 {
            break;
        }
        t.sync(&ledger).await;
    }
    // Invariant 2: everything acknowledged, nothing refused.
    let counts = t.journal.lock().unwrap().counts().unwrap();
    assert_eq!(
        (counts.pending, counts.in_doubt, counts.rejected),
        (0, 0, 0),
        "{counts:?}"
    );

    // Invariants 3 and 7: per order attempt, the ledger's charges are what the journal
    // decided; per deposit return, its credits.
    let ledger_db = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let entries = tap::all_unacknowledged(&t.journal.lock().unwrap()).unwrap();
    assert!(entries.is_empty(), "{entries:?}");
    let journal_db = rusqlite::Connection::open(&t.path).unwrap();
    // Each order's money and vouchers as the ledger answered them (an offline one: what the
    // terminal decided, which the ledger takes as it is), and each return's credit.
    let mut stmt = journal_db
        .prepare(
            "SELECT client_request_id, card_uid,
                    COALESCE(-json_extract(ledger_body, '$.money_cents'), amount_cents),
                    decision, state, COALESCE(json_extract(ledger_body, '$.vouchers_used'), 0),
                    operation
             FROM journal WHERE operation IN (?1, ?2)",
        )
        .unwrap();
    type OrderRow = (String, String, i64, Option<String>, String, i64, String);
    let orders: Vec<OrderRow> = stmt
        .query_map(
            [
                OperationKind::Order.as_str(),
                OperationKind::Return.as_str(),
            ],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut expected_balance: HashMap<String, i64> = (0..CARDS)
        .map(|i| (card(i).to_string(), FUNDING_CENTS[i]))
        .collect();
    let mut expected_vouchers: HashMap<String, i64> = (0..CARDS)
        .map(|i| (card(i).to_string(), VOUCHERS[i]))
        .collect();
    let mut approved = 0;
    for (crid, uid, amount, decision, state, vouchers, operation) in &orders {
        let crid = ClientRequestId::parse(crid).unwrap();
        let journal_approved = matches!(
            decision.as_deref(),
            Some("approved_online" | "approved_offline")
        );
        let expected = i64::from(journal_approved && !t.refunded.contains(&crid));
        let table = if operation == OperationKind::Return.as_str() {
            "deposit_returns"
        } else {
            "bar_orders"
        };
        assert_eq!(
            applications(&ledger_db, table, crid),
            expected,
            "{operation} {crid} (decision {decision:?}, state {state}) is applied a wrong number of times"
        );
        assert_eq!(state, EntryState::Synced.as_str());
        if journal_approved {
            approved += 1;
        }
        *expected_balance.get_mut(uid).unwrap() += amount * expected;
        *expected_vouchers.get_mut(uid).unwrap() -= vouchers * expected;
    }
    // Every shown approval is one of those approved entries; every shown decline is not.
    for (crid, outcome) in &t.shown {
        if let Some(crid) = crid {
            let row = orders
                .iter()
                .find(|o| o.0 == crid.to_string())
                .expect("every shown verdict with a key is in the journal");
            let journal_approved = matches!(
                row.3.as_deref(),
                Some("approved_online" | "approved_offline")
            );
            assert_eq!(journal_approved, *outcome != Outcome::Declined, "{row:?}");
        }
    }
    assert!(approved >= t.shown.iter().filter(|s| s.1 != Outcome::Declined).count());

    // Invariant 5: one terminal whose offline policy counts its own unsynced charges never
    // sells a card below zero, offline or not.
    let lowest: Option<i64> = ledger_db
        .query_row("SELECT MIN(new_balance_cents) FROM bar_orders", [], |r| {
            r.get(0)
        })
        .unwrap();
    if lowest.unwrap_or(0) < 0 {
        let mut st = ledger_db.prepare("SELECT card_uid, total_cents, mode, previous_balance_cents, new_balance_cents, terminal_seq, client_request_id FROM bar_orders ORDER BY terminal_seq").unwrap();
        let rows: Vec<String> = st
            .query_map([], |r| {
                Ok(format!(
                    "{} {} {} {} {} seq={} {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut st = journal_db.prepare("SELECT terminal_seq, operation, card_uid, amount_cents, mode, state, decision, client_request_id, synced_at, updated_at FROM journal ORDER BY terminal_seq").unwrap();
        let j: Vec<String> = st
            .query_map([], |r| {
                Ok(format!(
                    "{} {} {:?} {} {} {} {:?} {} {:?} {}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, String>(9)?
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        panic!("an order took a card to {lowest:?}\n{rows:#?}\n{j:#?}");
    }

    // Invariant 4: balances and the books.
    for (uid, expected) in &expected_balance {
        let card = ledger
            .store
            .card(CardUid::parse(uid).unwrap())
            .await
            .unwrap();
        let balance = card.as_ref().map_or(0, |c| c.balance_cents.get());
        assert_eq!(balance, *expected, "card {uid}");
        // Vouchers: granted less what approved sales took, and never below zero with one
        // terminal (it counts its own use, as it counts its charges).
        let vouchers = card.as_ref().map_or(0, |c| c.voucher_units);
        assert_eq!(vouchers, expected_vouchers[uid], "card {uid}'s vouchers");
        assert!(
            vouchers >= 0,
            "card {uid}'s vouchers went below zero: {vouchers}"
        );
    }
    let audit = ledger.store.audit().await.unwrap();
    assert!(audit.discrepancies.is_empty(), "{audit:?}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_approved_sale_is_charged_exactly_once_whatever_happens(
        events in prop::collection::vec(event(), 1..40)
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(events));
    }
}

/// The hard cases, one by one, so that a regression names itself.
#[tokio::test]
async fn named_cases() {
    use Event::*;
    let tap = |card, crash| Tap {
        card,
        price: 1,
        crash_after_steps: crash,
    };
    let cases: Vec<(&str, Vec<Event>)> = vec![
        (
            "answer lost after commit",
            vec![NextPost(Fault::LostAfterCommit), tap(3, None)],
        ),
        (
            "timeout before delivery",
            vec![NextPost(Fault::TimeoutBeforeDelivery), tap(3, None)],
        ),
        (
            "delivered twice",
            vec![NextPost(Fault::Twice), tap(3, None)],
        ),
        (
            "server error",
            vec![NextPost(Fault::ServerError), tap(3, None)],
        ),
        ("crash after the send", vec![tap(3, Some(2))]),
        (
            "crash after the void",
            vec![NextPost(Fault::LostAfterCommit), tap(3, Some(3))],
        ),
        (
            "crash after the offline journal write",
            vec![NetworkDown, Sync, tap(3, Some(2))],
        ),
        (
            "replay answer lost",
            vec![
                NetworkDown,
                Sync,
                tap(2, None),
                tap(3, None),
                NetworkUp,
                LoseNextBatchAnswer,
                Sync,
                Sync,
            ],
        ),
        (
            "refund offline",
            vec![NetworkDown, Sync, tap(3, None), VoidLast, NetworkUp, Sync],
        ),
        ("refund online", vec![tap(3, None), VoidLast, Sync]),
        (
            // Card 1 has 5.00 and two vouchers, and the 4.50 product costs one: three
            // offline sales take both vouchers, then money; the refund of the last gives
            // back only its money.
            "vouchers offline, then money, then a refund",
            vec![
                NetworkDown,
                Sync,
                tap(1, None),
                tap(1, None),
                tap(1, None),
                VoidLast,
                NetworkUp,
                Sync,
            ],
        ),
        (
            "empty card offline",
            vec![NetworkDown, Sync, tap(0, None), tap(0, None)],
        ),
        (
            // Four offline sales, one replay batch of three: the sale on card 1 is still
            // pending when the terminal is online again. A new sale on card 1 must not be
            // decided by the ledger, whose balance lacks the pending one.
            "online again before the replay caught up",
            vec![
                NetworkDown,
                Sync,
                tap(2, None),
                tap(2, None),
                tap(2, None),
                tap(1, None),
                NetworkUp,
                Sync,
                Tap {
                    card: 1,
                    price: 0,
                    crash_after_steps: None,
                },
            ],
        ),
    ];
    for (name, events) in cases {
        eprintln!("case: {name}");
        run(events).await;
    }
}

/// Found by the property test: a refund synced in the same millisecond as a card-feed pull
/// was counted as a local credit although the replica already held it, so the card was sold
/// below zero offline (about one run in two, depending on the clock).
#[tokio::test]
async fn a_refund_synced_at_the_time_of_a_feed_pull_is_not_counted_twice() {
    use Event::*;
    run(vec![
        NextPost(Fault::Twice),
        Tap {
            card: 2,
            price: 1,
            crash_after_steps: Some(5),
        },
        Sync,
        NextPost(Fault::ServerError),
        Tap {
            card: 1,
            price: 2,
            crash_after_steps: None,
        },
        Tap {
            card: 2,
            price: 2,
            crash_after_steps: Some(1),
        },
        Tap {
            card: 0,
            price: 1,
            crash_after_steps: None,
        },
        NextPost(Fault::Twice),
        Tap {
            card: 1,
            price: 0,
            crash_after_steps: None,
        },
        NextPost(Fault::LostAfterCommit),
        VoidLast,
        Sync,
        Tap {
            card: 0,
            price: 1,
            crash_after_steps: None,
        },
        Tap {
            card: 1,
            price: 0,
            crash_after_steps: Some(6),
        },
        NextPost(Fault::LostAfterCommit),
        Tap {
            card: 1,
            price: 1,
            crash_after_steps: None,
        },
        NextPost(Fault::Twice),
        LoseNextBatchAnswer,
        Tap {
            card: 1,
            price: 2,
            crash_after_steps: None,
        },
        NetworkUp,
        NextPost(Fault::TimeoutBeforeDelivery),
        Tap {
            card: 2,
            price: 2,
            crash_after_steps: None,
        },
        NetworkUp,
        NetworkUp,
        Tap {
            card: 3,
            price: 1,
            crash_after_steps: None,
        },
        NetworkDown,
        Tap {
            card: 3,
            price: 1,
            crash_after_steps: None,
        },
        NetworkDown,
        Tap {
            card: 0,
            price: 2,
            crash_after_steps: None,
        },
        Tap {
            card: 2,
            price: 1,
            crash_after_steps: None,
        },
        NextPost(Fault::TimeoutBeforeDelivery),
        VoidLast,
    ])
    .await;
}

/// Found by the property test: a deposit return sent online, applied by the ledger, and left
/// in doubt by a crash is voided; the first sync after the restart replays only one batch of
/// the backlog, so the card-feed pull brings the card *with* the returned deposit while the
/// void that takes it back is still waiting. The void counted for nothing on the card, so an
/// offline sale spent the deposit and, once the void was replayed, left the card below zero.
#[tokio::test]
async fn the_void_of_an_in_doubt_return_counts_against_the_card_until_the_replica_shows_it() {
    use Event::*;
    let small_sale = |card| Tap {
        card,
        price: 0,
        crash_after_steps: None,
    };
    let mut events = vec![NetworkDown, Sync];
    // A backlog longer than one replay batch, on another card.
    events.extend((0..2 * BATCH_MAX).map(|_| small_sale(3)));
    events.extend([
        NetworkUp,
        Sync,
        // Card 0 is empty: two cups back online, and the terminal dies before recording the
        // ledger's answer (after reading the card, journaling the attempt and sending it).
        Return {
            card: 0,
            cups: 2,
            crash_after_steps: Some(3),
        },
        small_sale(0),
        small_sale(0),
    ]);
    run(events).await;
}
