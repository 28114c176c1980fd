//! Headquarters operators and sessions over HTTP (issue 15), on both backends: the lockout
//! after five wrong passwords, sessions kept in the database (they survive a restart and
//! work on another ledger process), sessions ended by disabling an operator, the cookies'
//! flags and the pages' security headers, and `ledger operator` refusing bad input.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

const PASSWORD: &str = "a long password";

/// A browser-less client of the pages: cookies by hand, no redirects followed.
struct Hq {
    http: reqwest::Client,
    base: String,
}

/// `name=value` of the cookie `name` among a response's `Set-Cookie` headers, with the
/// header's whole text.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<(String, String)> {
    resp.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let text = v.to_str().ok()?;
        let pair = text.split(';').next()?;
        let (k, value) = pair.split_once('=')?;
        (k == name).then(|| (value.to_owned(), text.to_owned()))
    })
}

impl Hq {
    fn new(base: &str) -> Hq {
        Hq {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    /// Logs in; the response to the form's POST.
    async fn login(&self, name: &str, password: &str) -> reqwest::Response {
        hq_login(&self.base, name, password).await
    }

    /// Logs in and returns the session cookie's value.
    async fn session(&self, name: &str, password: &str) -> String {
        let resp = self.login(name, password).await;
        assert_eq!(resp.status(), 303, "{name} could not log in");
        set_cookie(&resp, "cashless_hq").unwrap().0
    }

    async fn get(&self, path: &str, session: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, format!("cashless_hq={session}"))
            .send()
            .await
            .unwrap()
    }
}

fn is_login_redirect(resp: &reqwest::Response) -> bool {
    resp.status() == 303 && resp.headers()[LOCATION] == "/hq/login"
}

/// `operator list`'s `FAILED` and `LOCKED_UNTIL` for `name`.
fn failures(l: &Ledger, name: &str) -> (String, String) {
    let list = assert_success("list", &l.admin(&["operator", "list"]));
    let row = list
        .lines()
        .find(|r| r.split_whitespace().next() == Some(name))
        .unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    (cells[3].to_owned(), cells[4].to_owned())
}

async fn five_wrong_passwords_lock_the_operator(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.add_operator("dora", "desk", PASSWORD);
    let hq = Hq::new(&l.base_url);
    let refused = |body: &str| body.contains("Wrong name or password. After five wrong passwords");
    for attempt in 1..=5 {
        let resp = hq.login("dora", "wrong password").await;
        assert_eq!(resp.status(), 401, "attempt {attempt}");
        assert!(refused(&resp.text().await.unwrap()));
    }
    // Locked: even the right password is refused, with the same answer as a wrong one (it
    // does not tell which names exist), and no session is opened.
    let right = hq.login("dora", PASSWORD).await;
    assert_eq!(right.status(), 401);
    assert!(set_cookie(&right, "cashless_hq").is_none());
    assert!(refused(&right.text().await.unwrap()));
    assert_eq!(l.count("operator_sessions"), 0);
    let (failed, locked_until) = failures(&l, "dora");
    assert_eq!(failed, "5");
    assert_ne!(locked_until, "-");
    // An unknown name answers like a wrong password.
    let unknown = hq.login("nobody", PASSWORD).await;
    assert_eq!(unknown.status(), 401);
    assert!(refused(&unknown.text().await.unwrap()));
    // A new password lifts the lock.
    assert_success(
        "password",
        &l.admin_with_stdin(
            &["operator", "password", "--name", "dora"],
            "another long password\n",
        ),
    );
    hq.session("dora", "another long password").await;
    assert_eq!(failures(&l, "dora"), ("0".to_owned(), "-".to_owned()));
}

async fn guesses_at_once_check_at_most_five_passwords(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.add_operator("dora", "desk", PASSWORD);
    let hq = Hq::new(&l.base_url);
    let guesses = (0..12).map(|i| {
        let hq = &hq;
        async move {
            hq.login("dora", &format!("guess number {i}"))
                .await
                .status()
        }
    });
    let answers = futures_util::future::join_all(guesses).await;
    // Refused, or (at most four password checks run at once) told to come back: 503.
    assert!(
        answers.iter().all(|s| *s == 401 || *s == 503),
        "{answers:?}"
    );
    assert!(
        answers.iter().filter(|s| **s == 401).count() >= 5,
        "{answers:?}"
    );
    // Counted one by one: the fifth locked the operator, the rest were not even checked.
    let (failed, locked_until) = failures(&l, "dora");
    assert_eq!(failed, "5");
    assert_ne!(locked_until, "-");
    assert_eq!(hq.login("dora", PASSWORD).await.status(), 401);

    // A lock that has ended starts the count again: one wrong password does not lock.
    l.execute("UPDATE operators SET locked_until = '2020-01-01T00:00:00.000Z' WHERE name = 'dora'");
    assert_eq!(hq.login("dora", "wrong again").await.status(), 401);
    assert_eq!(failures(&l, "dora"), ("1".to_owned(), "-".to_owned()));
    hq.session("dora", PASSWORD).await;
}

async fn sessions_live_in_the_database(backend: Backend) {
    let mut l = Ledger::start_on(backend).await;
    l.add_operator("vic", "viewer", PASSWORD);
    let hq = Hq::new(&l.base_url);
    let resp = hq.login("vic", PASSWORD).await;
    assert_eq!(resp.status(), 303);
    let (session, header) = set_cookie(&resp, "cashless_hq").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/hq"] {
        assert!(header.contains(flag), "{header}");
    }
    assert!(!header.contains("Secure"), "plain HTTP: {header}");
    // Only the cookie's hash is stored.
    assert_eq!(
        l.query_i64(&format!(
            "SELECT COUNT(*) FROM operator_sessions WHERE session_sha256 = '{session}'"
        )),
        0
    );
    assert_eq!(l.count("operator_sessions"), 1);
    let page = hq.get("/hq/fleet", &session).await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-store");

    // Another ledger process on the same database (PostgreSQL), or the same one restarted.
    match backend {
        Backend::Postgres => {
            let other = l.spawn_another_server().await;
            let there = Hq::new(&other.base_url);
            assert_eq!(there.get("/hq/fleet", &session).await.status(), 200);
        }
        Backend::Sqlite => {
            l.restart().await;
            let again = Hq::new(&l.base_url);
            assert_eq!(again.get("/hq/fleet", &session).await.status(), 200);
        }
    }
    let hq = Hq::new(&l.base_url);
    // A made-up or malformed cookie is no session.
    for fake in [auth_like_token(), "x".to_owned(), String::new()] {
        assert!(is_login_redirect(&hq.get("/hq/fleet", &fake).await));
    }
    // Disabling the operator ends the session at once.
    assert_success(
        "disable",
        &l.admin(&["operator", "disable", "--name", "vic"]),
    );
    assert!(is_login_redirect(&hq.get("/hq/fleet", &session).await));
    assert_eq!(hq.login("vic", PASSWORD).await.status(), 401);
    // Unknown pages are an HTML 404 of the pages, not the API's JSON.
    let missing = hq.get("/hq/nowhere", &session).await;
    assert_eq!(missing.status(), 404);
    assert!(
        missing.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

fn auth_like_token() -> String {
    "ab".repeat(32)
}

async fn operator_commands_refuse_bad_input_and_change_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.add_operator("ada", "admin", PASSWORD);
    let before = l.db_fingerprint_of(&["operators", "app_transaction_log"]);
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &[
                "operator",
                "add",
                "--name",
                "Ada Lovelace",
                "--role",
                "viewer",
            ],
            "a long enough password\n",
            "--name",
        ),
        (
            &["operator", "add", "--name", "bob", "--role", "viewer"],
            "short\n",
            "10 to 128 characters",
        ),
        (
            &["operator", "add", "--name", "ada", "--role", "desk"],
            "a long enough password\n",
            "exists already",
        ),
        (
            &["operator", "disable", "--name", "nobody"],
            "",
            "no operator named",
        ),
    ];
    for (args, stdin, says) in cases {
        let out = l.admin_with_stdin(args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let out = l.admin(&["operator", "add", "--name", "bob", "--role", "boss"]);
    assert!(!out.status.success());
    assert_eq!(
        l.db_fingerprint_of(&["operators", "app_transaction_log"]),
        before
    );
    // What succeeded is audited as the command line's.
    assert_eq!(
        l.query_i64(
            "SELECT COUNT(*) FROM app_transaction_log
             WHERE actor = 'admin' AND operation = 'operator_add'"
        ),
        1
    );
}

async fn reports_are_pages_and_the_same_csv_as_the_command(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.add_operator("vic", "viewer", PASSWORD);
    let card = uid(3);
    l.fund(&card, 2_000).await;
    let order = order_body(
        &card,
        l.seq(&l.bar_token),
        &[("beer-05", 2, BEER_CENTS)],
        "online",
    );
    l.post("/v1/orders", &l.bar_token, &order)
        .await
        .assert_status(201);
    let session = l.hq_session("vic", PASSWORD).await;
    let hq = Hq::new(&l.base_url);
    let page = hq
        .get("/hq/reports?section=sales_by_point_of_sale", &session)
        .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Sales by point of sale") && html.contains("Main Bar"));
    assert!(html.contains("9.00"), "two beers: {html}");
    // Every section is a page.
    for section in [
        "deposits",
        "vouchers",
        "top_ups",
        "cashier",
        "terminal_sync",
        "cards",
    ] {
        let page = hq
            .get(&format!("/hq/reports?section={section}"), &session)
            .await;
        assert_eq!(page.status(), 200, "{section}");
    }
    // The CSV is the command's, byte for byte.
    for section in ["sales_by_point_of_sale", "top_ups"] {
        let csv = hq
            .get(
                &format!("/hq/reports?section={section}&format=csv"),
                &session,
            )
            .await;
        assert_eq!(csv.status(), 200);
        assert!(
            csv.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        assert_eq!(
            csv.headers()["content-disposition"],
            format!("attachment; filename=\"cashless-{section}.csv\"").as_str()
        );
        let body = csv.text().await.unwrap();
        let command = assert_success(
            "report",
            &l.admin(&["report", "--format", "csv", "--section", section]),
        );
        assert_eq!(body, command, "{section}");
    }
    // Bad parameters: a message on the page, status 400.
    for (query, says) in [
        ("section=nope", "There is no report"),
        ("section=cards&from=yesterday", "From:"),
        (
            "section=cards&from=2026-07-02&to=2026-07-01",
            "must be before",
        ),
        ("section=cards&format=pdf", "No format"),
    ] {
        let page = hq.get(&format!("/hq/reports?{query}"), &session).await;
        assert_eq!(page.status(), 400, "{query}");
        let html = page.text().await.unwrap();
        assert!(html.contains(says), "{query}: {html}");
    }
    // Without a session: the login page.
    assert!(is_login_redirect(
        &hq.get("/hq/reports?section=cards", "").await
    ));
}

async fn shifts_and_stripe_events_needing_a_person_are_marked(backend: Backend) {
    const SECRET: &str = "whsec_hq_test";
    let l = Ledger::start_with_config_on(
        backend,
        &format!("[stripe]\nwebhook_secrets = [\"{SECRET}\"]\n"),
    )
    .await;
    l.add_operator("vic", "viewer", PASSWORD);
    let session = l.hq_session("vic", PASSWORD).await;
    let hq = Hq::new(&l.base_url);
    let page = |html: &str, what: &str| assert!(html.contains(what), "{what} not in {html}");

    let empty = hq.get("/hq/shifts", &session).await.text().await.unwrap();
    page(&empty, "No shift has been closed yet.");
    // A drawer 10.00 short: the close-out is marked.
    l.topup(&uid(4), 5_000).await.assert_status(201);
    let closeout = serde_json::json!({
        "client_request_id": new_id(), "staff_id": CASH_STAFF,
        "opened_at": "2020-01-01T00:00:00Z", "closed_at": now_rfc3339(),
        "cash_cents": 5_000, "card_cents": 0, "count": 1, "counted_cash_cents": 4_000
    });
    l.post("/v1/shifts", &l.checkpoint_token, &closeout)
        .await
        .assert_status(201);
    let shifts = hq.get("/hq/shifts", &session).await;
    assert_eq!(shifts.status(), 200);
    let html = shifts.text().await.unwrap();
    page(&html, "1 close-outs, 1 with a difference");
    page(&html, "-10.00");
    page(&html, "class=\"attention\"");

    // A refund whose credit never arrived needs a person.
    let stripe = hq.get("/hq/stripe", &session).await.text().await.unwrap();
    page(&stripe, "id=\"none\"");
    let refund = serde_json::json!({
        "id": "evt_hq_refund", "object": "event", "api_version": "2024-06-20",
        "created": chrono::Utc::now().timestamp(), "livemode": false, "pending_webhooks": 1,
        "type": "charge.refunded",
        "data": {"object": {
            "id": "ch_hq", "object": "charge", "amount": 2000, "amount_captured": 2000,
            "amount_refunded": 2000, "captured": true, "currency": "eur", "paid": true,
            "payment_intent": "pi_hq_unknown", "refunded": true, "status": "succeeded"
        }}
    });
    deliver_stripe_event(&l, SECRET, &refund).await;
    let stripe = hq.get("/hq/stripe", &session).await.text().await.unwrap();
    page(&stripe, "evt_hq_refund");
    page(&stripe, "refund_waiting");
    let all = hq.get("/hq/stripe?all=yes", &session).await;
    assert_eq!(all.status(), 200);
    page(&all.text().await.unwrap(), "evt_hq_refund");
    let bad = hq.get("/hq/stripe?all=maybe", &session).await;
    assert_eq!(bad.status(), 400);
}

async fn forms_without_their_token_or_role_change_nothing(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.add_operator("dora", "desk", PASSWORD);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |cookie: String, csrf: String| {
        http.post(format!("{}/hq/login", l.base_url))
            .header(COOKIE, cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("name", "dora"),
                ("password", PASSWORD),
            ])
            .send()
    };
    // The login form's token: missing from the cookie, or not the cookie's.
    let token = "ab".repeat(32);
    for (cookie, csrf) in [
        (String::new(), token.clone()),
        (format!("cashless_hq_login={token}"), "cd".repeat(32)),
        (format!("cashless_hq_login={token}"), String::new()),
    ] {
        let resp = login(cookie, csrf).await.unwrap();
        assert_eq!(resp.status(), 403);
        assert!(set_cookie(&resp, "cashless_hq").is_none());
    }
    assert_eq!(l.count("operator_sessions"), 0);

    // A desk operator's valid session and token still may not manage operators.
    let session = l.hq_session("dora", PASSWORD).await;
    let page = Hq::new(&l.base_url).get("/hq/fleet", &session).await;
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    l.fund(&uid(5), 100).await;
    let before = l.db_fingerprint_of(&["operators", "operator_sessions", "app_transaction_log"]);
    for (path, form) in [
        (
            "/hq/operators",
            vec![
                ("csrf", csrf.as_str()),
                ("name", "eve"),
                ("role", "admin"),
                ("password", PASSWORD),
            ],
        ),
        ("/hq/operators/dora/disable", vec![("csrf", csrf.as_str())]),
    ] {
        let resp = http
            .post(format!("{}{path}", l.base_url))
            .header(COOKIE, format!("cashless_hq={session}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
    }
    // A block without the session's token.
    let resp = http
        .post(format!("{}/hq/cards/{}/block", l.base_url, uid(5)))
        .header(COOKIE, format!("cashless_hq={session}"))
        .form(&[("csrf", "ef".repeat(32))])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(l.card(&uid(5)).await.body["status"], "active");
    assert_eq!(
        l.db_fingerprint_of(&["operators", "operator_sessions", "app_transaction_log"]),
        before
    );
}

on_both_backends! {
    forms_without_their_token_or_role_change_nothing,
    shifts_and_stripe_events_needing_a_person_are_marked,
    guesses_at_once_check_at_most_five_passwords,
    reports_are_pages_and_the_same_csv_as_the_command,
    five_wrong_passwords_lock_the_operator,
    sessions_live_in_the_database,
    operator_commands_refuse_bad_input_and_change_nothing,
}
