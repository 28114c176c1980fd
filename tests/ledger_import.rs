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

#[tokio::test]
async fn an_export_is_applied_once_however_often_it_is_imported() {
    let l = Ledger::start().await;
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

#[tokio::test]
async fn refused_operations_are_listed_and_the_rest_applied() {
    let l = Ledger::start().await;
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

#[tokio::test]
async fn a_file_that_is_not_an_export_changes_nothing() {
    let l = Ledger::start().await;
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
