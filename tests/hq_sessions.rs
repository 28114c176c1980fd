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

async fn five_wrong_passwords_lock_the_operator(backend: Backend) {
    let l = Ledger::start_on(backend).await;
    l.add_operator("dora", "desk", PASSWORD);
    let hq = Hq::new(&l.base_url);
    for attempt in 1..=4 {
        let resp = hq.login("dora", "wrong password").await;
        assert_eq!(resp.status(), 401, "attempt {attempt}");
        assert!(
            resp.text()
                .await
                .unwrap()
                .contains("Wrong name or password.")
        );
    }
    let fifth = hq.login("dora", "wrong password").await;
    assert_eq!(fifth.status(), 429);
    assert!(fifth.text().await.unwrap().contains("locked until"));
    // Locked: even the right password is refused, and no session is opened.
    let right = hq.login("dora", PASSWORD).await;
    assert_eq!(right.status(), 429);
    assert!(set_cookie(&right, "cashless_hq").is_none());
    assert_eq!(l.count("operator_sessions"), 0);
    let list = assert_success("list", &l.admin(&["operator", "list"]));
    let row = list.lines().find(|r| r.starts_with("dora")).unwrap();
    assert!(row.contains(" 5 "), "{row}");
    // An unknown name answers like a wrong password (and locks nothing).
    let unknown = hq.login("nobody", PASSWORD).await;
    assert_eq!(unknown.status(), 401);
    // A new password lifts the lock.
    assert_success(
        "password",
        &l.admin_with_stdin(
            &["operator", "password", "--name", "dora"],
            "another long password\n",
        ),
    );
    hq.session("dora", "another long password").await;
    let list = assert_success("list", &l.admin(&["operator", "list"]));
    let row = list.lines().find(|r| r.starts_with("dora")).unwrap();
    assert!(row.contains(" 0 ") && row.contains(" - "), "{row}");
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

on_both_backends! {
    five_wrong_passwords_lock_the_operator,
    sessions_live_in_the_database,
    operator_commands_refuse_bad_input_and_change_nothing,
}
