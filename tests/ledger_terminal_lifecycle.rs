//! Stolen, lost and re-keyed terminals (issue 14): `cashless ledger terminal list | revoke |
//! rotate-token`, on both backends and with a real terminal.
//!
//! A revoked or rotated token is refused by every ledger process in every request that
//! arrives after the command returns: authentication reads the database on every request, so there is no cache to wait
//! out (tested with two `serve` processes on one PostgreSQL database, each having just let
//! the token in). A revoked terminal gets no new token. What a revoked terminal journaled
//! and never sent stays in its journal (its sync rounds get 401; nothing is dropped),
//! and an operator brings it in with `terminal export` and `ledger import`. Every change is
//! in the audit log, never a token; bad input changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::terminal::*;
use common::*;
use serde_json::json;

/// `GET /v1/terminals/me` with `token` at the ledger process at `base`: its status.
async fn me_status(l: &Ledger, base: &str, token: &str) -> u16 {
    let resp = l
        .client
        .get(format!("{base}/v1/terminals/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// The card's balance, read with the checkpoint's token (never revoked or rotated here).
async fn balance(l: &Ledger, uid: &str) -> i64 {
    let resp = l
        .get(&format!("/v1/cards/{uid}"), Some(&l.checkpoint_token))
        .await;
    resp.assert_status(200);
    resp.body["balance_cents"].as_i64().unwrap()
}

/// The row of `terminal list` for `name`.
fn listed(l: &Ledger, name: &str) -> String {
    let list = assert_success("list", &l.admin(&["terminal", "list"]));
    assert!(list.starts_with("TERMINAL "), "{list}");
    list.lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {list}"))
        .to_owned()
}

async fn revoked_and_rotated_tokens_are_refused_at_once(backend: Backend) {
    let mut l = Ledger::start_on(backend).await;
    // PostgreSQL serves several ledger processes from one database; SQLite, one.
    let other = match backend {
        Backend::Postgres => Some(l.spawn_another_server().await),
        Backend::Sqlite => None,
    };
    let mut bases = vec![l.base_url.clone()];
    bases.extend(other.as_ref().map(|o| o.base_url.clone()));
    l.fund(&uid(1), 1_000).await;
    let row = listed(&l, "bar-1");
    assert!(
        row.contains(" bar ") && row.contains("Main Bar") && row.contains(" yes "),
        "{row}"
    );

    // Every process has just let bar-1 in (a cache, if there were one, would hold it).
    for base in &bases {
        assert_eq!(me_status(&l, base, &l.bar_token).await, 200);
    }
    let out = assert_success(
        "revoke",
        &l.admin(&["terminal", "revoke", "--name", "bar-1"]),
    );
    assert!(out.contains("bar-1 revoked"), "{out}");
    // At once, on every process: no wait, no retry.
    for base in &bases {
        assert_eq!(me_status(&l, base, &l.bar_token).await, 401, "{base}");
        let order = order_body(
            &uid(1),
            l.seq(&l.bar_token),
            &[("water", 1, 200)],
            "offline",
        );
        l.post_at(base, "/v1/orders", &l.bar_token, &order)
            .await
            .assert_error(401, "UNAUTHORIZED");
        // The other terminals carry on.
        assert_eq!(me_status(&l, base, &l.bar2_token).await, 200);
    }
    assert_eq!(balance(&l, &uid(1)).await, 1_000, "a revoked token sold");
    assert!(listed(&l, "bar-1").contains(" revoked "));
    // Revoking again succeeds and changes nothing; a revoked terminal gets no new token.
    let before = l.db_fingerprint();
    assert_success(
        "revoke again",
        &l.admin(&["terminal", "revoke", "--name", "bar-1"]),
    );
    assert_eq!(l.db_fingerprint(), before, "revoking twice wrote something");
    assert_refused_without_change(
        &l,
        &[
            (
                vec!["terminal", "rotate-token", "--name", "bar-1"],
                1,
                "revoked for good",
            ),
            (
                vec!["terminal", "revoke", "--name", "bar-9"],
                1,
                "\"bar-9\" is unknown",
            ),
            (
                vec!["terminal", "rotate-token", "--name", "bar-9"],
                1,
                "\"bar-9\" is unknown",
            ),
            (vec!["terminal", "revoke"], 2, "--name"),
            (vec!["terminal", "revoke", "--name", ""], 1, "--name"),
            (vec!["terminal", "rotate-token", "--bogus"], 2, "--bogus"),
        ],
    );

    // A new token for bar-2: the old one is refused at once everywhere, the new one works.
    let out = l.admin(&["terminal", "rotate-token", "--name", "bar-2"]);
    let new_token = token_from(&out);
    assert_ne!(new_token, l.bar2_token);
    for base in &bases {
        assert_eq!(me_status(&l, base, &l.bar2_token).await, 401, "{base}");
        assert_eq!(me_status(&l, base, &new_token).await, 200, "{base}");
    }
    let order = order_body(&uid(1), 1, &[("water", 1, 200)], "online");
    l.post_at(bases.last().unwrap(), "/v1/orders", &new_token, &order)
        .await
        .assert_status(201);
    assert_eq!(balance(&l, &uid(1)).await, 800);

    // Audited with the terminal's name, never a token.
    let logged = l.query_json(
        "SELECT operation, details FROM app_transaction_log
         WHERE actor = 'admin' AND operation IN ('terminal_revoke', 'terminal_rotate_token')
         ORDER BY log_id",
    );
    let ops: Vec<(String, String)> = logged
        .iter()
        .map(|r| {
            let details = match &r["details"] {
                serde_json::Value::String(s) => serde_json::from_str(s).unwrap(),
                other => other.clone(),
            };
            (
                r["operation"].as_str().unwrap().to_owned(),
                details["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("terminal_revoke".to_owned(), "bar-1".to_owned()),
            ("terminal_rotate_token".to_owned(), "bar-2".to_owned()),
        ]
    );
    let everything = format!("{logged:?}");
    for token in [&l.bar_token, &l.bar2_token, &new_token] {
        assert!(!everything.contains(token.as_str()), "a token was logged");
        assert!(
            !l.server_log().contains(token.as_str()),
            "a token was logged"
        );
    }
    drop(other);
    l.assert_audit_ok();
}

on_both_backends! {
    revoked_and_rotated_tokens_are_refused_at_once,
}

/// A bar terminal sells online, is revoked (a stolen device), sells on offline, which its
/// journal keeps: its replays are refused, never dropped. The device comes back to the
/// operator, who exports its journal and imports it: the offline sale lands once, as it was
/// sold.
#[tokio::test]
async fn a_revoked_terminals_journal_is_brought_in_by_an_operator() {
    let l = Ledger::start().await;
    let card = uid(3);
    l.fund(&card, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Terminal::start(
        dir.path(),
        l.base_url.trim_start_matches("http://"),
        &l.bar_token,
    )
    .await;
    ready_to_sell(&mut t).await;
    let sold = t.sell("water", 1, &card).await;
    assert_eq!(sold["status"], "approved_online", "{sold}");
    assert_eq!(balance(&l, &card).await, 1_800);

    assert_success(
        "revoke",
        &l.admin(&["terminal", "revoke", "--name", "bar-1"]),
    );
    // The terminal's next sync round is refused: it goes offline and sells from its replica.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        t.send(json!({"cmd": "status"})).await;
        if t.expect("status").await["online"] == false {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still online");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let offline = t.sell("water", 2, &card).await;
    assert_eq!(offline["status"], "approved_offline", "{offline}");
    // Its sync rounds are refused (401): the sale waits in the journal, never dropped.
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    t.send(json!({"cmd": "status"})).await;
    let status = t.expect("status").await;
    assert_eq!(
        (status["pending"].as_u64(), status["rejected"].as_u64()),
        (Some(1), Some(0)),
        "{status}"
    );
    assert_eq!(balance(&l, &card).await, 1_800);
    t.quit().await;

    // The operator exports the journal on the device and imports it at the ledger.
    let export = dir.path().join("bar-1-export.json");
    let out = std::process::Command::new(BIN)
        .args(["terminal", "export", "--config"])
        .arg(dir.path().join("terminal.toml"))
        .arg("--out")
        .arg(&export)
        .output()
        .unwrap();
    assert!(assert_success("export", &out).contains("1 operations and 0 close-outs exported"));
    let file = export.to_str().unwrap();
    let first = assert_success("import", &l.admin(&["import", file]));
    assert_eq!(balance(&l, &card).await, 1_400, "{first}");
    let before = l.db_fingerprint();
    assert_success("import again", &l.admin(&["import", file]));
    assert_eq!(
        l.db_fingerprint(),
        before,
        "a second import changed the books"
    );
    l.assert_audit_ok();
}
