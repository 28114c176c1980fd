//! `cashless ledger import`: a terminal that never comes back online hands its journal
//! export to headquarters, which applies it exactly once, however often it is imported.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};

fn tagged(kind: &str, body: &Value) -> Value {
    let mut v = body.clone();
    v.as_object_mut()
        .unwrap()
        .insert("type".into(), json!(kind));
    v
}

fn export(terminal: &str, operations: Vec<Value>) -> Value {
    json!({
        "format": "cashless-journal-export",
        "version": 1,
        "terminal": terminal,
        "exported_at": "2026-07-02T03:00:00Z",
        "operations": operations,
    })
}

fn write(l: &Ledger, name: &str, doc: &Value) -> std::path::PathBuf {
    let path = l.dir.path().join(name);
    std::fs::write(&path, serde_json::to_vec(doc).unwrap()).unwrap();
    path
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn an_export_is_applied_once_however_often_it_is_imported(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let funded = uid(1);
    l.fund(&funded, 1000).await;
    // What bar-1 sold offline during an outage it never recovered from, plus one order it
    // had managed to send itself before dying (the import must not apply it twice).
    let sent_before = order_body(&funded, 1, &[("beer-05", 1, 450)], "offline");
    l.post("/v1/orders", &l.bar_token, &sent_before)
        .await
        .assert_status(201);
    let ops = vec![
        tagged("order", &sent_before),
        tagged(
            "order",
            &order_body(&funded, 2, &[("water", 2, 200)], "offline"),
        ),
        tagged(
            "order",
            &order_body(&uid(2), 3, &[("cocktail", 1, 900)], "offline"),
        ),
    ];
    let void_target = ops[1]["client_request_id"].as_str().unwrap().to_owned();
    let mut all = ops.clone();
    all.push(tagged(
        "void",
        &void_body(&void_target, 4, "staff_error", "s-bar"),
    ));
    let path = write(&l, "bar-1.json", &export("bar-1", all));
    let file = path.to_str().unwrap();

    let first = l.admin(&["import", file]);
    assert!(
        first.status.success(),
        "{}{}",
        stdout(&first),
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout(&first)
            .contains("import: 3 applied, 1 already applied before, 0 declined, 0 refused"),
        "{}",
        stdout(&first)
    );
    // An export from before close-outs were exported (no `closeouts`) imports as it did.
    assert!(
        stdout(&first).contains("close-outs: 0 recorded, 0 already recorded before, 0 refused"),
        "{}",
        stdout(&first)
    );
    // 1000 - 450 (sent before) - 400 (water) + 400 (voided) = 550; the unknown card owes 900.
    assert_eq!(l.balance(&funded).await, 550);
    assert_eq!(l.balance(&uid(2)).await, -900);
    let before = l.db_fingerprint();

    let second = l.admin(&["import", file]);
    assert!(second.status.success(), "{}", stdout(&second));
    assert!(
        stdout(&second)
            .contains("import: 0 applied, 4 already applied before, 0 declined, 0 refused"),
        "{}",
        stdout(&second)
    );
    assert_eq!(
        l.db_fingerprint(),
        before,
        "a second import changed the books"
    );
    l.assert_audit_ok();
}

async fn refused_operations_are_listed_and_the_rest_applied(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    let mut bad = order_body(&card, 2, &[("beer-05", 1, 450)], "offline");
    bad["total_cents"] = json!(1);
    let ops = vec![
        tagged(
            "order",
            &order_body(&card, 1, &[("beer-05", 1, 450)], "offline"),
        ),
        tagged("order", &bad),
        tagged("recharge", &recharge_body(&card, 3, 500, "cash", "offline")),
    ];
    let path = write(&l, "x.json", &export("bar-1", ops));
    let out = l.admin(&["import", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("REFUSED: operation 2"), "{text}");
    assert!(text.contains("400 INVALID_REQUEST"), "{text}");
    // A bar terminal cannot top up: refused like its own request would be.
    assert!(
        text.contains("REFUSED: operation 3") && text.contains("403 FORBIDDEN"),
        "{text}"
    );
    assert!(text.contains("import: 1 applied"), "{text}");
    assert_eq!(l.balance(&card).await, -450);
    l.assert_audit_ok();
}

async fn a_file_that_is_not_an_export_changes_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let before = l.db_fingerprint();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"not json".to_vec(), "not a journal export"),
        (
            "wrong format",
            serde_json::to_vec(
                &json!({"format": "other", "version": 1, "terminal": "bar-1",
                "exported_at": "x", "operations": []}),
            )
            .unwrap(),
            "expected \"cashless-journal-export\"",
        ),
        (
            "unknown terminal",
            serde_json::to_vec(&export("bar-99", vec![])).unwrap(),
            "terminal \"bar-99\" is not registered",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = l
            .dir
            .path()
            .join(format!("{}.json", name.replace(' ', "-")));
        std::fs::write(&path, bytes).unwrap();
        let out = l.admin(&["import", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "{name}: the error must name the file: {stderr}"
        );
    }
    let missing = l.admin(&["import", "/nonexistent/export.json"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(l.db_fingerprint(), before);
}

/// A close-out of a shift of `staff_id` as `POST /v1/shifts` takes it, fresh key.
fn closeout_body(staff_id: &str) -> Value {
    json!({
        "client_request_id": new_id(),
        "staff_id": staff_id,
        "opened_at": "2026-07-01T18:00:00Z",
        "closed_at": "2026-07-02T02:00:00Z",
        "cash_cents": 0,
        "card_cents": 0,
        "count": 0,
        "counted_cash_cents": 0,
    })
}

/// The rows of `cashless ledger shift list` (without its header).
fn shift_rows(l: &Ledger) -> Vec<String> {
    let out = l.admin(&["shift", "list"]);
    assert!(out.status.success(), "{}", stdout(&out));
    stdout(&out).lines().skip(1).map(str::to_owned).collect()
}

async fn a_checkpoints_pending_closeout_is_exported_and_recorded_once(backend: Backend) {
    use cashless::domain::{Cents, ClientRequestId, StaffId};
    use cashless::terminal::journal::Journal;
    let l = Ledger::start_on(backend).await;
    // A checkpoint closed a shift offline and never came back to send it.
    let journal = l.dir.path().join("cp-1.journal");
    let crid = ClientRequestId::new_random();
    {
        let mut j = Journal::open(&journal).unwrap();
        j.close_shift(
            crid,
            &StaffId::parse(CASH_STAFF).unwrap(),
            Cents::new(0),
            chrono::Utc::now(),
        )
        .unwrap();
    }
    let path = l.dir.path().join("cp-1.json");
    let counts = cashless::terminal::export::export(&journal, "cp-1", &path).unwrap();
    assert_eq!(counts, (0, 1));
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(doc["closeouts"][0]["client_request_id"], crid.to_string());
    let file = path.to_str().unwrap();

    let first = l.admin(&["import", file]);
    assert!(first.status.success(), "{}", stdout(&first));
    assert!(
        stdout(&first).contains("close-outs: 1 recorded, 0 already recorded before, 0 refused"),
        "{}",
        stdout(&first)
    );
    let rows = shift_rows(&l);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].contains("cp-1") && rows[0].contains(CASH_STAFF),
        "{rows:?}"
    );
    let before = l.db_fingerprint();

    let again = l.admin(&["import", file]);
    assert!(again.status.success(), "{}", stdout(&again));
    assert!(
        stdout(&again).contains("close-outs: 0 recorded, 1 already recorded before, 0 refused"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        l.db_fingerprint(),
        before,
        "a second import changed the books"
    );
    assert_eq!(shift_rows(&l).len(), 1);
    l.assert_audit_ok();
}

async fn refused_closeouts_are_listed_and_the_rest_recorded(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    let card = uid(1);
    let good = closeout_body(CASH_STAFF);
    let unknown_staff = closeout_body("nobody");
    let mut backwards = closeout_body(CASH_STAFF);
    backwards["closed_at"] = json!("2026-07-01T17:00:00Z");
    let mut doc = export(
        "cp-1",
        vec![tagged(
            "recharge",
            &recharge_body(&card, 1, 500, "cash", "offline"),
        )],
    );
    doc["closeouts"] = json!([unknown_staff, good, backwards]);
    let path = write(&l, "cp-1.json", &doc);
    let out = l.admin(&["import", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "REFUSED: close-out 1 ({}): 403",
            unknown_staff["client_request_id"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(
        text.contains("REFUSED: close-out 3") && text.contains("400 INVALID_REQUEST"),
        "{text}"
    );
    assert!(text.contains("import: 1 applied"), "{text}");
    assert!(
        text.contains("close-outs: 1 recorded, 0 already recorded before, 2 refused"),
        "{text}"
    );
    assert_eq!(l.balance(&card).await, 500);
    assert_eq!(l.count("shift_closeouts"), 1);
    l.assert_audit_ok();
}

// Every test above that takes a `Backend` runs on both: `sqlite::NAME`, `postgres::NAME`.
on_both_backends! {
    an_export_is_applied_once_however_often_it_is_imported,
    refused_operations_are_listed_and_the_rest_applied,
    a_file_that_is_not_an_export_changes_nothing,
    a_checkpoints_pending_closeout_is_exported_and_recorded_once,
    refused_closeouts_are_listed_and_the_rest_recorded,
}
