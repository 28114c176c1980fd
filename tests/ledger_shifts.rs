//! Shift close-outs against the real ledger (`POST /v1/shifts`, `cashless ledger shift list`)
//! and the terminal's client for them: recorded once with the difference the ledger
//! computes, replayed byte for byte, refused without a trace, and reported next to the
//! ledger's own top-ups of the shift. Bad input is in `ledger_bad_input.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use cashless::protocol::api::ShiftCloseout;
use cashless::terminal::client::{ClientError, LedgerClient, ShiftAnswer};
use common::*;
use serde_json::{Value, json};

/// Tables that hold money or the state of cards: a close-out must leave them as they were.
const MONEY_TABLES: &[&str] = &[
    "cards",
    "bar_orders",
    "bar_order_items",
    "recharges",
    "voids",
    "postings",
];

const OPENED_AT: &str = "2026-07-01T18:00:00Z";
const CLOSED_AT: &str = "2026-07-02T02:00:00Z";

/// A close-out of a shift of s-cash from [`OPENED_AT`] to [`CLOSED_AT`], fresh key, without
/// a `terminal_seq` range (the ledger then compares by time).
fn shift_body(cash_cents: i64, card_cents: i64, count: i64, counted_cash_cents: i64) -> Value {
    json!({
        "client_request_id": new_id(),
        "staff_id": CASH_STAFF,
        "opened_at": OPENED_AT,
        "closed_at": CLOSED_AT,
        "cash_cents": cash_cents,
        "card_cents": card_cents,
        "count": count,
        "counted_cash_cents": counted_cash_cents,
    })
}

/// `body` with the shift's range of the terminal's sequence numbers.
fn with_seqs(mut body: Value, first_seq: i64, last_seq: i64) -> Value {
    body["first_seq"] = json!(first_seq);
    body["last_seq"] = json!(last_seq);
    body
}

/// `SELECT COUNT(*) FROM table WHERE condition`.
fn count_where(l: &Ledger, table: &str, condition: &str) -> i64 {
    l.query_i64(&format!("SELECT COUNT(*) FROM {table} WHERE {condition}"))
}

async fn a_close_out_is_recorded_with_its_difference_and_moves_no_money(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.fund(&uid(1), 4200).await;
    let money = l.db_fingerprint_of(MONEY_TABLES);

    let body = with_seqs(shift_body(42_000, 15_000, 37, 41_500), 1204, 1262);
    let resp = l.post("/v1/shifts", &l.checkpoint_token, &body).await;
    resp.assert_status(201);
    assert!(!resp.replayed());
    let b = &resp.body;
    let shift_id = b["shift_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(shift_id).is_ok(), "{b}");
    for field in [
        "client_request_id",
        "staff_id",
        "cash_cents",
        "card_cents",
        "count",
        "counted_cash_cents",
    ] {
        assert_eq!(b[field], body[field], "{field} of {b}");
    }
    assert_eq!(b["terminal"], "cp-1", "{b}");
    assert_eq!(b["difference_cents"], -500, "{b}");
    let recorded_at = chrono::DateTime::parse_from_rfc3339(b["recorded_at"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("recorded_at is RFC 3339: {e}: {b}"));
    assert_eq!(recorded_at.offset().local_minus_utc(), 0, "UTC: {b}");
    assert_eq!(b.as_object().unwrap().len(), 10, "no other fields: {b}");
    assert!(
        resp.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );

    // Stored with the terminal, its range, the ledger's difference, one audit row and its key.
    let row = l.query(&format!(
        "SELECT s.opened_at, s.closed_at, t.name, s.staff_id, s.difference_cents, s.count
         FROM shift_closeouts s JOIN terminals t USING (terminal_id)
         WHERE s.shift_id = '{shift_id}'"
    ));
    let range = |shift_id: &str| {
        l.query(&format!(
            "SELECT first_seq, last_seq FROM shift_closeouts WHERE shift_id = '{shift_id}'"
        ))
        .rows
    };
    assert_eq!(
        range(shift_id),
        vec![vec![Cell::Int(1204), Cell::Int(1262)]]
    );
    assert_eq!(
        row.rows,
        vec![vec![
            Cell::Text("2026-07-01T18:00:00.000Z".to_owned()),
            Cell::Text("2026-07-02T02:00:00.000Z".to_owned()),
            Cell::Text("cp-1".to_owned()),
            Cell::Text(CASH_STAFF.to_owned()),
            Cell::Int(-500),
            Cell::Int(37),
        ]]
    );
    let crid = crid(&body);
    let audit_rows = count_where(
        &l,
        "app_transaction_log",
        &format!(
            "operation = 'shift' AND outcome = 'recorded' AND client_request_id = '{crid}'
             AND transaction_id = '{shift_id}' AND actor = 'terminal:cp-1'
             AND staff_id = '{CASH_STAFF}' AND card_uid IS NULL
             AND {} = '-500' AND {} = '1204' AND {} = '1262'",
            l.json_text("details", "difference_cents"),
            l.json_text("details", "first_seq"),
            l.json_text("details", "last_seq"),
        ),
    );
    assert_eq!(audit_rows, 1);
    let keys = count_where(
        &l,
        "idempotency_keys",
        &format!(
            "client_request_id = '{crid}' AND operation = 'shift' AND status_code = 201
             AND transaction_id = '{shift_id}' AND expires_at IS NULL"
        ),
    );
    assert_eq!(
        keys, 1,
        "the key is kept forever, like an applied operation's"
    );
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money, "no money moved");

    // Any terminal kind, any role: a bar closes its drawer too; an exact drawer is 0.
    let mut bar = shift_body(0, 0, 0, 0);
    bar["staff_id"] = json!(BAR_STAFF);
    bar["closed_at"] = json!(OPENED_AT);
    let resp = l.post("/v1/shifts", &l.bar_token, &bar).await;
    resp.assert_status(201);
    assert_eq!(resp.body["terminal"], "bar-1");
    assert_eq!(resp.body["difference_cents"], 0);
    assert_eq!(
        range(resp.body["shift_id"].as_str().unwrap()),
        vec![vec![Cell::Null, Cell::Null]],
        "an empty shift sends no range"
    );
    // More cash than expected is a positive difference.
    let resp = l
        .post(
            "/v1/shifts",
            &l.checkpoint_token,
            &shift_body(1000, 0, 1, 1250),
        )
        .await;
    resp.assert_status(201);
    assert_eq!(resp.body["difference_cents"], 250);
    assert_eq!(l.count("shift_closeouts"), 3);
    assert_eq!(l.db_fingerprint_of(MONEY_TABLES), money);
    l.assert_audit_ok();
}

async fn replays_return_the_stored_answer_and_write_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let body = with_seqs(shift_body(42_000, 15_000, 37, 41_500), 1204, 1262);
    let first = l.post("/v1/shifts", &l.checkpoint_token, &body).await;
    first.assert_status(201);
    let before = l.db_fingerprint();

    // The same body; spelled differently (key order, whitespace, another offset for the
    // same instants); with a matching Idempotency-Key header.
    let again = l.post("/v1/shifts", &l.checkpoint_token, &body).await;
    let mut keys: Vec<(&String, &Value)> = body.as_object().unwrap().iter().collect();
    keys.reverse();
    let respelled = format!(
        "{{\n  {}\n}}",
        keys.iter()
            .map(|(k, v)| match k.as_str() {
                "opened_at" => format!("{k:?} :  \"2026-07-01T20:00:00+02:00\""),
                "closed_at" => format!("{k:?} :  \"2026-07-02T02:00:00.000Z\""),
                _ => format!("{k:?} :  {v}"),
            })
            .collect::<Vec<_>>()
            .join(" ,\n  ")
    );
    let respelled = l
        .post_raw(
            "/v1/shifts",
            Some(&l.checkpoint_token),
            respelled.into_bytes(),
            &[],
        )
        .await;
    let key = crid(&body);
    let with_header = l
        .post_raw(
            "/v1/shifts",
            Some(&l.checkpoint_token),
            serde_json::to_vec(&body).unwrap(),
            &[("Idempotency-Key", &key)],
        )
        .await;
    for (how, resp) in [
        ("same", &again),
        ("respelled", &respelled),
        ("with header", &with_header),
    ] {
        assert_eq!(resp.status, 201, "{how}: {}", resp.body);
        assert_eq!(resp.raw, first.raw, "{how}: not byte-identical");
        assert!(resp.replayed(), "{how}: no Idempotent-Replayed: true");
    }
    assert_eq!(l.db_fingerprint(), before, "a replay wrote something");
    assert_eq!(l.count("shift_closeouts"), 1);
    l.assert_audit_ok();
}

async fn a_reused_key_is_refused_and_changes_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    let shift = with_seqs(shift_body(42_000, 15_000, 37, 41_500), 1204, 1262);
    l.post("/v1/shifts", &l.checkpoint_token, &shift)
        .await
        .assert_status(201);
    let topup = recharge_body(&card, l.seq(&l.checkpoint_token), 3000, "cash", "online");
    l.post("/v1/recharges", &l.checkpoint_token, &topup)
        .await
        .assert_status(201);

    let changed = |field: &str, value: Value| {
        let mut b = shift.clone();
        b[field] = value;
        b
    };
    let mut topup_key = shift_body(1, 2, 3, 4);
    topup_key["client_request_id"] = topup["client_request_id"].clone();
    let mut shift_key_order =
        recharge_body(&card, l.seq(&l.checkpoint_token), 100, "cash", "online");
    shift_key_order["client_request_id"] = shift["client_request_id"].clone();
    let reuses: Vec<(&str, &str, &str, Value)> = vec![
        (
            "another counted cash",
            "/v1/shifts",
            &l.checkpoint_token,
            changed("counted_cash_cents", json!(42_000)),
        ),
        (
            "another count",
            "/v1/shifts",
            &l.checkpoint_token,
            changed("count", json!(38)),
        ),
        (
            "another close",
            "/v1/shifts",
            &l.checkpoint_token,
            changed("closed_at", json!("2026-07-02T02:00:01Z")),
        ),
        (
            "another range",
            "/v1/shifts",
            &l.checkpoint_token,
            with_seqs(shift.clone(), 1204, 1263),
        ),
        ("without the range", "/v1/shifts", &l.checkpoint_token, {
            let mut b = shift.clone();
            let fields = b.as_object_mut().unwrap();
            fields.remove("first_seq");
            fields.remove("last_seq");
            b
        }),
        (
            "another staff member",
            "/v1/shifts",
            &l.checkpoint_token,
            changed("staff_id", json!(SUPER_STAFF)),
        ),
        (
            "the same close-out from another terminal",
            "/v1/shifts",
            &l.bar_token,
            shift.clone(),
        ),
        (
            "a top-up's key used for a close-out",
            "/v1/shifts",
            &l.checkpoint_token,
            topup_key,
        ),
        (
            "a close-out's key used for a top-up",
            "/v1/recharges",
            &l.checkpoint_token,
            shift_key_order,
        ),
    ];
    for (name, path, token, body) in &reuses {
        let before = l.db_fingerprint();
        let resp = l.post(path, token, body).await;
        assert_eq!(resp.status, 422, "{name}: {}", resp.body);
        resp.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
        assert!(!resp.replayed(), "{name}: a refusal is not a replay");
        assert_eq!(l.db_fingerprint(), before, "{name}: changed the database");
    }

    // A close-out moved no money: it cannot be voided.
    let before = l.db_fingerprint();
    let void = void_body(
        &crid(&shift),
        l.seq(&l.checkpoint_token),
        "staff_error",
        CASH_STAFF,
    );
    let resp = l.post("/v1/voids", &l.checkpoint_token, &void).await;
    let details = resp.assert_error(400, "INVALID_REQUEST");
    assert_eq!(
        details["field"], "target_client_request_id",
        "{}",
        resp.body
    );
    assert_eq!(
        l.db_fingerprint(),
        before,
        "a refused void changed the database"
    );

    // The Idempotency-Key header, when sent, must equal the body's key.
    for (name, body) in [
        ("new close-out", shift_body(1, 1, 1, 1)),
        ("recorded close-out", shift.clone()),
    ] {
        let before = l.db_fingerprint();
        let resp = l
            .post_raw(
                "/v1/shifts",
                Some(&l.checkpoint_token),
                serde_json::to_vec(&body).unwrap(),
                &[("Idempotency-Key", &new_id())],
            )
            .await;
        let details = resp.assert_error(400, "INVALID_REQUEST");
        assert_eq!(details["field"], "Idempotency-Key", "{name}: {}", resp.body);
        assert_eq!(l.db_fingerprint(), before, "{name}: changed the database");
    }
    assert_eq!(l.count("shift_closeouts"), 1);
    l.assert_audit_ok();
}

async fn unknown_staff_is_forbidden_and_writes_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let before = l.db_fingerprint();
    let mut body = shift_body(42_000, 15_000, 37, 41_500);
    body["staff_id"] = json!("nobody");
    for _ in 0..2 {
        let resp = l.post("/v1/shifts", &l.checkpoint_token, &body).await;
        resp.assert_error(403, "FORBIDDEN");
        assert!(!resp.replayed(), "a refusal is not stored");
    }
    assert_eq!(l.db_fingerprint(), before);
    // The key was not used up: the corrected close-out is recorded under it.
    body["staff_id"] = json!(CASH_STAFF);
    l.post("/v1/shifts", &l.checkpoint_token, &body)
        .await
        .assert_status(201);
}

async fn twenty_concurrent_identical_close_outs_record_once(backend: Backend) {
    let l = Arc::new(Ledger::start_on(backend).await);
    let body = Arc::new(shift_body(42_000, 15_000, 37, 41_500));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (l, body) = (Arc::clone(&l), Arc::clone(&body));
        tasks.spawn(async move {
            // DUPLICATE_REQUEST is retryable: retry until the stored answer comes back.
            let mut answers = Vec::new();
            loop {
                let resp = l.post("/v1/shifts", &l.checkpoint_token, &body).await;
                let busy = resp.status == 409;
                if busy {
                    resp.assert_error(409, "DUPLICATE_REQUEST");
                }
                answers.push(resp);
                if !busy || answers.len() > 1000 {
                    return answers;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
    }
    let mut finals = Vec::new();
    while let Some(answers) = tasks.join_next().await {
        finals.push(answers.unwrap().pop().unwrap());
    }
    assert_eq!(finals.len(), 20);
    let fresh: Vec<&Resp> = finals.iter().filter(|r| !r.replayed()).collect();
    assert_eq!(fresh.len(), 1, "one is recorded, the others are replays");
    for r in &finals {
        r.assert_status(201);
        assert_eq!(r.raw, fresh[0].raw, "every answer is the stored one");
    }
    assert_eq!(l.count("shift_closeouts"), 1);
    assert_eq!(
        count_where(&l, "app_transaction_log", "operation = 'shift'"),
        1
    );
    assert_eq!(
        count_where(&l, "idempotency_keys", "operation = 'shift'"),
        1
    );
    l.assert_audit_ok();
}

/// A top-up by cp-1 created at `created_at`.
async fn topup_at(
    l: &Ledger,
    card: &str,
    amount_cents: i64,
    method: &str,
    mode: &str,
    created_at: &str,
) -> Value {
    let mut body = recharge_body(card, l.seq(&l.checkpoint_token), amount_cents, method, mode);
    body["created_at"] = json!(created_at);
    l.post("/v1/recharges", &l.checkpoint_token, &body)
        .await
        .assert_status(201);
    body
}

/// `cashless ledger shift list [args]`: the header, then each row split on whitespace.
fn shift_list(l: &Ledger, args: &[&str]) -> (String, Vec<Vec<String>>) {
    let mut all = vec!["shift", "list"];
    all.extend_from_slice(args);
    let out = assert_success("cashless ledger shift list", &l.admin(&all));
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default().to_owned();
    let rows = lines
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// Close-outs without a `terminal_seq` range: the ledger's top-ups of the terminal between
/// `opened_at` and `closed_at`.
async fn shift_list_shows_the_ledgers_totals_next_to_the_terminals(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let (empty, rows) = shift_list(&l, &[]);
    assert_eq!(empty, "no shift close-outs");
    assert!(rows.is_empty());

    // During the shift: two cash and one card top-up, and a cash top-up voided.
    topup_at(&l, &uid(1), 5000, "cash", "online", "2026-07-01T19:00:00Z").await;
    topup_at(&l, &uid(2), 3000, "cash", "online", "2026-07-01T20:00:00Z").await;
    topup_at(&l, &uid(3), 2000, "card", "online", "2026-07-01T21:00:00Z").await;
    let voided = topup_at(&l, &uid(4), 1000, "cash", "online", "2026-07-01T22:00:00Z").await;
    let void = void_body(
        &crid(&voided),
        l.seq(&l.checkpoint_token),
        "customer_refund",
        CASH_STAFF,
    );
    l.post("/v1/voids", &l.checkpoint_token, &void)
        .await
        .assert_status(201);
    // Outside it: before the opening and after the close.
    topup_at(&l, &uid(5), 700, "cash", "online", "2026-07-01T17:59:59Z").await;
    topup_at(&l, &uid(6), 900, "card", "online", "2026-07-02T02:00:01Z").await;
    // The terminal also took 15.00 cash offline at 23:00, not replayed yet; the drawer is
    // 1.00 short of its 95.00.
    l.post(
        "/v1/shifts",
        &l.checkpoint_token,
        &shift_body(9500, 2000, 4, 9400),
    )
    .await
    .assert_status(201);
    let mut bar = shift_body(0, 0, 0, 0);
    bar["staff_id"] = json!(BAR_STAFF);
    bar["closed_at"] = json!("2026-07-02T03:00:00Z");
    l.post("/v1/shifts", &l.bar_token, &bar)
        .await
        .assert_status(201);

    let (header, rows) = shift_list(&l, &["--terminal", "cp-1"]);
    let columns: Vec<&str> = header.split("  ").filter(|c| !c.is_empty()).collect();
    let columns: Vec<&str> = columns.iter().map(|c| c.trim()).collect();
    assert_eq!(
        columns,
        [
            "TERMINAL",
            "STAFF",
            "OPENED",
            "CLOSED",
            "COUNT",
            "CASH EXPECTED",
            "COUNTED",
            "DIFFERENCE",
            "CARD",
            "LEDGER COUNT",
            "LEDGER CASH",
            "LEDGER CARD"
        ],
        "{header}"
    );
    let expected_before = [
        "cp-1",
        CASH_STAFF,
        "2026-07-01T18:00:00.000Z",
        "2026-07-02T02:00:00.000Z",
        "4",
        "95.00",
        "94.00",
        "-1.00",
        "20.00",
        "3",
        "80.00",
        "20.00",
    ];
    assert_eq!(rows, vec![expected_before.to_vec()], "{header}");

    // The offline top-up arrives after the close-out: the ledger's totals catch up.
    topup_at(&l, &uid(7), 1500, "cash", "offline", "2026-07-01T23:00:00Z").await;
    let (_, rows) = shift_list(&l, &["--terminal", "cp-1"]);
    let mut expected_after = expected_before;
    expected_after[9] = "4";
    expected_after[10] = "95.00";
    assert_eq!(rows, vec![expected_after.to_vec()]);

    // Without a filter: every terminal's close-outs, oldest close first.
    let (_, rows) = shift_list(&l, &[]);
    let terminals: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(terminals, ["cp-1", "bar-1"]);
    assert_eq!(
        rows[1][4..],
        ["0", "0.00", "0.00", "0.00", "0.00", "0", "0.00", "0.00"]
    );
    let (empty, _) = shift_list(&l, &["--terminal", "bar-2"]);
    assert_eq!(empty, "no shift close-outs");
    l.assert_audit_ok();
}

/// A close-out of cp-1 from `opened_at` to `closed_at` covering `first_seq..=last_seq`.
fn ranged_shift(
    (opened_at, closed_at): (&str, &str),
    (first_seq, last_seq): (i64, i64),
    (cash_cents, card_cents, count): (i64, i64, i64),
) -> Value {
    let mut body = with_seqs(
        shift_body(cash_cents, card_cents, count, cash_cents),
        first_seq,
        last_seq,
    );
    body["opened_at"] = json!(opened_at);
    body["closed_at"] = json!(closed_at);
    body
}

async fn shift_list_compares_by_the_terminals_sequence_numbers_through_a_clock_step(
    backend: Backend,
) {
    let l = Ledger::start_on(backend).await;
    let cp = &l.checkpoint_token;
    // The first shift, 18:00 to 20:00: seqs 1 and 2.
    topup_at(&l, &uid(1), 5000, "cash", "online", "2026-07-01T18:00:00Z").await;
    topup_at(&l, &uid(2), 2000, "card", "online", "2026-07-01T19:30:00Z").await;
    l.post(
        "/v1/shifts",
        cp,
        &ranged_shift(
            ("2026-07-01T18:00:00Z", "2026-07-01T20:00:00Z"),
            (1, 2),
            (5000, 2000, 2),
        ),
    )
    .await
    .assert_status(201);
    // The terminal's clock steps back an hour: the second shift's top-ups (seqs 3 to 6, a
    // refund at 7) are stamped before the first one's close, and it closes while the clock
    // is still behind, so at its own opening: its time window is empty, the first one's
    // holds them. Seq 5, 15.00 cash taken offline, reaches the ledger after the close.
    topup_at(&l, &uid(3), 1000, "cash", "online", "2026-07-01T19:00:00Z").await;
    topup_at(&l, &uid(4), 300, "card", "online", "2026-07-01T19:01:00Z").await;
    let mut offline = recharge_body(&uid(5), l.seq(cp), 1500, "cash", "offline");
    offline["created_at"] = json!("2026-07-01T19:02:00Z");
    let refunded = topup_at(&l, &uid(6), 700, "cash", "online", "2026-07-01T19:03:00Z").await;
    let void = void_body(&crid(&refunded), l.seq(cp), "customer_refund", CASH_STAFF);
    l.post("/v1/voids", cp, &void).await.assert_status(201);
    l.post(
        "/v1/shifts",
        cp,
        &ranged_shift(
            ("2026-07-01T20:00:00Z", "2026-07-01T20:00:00Z"),
            (3, 7),
            (2500, 300, 3),
        ),
    )
    .await
    .assert_status(201);
    // The next shift, still open (seq 8), inside the first shift's time window.
    topup_at(&l, &uid(7), 400, "cash", "online", "2026-07-01T19:45:00Z").await;

    let row = |opened: &str, closed: &str, terminal: [&str; 5], ledger: [&str; 3]| {
        let mut row = vec!["cp-1", CASH_STAFF, opened, closed];
        row.extend(terminal);
        row.extend(ledger);
        row.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let first = row(
        "2026-07-01T18:00:00.000Z",
        "2026-07-01T20:00:00.000Z",
        ["2", "50.00", "50.00", "0.00", "20.00"],
        ["2", "50.00", "20.00"],
    );
    let second = |ledger| {
        row(
            "2026-07-01T20:00:00.000Z",
            "2026-07-01T20:00:00.000Z",
            ["3", "25.00", "25.00", "0.00", "3.00"],
            ledger,
        )
    };
    // Each top-up is counted in its own shift only; the offline one is still missing.
    let (_, rows) = shift_list(&l, &["--terminal", "cp-1"]);
    assert_eq!(
        rows,
        vec![first.clone(), second(["2", "10.00", "3.00"])],
        "COUNT CASH COUNTED DIFFERENCE CARD, then the ledger's COUNT CASH CARD"
    );
    // Replayed: the ledger's totals of the second shift now equal the terminal's.
    l.post("/v1/recharges", cp, &offline)
        .await
        .assert_status(201);
    let (_, rows) = shift_list(&l, &["--terminal", "cp-1"]);
    assert_eq!(rows, vec![first.clone(), second(["3", "25.00", "3.00"])]);
    // An empty shift (no range, nothing taken) whose clock window covers other shifts'
    // top-ups: the ledger counts none either.
    let mut empty = shift_body(0, 0, 0, 0);
    empty["opened_at"] = json!("2026-07-01T18:00:00Z");
    empty["closed_at"] = json!("2026-07-01T20:30:00Z");
    l.post("/v1/shifts", cp, &empty).await.assert_status(201);
    let (_, rows) = shift_list(&l, &["--terminal", "cp-1"]);
    assert_eq!(
        rows.last(),
        Some(&row(
            "2026-07-01T18:00:00.000Z",
            "2026-07-01T20:30:00.000Z",
            ["0", "0.00", "0.00", "0.00", "0.00"],
            ["0", "0.00", "0.00"],
        ))
    );
    l.assert_audit_ok();
}

fn closeout(staff_id: &str, counted_cash_cents: i64) -> ShiftCloseout {
    serde_json::from_value(json!({
        "client_request_id": new_id(),
        "staff_id": staff_id,
        "opened_at": OPENED_AT,
        "closed_at": CLOSED_AT,
        "cash_cents": 42_000,
        "card_cents": 15_000,
        "count": 37,
        "counted_cash_cents": counted_cash_cents,
    }))
    .unwrap()
}

async fn the_terminal_client_posts_close_outs(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let client = LedgerClient::new(&l.base_url, &l.checkpoint_token, 1500).unwrap();

    let shift = closeout(CASH_STAFF, 41_500);
    let Ok(ShiftAnswer::Recorded {
        shift: first,
        replayed: false,
    }) = client.post_shift(&shift).await
    else {
        panic!("the first post is recorded");
    };
    assert_eq!(first.client_request_id, shift.client_request_id);
    assert_eq!(first.terminal, "cp-1");
    assert_eq!(first.difference_cents.get(), -500);
    let again = client.post_shift(&shift).await.unwrap();
    assert_eq!(
        again,
        ShiftAnswer::Recorded {
            shift: first,
            replayed: true
        }
    );

    let mut reused = shift.clone();
    reused.counted_cash_cents = cashless::domain::Cents::new(42_000);
    match client.post_shift(&reused).await.unwrap() {
        ShiftAnswer::Rejected(a) => {
            assert_eq!(
                (a.status, a.error_code()),
                (422, Some("IDEMPOTENCY_KEY_REUSED"))
            );
        }
        other => panic!("a reused key is rejected: {other:?}"),
    }
    match client.post_shift(&closeout("nobody", 1)).await.unwrap() {
        ShiftAnswer::Rejected(a) => {
            assert_eq!((a.status, a.error_code()), (403, Some("FORBIDDEN")))
        }
        other => panic!("unknown staff is rejected: {other:?}"),
    }
    let stranger = LedgerClient::new(&l.base_url, "clt_unknown", 1500).unwrap();
    // An unknown token may be a rotation in progress: the close-out is kept and sent again.
    match stranger.post_shift(&closeout(CASH_STAFF, 1)).await.unwrap() {
        ShiftAnswer::Retry(a) => assert_eq!(a.status, 401),
        other => panic!("an unknown token is retried: {other:?}"),
    }
    assert_eq!(l.count("shift_closeouts"), 1);

    // Nothing listens: never sent, not in doubt.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let gone = LedgerClient::new(&format!("http://{addr}"), "clt_x", 500).unwrap();
    let err = gone.post_shift(&shift).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable(_)), "{err:?}");
    assert!(!err.is_in_doubt());
}

// Every test above that takes a `Backend` runs on both: `sqlite::NAME`, `postgres::NAME`.
on_both_backends! {
    a_close_out_is_recorded_with_its_difference_and_moves_no_money,
    replays_return_the_stored_answer_and_write_nothing,
    a_reused_key_is_refused_and_changes_nothing,
    unknown_staff_is_forbidden_and_writes_nothing,
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)] twenty_concurrent_identical_close_outs_record_once,
    shift_list_shows_the_ledgers_totals_next_to_the_terminals,
    shift_list_compares_by_the_terminals_sequence_numbers_through_a_clock_step,
    the_terminal_client_posts_close_outs,
}
