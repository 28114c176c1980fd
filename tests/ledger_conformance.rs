//! The operation flow's contract (`src/ledger/flow/mod.rs`, "Flow contract" in
//! docs/ledger-api.md), checked black-box on every backend through `Store::open` and the
//! store traits, on typed outcomes (no HTTP: `tests/ledger_api.rs` covers the wire).
//!
//! Each test runs once per backend, as `sqlite::NAME` and `postgres::NAME`, each on a new
//! database of its own (`tests/common/backend.rs`; a PostgreSQL one is dropped afterwards).
//! What the traits do not show (a terminal's `terminal_seq` marks) is read from the database
//! ([`seq_marks`]).
#![allow(clippy::unwrap_used)]

mod common;

use cashless::domain::{CardUid, Cents, ClientRequestId, ProductId, StaffId, TerminalSeq};
use cashless::ledger::caller::Terminal;
use cashless::ledger::config::DatabaseUrl;
use cashless::ledger::outcome::{Answer, Decided, Outcome};
use cashless::ledger::rules::Limits;
use cashless::ledger::store::{
    AdminStore, FeedStore, NewStaff, NewTerminal, OperationStore, Product, ProductUpsert,
    ReportStore, Store, StoreOptions, token_sha256,
};
use cashless::protocol::api::{
    Mode, Operation, OrderItem, OrderRequest, PaymentMethod, RechargeRequest, ShiftCloseout,
    StaffRole, TerminalKind, VoidReason, VoidRequest,
};
use cashless::protocol::codes::ErrorCode;
use chrono::Utc;
use common::backend::Database;
use common::{Backend, Cell};
use serde_json::Value;
use std::sync::atomic::{AtomicI64, Ordering};

/// A terminal's highest contiguous and highest seen `terminal_seq`, read from the backend.
fn seq_marks(database: &Database, terminal: &Terminal) -> (i64, i64) {
    let rows = database.query(&format!(
        "SELECT highest_contiguous_seq, highest_seen_seq FROM terminals WHERE terminal_id = '{}'",
        terminal.terminal_id
    ));
    match rows.rows.as_slice() {
        [row] => match row.as_slice() {
            [Cell::Int(contiguous), Cell::Int(seen)] => (*contiguous, *seen),
            other => panic!("not two marks: {other:?}"),
        },
        other => panic!("no terminal {}: {other:?}", terminal.terminal_id),
    }
}

const PRICE: i64 = 450;

/// A ledger with a bar, a second bar, a checkpoint, staff and one product.
struct Fixture {
    store: Store,
    bar: Terminal,
    bar2: Terminal,
    cp: Terminal,
    seq: AtomicI64,
    /// The store's database; last, so that it is dropped after the store.
    database: Database,
}

async fn fixture(database: Database, retention_days: i64) -> Fixture {
    let options = StoreOptions {
        limits: Limits {
            recharge_max: Cents::new(50_000),
            balance_max: Cents::new(100_000),
        },
        retention_days,
        postgres: Default::default(),
        taxes: cashless::domain::TaxRates::untaxed(),
    };
    let url = DatabaseUrl::parse(&database.url()).unwrap();
    let store = Store::open(&url, options).await.unwrap();
    let mut terminals = Vec::new();
    for (name, kind) in [
        ("bar-1", TerminalKind::Bar),
        ("bar-2", TerminalKind::Bar),
        ("cp-1", TerminalKind::Checkpoint),
    ] {
        store
            .add_terminal(NewTerminal {
                name: name.into(),
                kind,
                point_of_sale: "Main Bar".into(),
                token_sha256: token_sha256(name),
            })
            .await
            .unwrap();
        terminals.push(store.authenticate(name).await.unwrap().unwrap());
    }
    for (id, role) in [("s-1", StaffRole::Supervisor), ("s-bar", StaffRole::Bar)] {
        store
            .add_staff(NewStaff {
                staff_id: StaffId::parse(id).unwrap(),
                name: id.into(),
                role,
                pin_hash: "x".into(),
            })
            .await
            .unwrap();
    }
    store
        .upsert_products(vec![ProductUpsert {
            point_of_sale: "Main Bar".into(),
            product: Product {
                product_id: ProductId::parse("beer").unwrap(),
                name: "Beer".into(),
                price_cents: Cents::new(PRICE),
                category: None,
                tax_rate: None,
                min_age: None,
                open_price_max_cents: None,
                voucher_price: None,
                returnable: false,
                deposit_product_id: None,
            },
        }])
        .await
        .unwrap();
    let cp = terminals.pop().unwrap();
    let bar2 = terminals.pop().unwrap();
    let bar = terminals.pop().unwrap();
    Fixture {
        database,
        store,
        bar,
        bar2,
        cp,
        seq: AtomicI64::new(0),
    }
}

fn uid(n: u8) -> CardUid {
    CardUid::parse(&format!("04A1B2{n:02X}")).unwrap()
}

fn staff(id: &str) -> StaffId {
    StaffId::parse(id).unwrap()
}

impl Fixture {
    fn next_seq(&self) -> TerminalSeq {
        TerminalSeq::new(self.seq.fetch_add(1, Ordering::SeqCst) + 1).unwrap()
    }

    fn order(&self, card: &CardUid, units: i64, mode: Mode) -> OrderRequest {
        OrderRequest {
            client_request_id: ClientRequestId::new_random(),
            terminal_seq: self.next_seq(),
            card_uid: card.clone(),
            items: vec![OrderItem {
                product_id: ProductId::parse("beer").unwrap(),
                quantity: units,
                unit_price_cents: Cents::new(PRICE),
            }],
            total_cents: Cents::new(PRICE * units),
            staff_id: staff("s-1"),
            created_at: Utc::now(),
            mode,
            voucher_units: None,
        }
    }

    fn recharge(&self, card: &CardUid, amount: i64) -> RechargeRequest {
        RechargeRequest {
            client_request_id: ClientRequestId::new_random(),
            terminal_seq: self.next_seq(),
            card_uid: card.clone(),
            amount_cents: Cents::new(amount),
            payment_method: PaymentMethod::Cash,
            staff_id: staff("s-1"),
            created_at: Utc::now(),
            mode: Mode::Online,
            age_flag: None,
        }
    }

    fn void(&self, target: ClientRequestId) -> VoidRequest {
        VoidRequest {
            client_request_id: ClientRequestId::new_random(),
            terminal_seq: self.next_seq(),
            target_client_request_id: target,
            staff_id: staff("s-bar"),
            reason: VoidReason::StaffError,
            created_at: Utc::now(),
        }
    }

    async fn one(&self, terminal: &Terminal, request_id: &str, op: Operation) -> Outcome {
        let mut outcomes = self
            .store
            .apply(terminal.clone(), request_id.into(), vec![op])
            .await
            .unwrap();
        assert_eq!(outcomes.len(), 1);
        outcomes.pop().unwrap()
    }

    /// An order, from `terminal`.
    async fn sell(&self, terminal: &Terminal, request_id: &str, order: OrderRequest) -> Outcome {
        self.one(terminal, request_id, Operation::Order(order))
            .await
    }

    async fn fund(&self, card: &CardUid, amount: i64) {
        let o = self
            .one(
                &self.cp,
                "fund",
                Operation::Recharge(self.recharge(card, amount)),
            )
            .await;
        assert!(matches!(o.decided, Decided::Approved(_)), "{o:?}");
    }

    async fn balance(&self, card: &CardUid) -> Option<i64> {
        self.store
            .card(card.clone())
            .await
            .unwrap()
            .map(|c| c.balance_cents.get())
    }

    /// Postings and cards: what a refusal must leave as it was.
    async fn books(&self) -> (i64, i64, i64) {
        let a = self.store.audit().await.unwrap();
        assert!(a.discrepancies.is_empty(), "{:?}", a.discrepancies);
        (a.cards, a.postings, a.card_balance_total_cents)
    }
}

/// A close-out of a shift with nothing taken.
fn empty_shift(client_request_id: ClientRequestId, staff_id: &str) -> ShiftCloseout {
    ShiftCloseout {
        client_request_id,
        staff_id: staff(staff_id),
        opened_at: Utc::now(),
        closed_at: Utc::now(),
        cash_cents: Cents::ZERO,
        card_cents: Cents::ZERO,
        count: 0,
        counted_cash_cents: Cents::ZERO,
        first_seq: None,
        last_seq: None,
    }
}

/// The decline's code, or `None` for an approval.
fn code(o: &Outcome) -> Option<ErrorCode> {
    o.code()
}

fn json(o: &Outcome) -> Value {
    serde_json::to_value(&o.decided).unwrap()
}

/// Runs `check` on a fresh fixture of `backend`: a new database that `Store::open` gives
/// its schema.
async fn on<F, Fut>(backend: Backend, retention_days: i64, check: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let database = Database::create(backend, dir.path());
    check(fixture(database, retention_days).await).await;
}

async fn the_terminal_kind_is_checked_before_the_key(backend: Backend) {
    on(backend, 30, |f| async move {
        let card = uid(1);
        f.fund(&card, 5000).await;
        // The bar's order under key K is approved ...
        let order = f.order(&card, 1, Mode::Online);
        let k = order.client_request_id;
        let first = f.sell(&f.bar, "r1", order.clone()).await;
        assert_eq!(code(&first), None);
        // ... and a top-up from the same bar under the same key is refused for the kind
        // (not replayed, not KEY_REUSED), writing nothing.
        let before = f.books().await;
        let mut topup = f.recharge(&card, 100);
        topup.client_request_id = k;
        let o = f.one(&f.bar, "r2", Operation::Recharge(topup)).await;
        assert_eq!(code(&o), Some(ErrorCode::Forbidden));
        assert!(!o.replayed);
        // A checkpoint may not sell, even the very request the bar's key holds.
        let again = f.sell(&f.cp, "r3", order).await;
        assert_eq!(code(&again), Some(ErrorCode::Forbidden));
        assert_eq!(f.books().await, before);
    })
    .await;
}

async fn the_key_comes_before_tombstone_and_staff_and_the_tombstone_before_staff(backend: Backend) {
    on(backend, 30, |f| async move {
        let card = uid(2);
        // A declined order's key is stored; a void then tombstones it (declined target).
        let declined = f.order(&card, 1, Mode::Online);
        let first = f.sell(&f.bar, "r1", declined.clone()).await;
        assert_eq!(code(&first), Some(ErrorCode::CardNotFound));
        let void = f.void(declined.client_request_id);
        let v = f.one(&f.bar, "r2", Operation::Void(void)).await;
        match &v.decided {
            Decided::Approved(Answer::Void(x)) => assert_eq!(x.status, "tombstoned"),
            other => panic!("{other:?}"),
        }
        // The same request again: the stored decline, replayed (key before tombstone), with
        // the request id of the request that first got it.
        let replay = f.sell(&f.bar, "r3", declined.clone()).await;
        assert!(replay.replayed);
        assert_eq!(json(&replay), json(&first));
        assert_eq!(json(&replay)["error"]["request_id"], "r1");
        // A tombstoned key never seen before, with an unknown staff member: the tombstone
        // answers (tombstone before staff).
        let mut unseen = f.order(&card, 1, Mode::Offline);
        unseen.staff_id = staff("nobody");
        let target = unseen.client_request_id;
        f.one(&f.bar, "r4", Operation::Void(f.void(target))).await;
        let o = f.sell(&f.bar, "r5", unseen).await;
        assert_eq!(code(&o), Some(ErrorCode::OperationVoided));
        // Staff before the decision: an unknown staff member online on an unknown card is
        // refused for the staff, not declined for the card, and nothing is stored.
        let mut nobody = f.order(&uid(3), 1, Mode::Online);
        nobody.staff_id = staff("nobody");
        let o = f.sell(&f.bar, "r6", nobody.clone()).await;
        assert_eq!(code(&o), Some(ErrorCode::Forbidden));
        let o = f.sell(&f.bar, "r7", nobody).await;
        assert!(!o.replayed, "a refusal is not stored");
    })
    .await;
}

async fn a_replay_returns_the_stored_typed_outcome_and_a_reused_key_writes_nothing(
    backend: Backend,
) {
    on(backend, 30, |f| async move {
        let card = uid(4);
        f.fund(&card, 5000).await;
        let order = f.order(&card, 2, Mode::Online);
        let first = f.sell(&f.bar, "r1", order.clone()).await;
        assert!(!first.replayed);
        let Decided::Approved(Answer::Approval(a)) = &first.decided else {
            panic!("{first:?}");
        };
        assert_eq!(a.new_balance_cents.get(), 5000 - 2 * PRICE);
        let books = f.books().await;
        // The same request: the same typed outcome, replayed, nothing written.
        let again = f.sell(&f.bar, "r2", order.clone()).await;
        assert!(again.replayed);
        assert_eq!(json(&again), json(&first));
        assert_eq!(f.books().await, books);
        // Another request under the key, or the same one from another terminal: refused as
        // a reuse, nothing written, and the key still replays the first answer.
        let mut other = order.clone();
        other.items[0].quantity = 1;
        other.total_cents = Cents::new(PRICE);
        for (terminal, op) in [(&f.bar, other), (&f.bar2, order.clone())] {
            let o = f.one(terminal, "r3", Operation::Order(op)).await;
            assert_eq!(code(&o), Some(ErrorCode::IdempotencyKeyReused));
            assert!(!o.replayed);
        }
        // One key space: a close-out under an order's key is a reuse too.
        let shift = empty_shift(order.client_request_id, "s-1");
        let o = f
            .store
            .record_shift(f.bar.clone(), "r4".into(), shift)
            .await
            .unwrap();
        assert_eq!(code(&o), Some(ErrorCode::IdempotencyKeyReused));
        assert_eq!(f.books().await, books);
        let still = f.sell(&f.bar, "r5", order).await;
        assert!(still.replayed);
        assert_eq!(json(&still), json(&first));
    })
    .await;
}

async fn voids_reverse_their_own_terminals_operations_once_and_tombstone_the_rest(
    backend: Backend,
) {
    on(backend, 30, |f| async move {
        let card = uid(5);
        f.fund(&card, 1000).await;
        let order = f.order(&card, 2, Mode::Online);
        f.sell(&f.bar, "r1", order.clone()).await;
        assert_eq!(f.balance(&card).await, Some(1000 - 2 * PRICE));
        // Another terminal may not void it.
        let o = f
            .one(
                &f.bar2,
                "r2",
                Operation::Void(f.void(order.client_request_id)),
            )
            .await;
        assert_eq!(code(&o), Some(ErrorCode::Forbidden));
        // Its own terminal reverses it in full ...
        let o = f
            .one(
                &f.bar,
                "r3",
                Operation::Void(f.void(order.client_request_id)),
            )
            .await;
        let Decided::Approved(Answer::Void(v)) = &o.decided else {
            panic!("{o:?}");
        };
        assert_eq!(
            (v.status, v.refunded_cents),
            ("voided", Some(Cents::new(2 * PRICE)))
        );
        assert_eq!(f.balance(&card).await, Some(1000));
        // ... once.
        let o = f
            .one(
                &f.bar,
                "r4",
                Operation::Void(f.void(order.client_request_id)),
            )
            .await;
        assert_eq!(code(&o), Some(ErrorCode::AlreadyVoided));
        // A void of a void, and of a close-out, is a bad request.
        let o = f
            .one(&f.bar, "r5", Operation::Void(f.void(v.client_request_id)))
            .await;
        assert_eq!(code(&o), Some(ErrorCode::InvalidRequest));
        let shift = empty_shift(ClientRequestId::new_random(), "s-bar");
        let key = shift.client_request_id;
        let o = f
            .store
            .record_shift(f.bar.clone(), "r6".into(), shift)
            .await
            .unwrap();
        assert!(
            matches!(o.decided, Decided::Approved(Answer::Shift(_))),
            "{o:?}"
        );
        let o = f.one(&f.bar, "r6", Operation::Void(f.void(key))).await;
        assert_eq!(code(&o), Some(ErrorCode::InvalidRequest));
        // A reversed top-up that was spent takes the card below zero: blocked for debt.
        let topup = f.recharge(&card, 500);
        f.one(&f.cp, "r7", Operation::Recharge(topup.clone())).await;
        f.one(
            &f.bar,
            "r8",
            Operation::Order(f.order(&card, 3, Mode::Online)),
        )
        .await;
        let mut void = f.void(topup.client_request_id);
        void.staff_id = staff("s-1");
        let o = f.one(&f.cp, "r9", Operation::Void(void)).await;
        let Decided::Approved(Answer::Void(v)) = &o.decided else {
            panic!("{o:?}");
        };
        assert_eq!(v.refunded_cents, Some(Cents::new(-500)));
        assert!(v.new_balance_cents.unwrap().is_negative());
        // A tombstone binds only its own terminal.
        let later = f.order(&card, 1, Mode::Offline);
        f.one(
            &f.bar,
            "r10",
            Operation::Void(f.void(later.client_request_id)),
        )
        .await;
        let o = f.sell(&f.bar2, "r11", later).await;
        assert_eq!(
            code(&o),
            None,
            "another terminal's tombstone does not refuse it"
        );
        f.books().await;
    })
    .await;
}

async fn decline_keys_expire_and_applied_keys_stay(backend: Backend) {
    // A retention of 0 days: a decline's key expires as soon as it is written.
    on(backend, 0, |f| async move {
        let card = uid(6);
        let declined = f.order(&card, 1, Mode::Online);
        let o = f.sell(&f.bar, "r1", declined.clone()).await;
        assert_eq!(code(&o), Some(ErrorCode::CardNotFound));
        f.fund(&card, 1000).await;
        let applied = f.order(&card, 1, Mode::Online);
        f.sell(&f.bar, "r2", applied.clone()).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(f.store.purge_expired_keys(1000).await.unwrap(), 1);
        // The declined request is decided afresh (the card exists now); the applied one is
        // still a replay.
        let o = f.sell(&f.bar, "r3", declined).await;
        assert!(!o.replayed);
        assert_eq!(code(&o), None);
        let o = f.sell(&f.bar, "r4", applied).await;
        assert!(o.replayed);
        assert_eq!(f.store.purge_expired_keys(1000).await.unwrap(), 0);
    })
    .await;
}

async fn terminal_seq_marks_follow_stored_outcomes_only(backend: Backend) {
    on(backend, 30, |f| async move {
        let card = uid(7);
        let at = |seq: i64| {
            let mut o = f.order(&card, 1, Mode::Offline);
            o.terminal_seq = TerminalSeq::new(seq).unwrap();
            Operation::Order(o)
        };
        // 1, then 3: contiguous 1, seen 3; then 2 closes the gap.
        f.one(&f.bar, "r1", at(1)).await;
        f.one(&f.bar, "r2", at(3)).await;
        assert_eq!(seq_marks(&f.database, &f.bar), (1, 3));
        f.one(&f.bar, "r3", at(2)).await;
        assert_eq!(seq_marks(&f.database, &f.bar), (3, 3));
        // A refusal (unknown staff) records no sequence number.
        let mut refused = f.order(&card, 1, Mode::Offline);
        refused.terminal_seq = TerminalSeq::new(4).unwrap();
        refused.staff_id = staff("nobody");
        let o = f.sell(&f.bar, "r4", refused).await;
        assert_eq!(code(&o), Some(ErrorCode::Forbidden));
        assert_eq!(seq_marks(&f.database, &f.bar), (3, 3));
        // A stored decline does.
        let mut declined = f.order(&uid(8), 1, Mode::Online);
        declined.terminal_seq = TerminalSeq::new(4).unwrap();
        let o = f.sell(&f.bar, "r5", declined).await;
        assert_eq!(code(&o), Some(ErrorCode::CardNotFound));
        assert_eq!(seq_marks(&f.database, &f.bar), (4, 4));
        // Batches: each operation on its own, in order.
        let ops = vec![at(5), at(5), at(6)];
        let outcomes = f
            .store
            .apply(f.bar.clone(), "r6".into(), ops)
            .await
            .unwrap();
        assert_eq!(outcomes.len(), 3);
        assert_eq!(seq_marks(&f.database, &f.bar), (6, 6));
    })
    .await;
}

on_both_backends! {
    the_terminal_kind_is_checked_before_the_key,
    the_key_comes_before_tombstone_and_staff_and_the_tombstone_before_staff,
    a_replay_returns_the_stored_typed_outcome_and_a_reused_key_writes_nothing,
    voids_reverse_their_own_terminals_operations_once_and_tombstone_the_rest,
    decline_keys_expire_and_applied_keys_stay,
    terminal_seq_marks_follow_stored_outcomes_only,
}
