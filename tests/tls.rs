//! HTTPS between terminals and ledger (issue 14), with certificates made here (rcgen): a
//! festival CA, a server certificate it signed for 127.0.0.1 and localhost, an expired one it
//! signed too, and another CA that signed nothing the ledger shows.
//!
//! The real ledger serves HTTPS on a seeded SQLite database (`[server] tls_cert_file`,
//! `tls_key_file`); the terminal's client trusts the festival CA (`[ledger] ca_file`), alone
//! when pinned (`pin_ca`). The right CA is accepted; a wrong CA, the system's roots alone,
//! and an expired certificate are refused with a message that says what to check; the real
//! terminal sells online through HTTPS, and with the wrong CA sells offline and logs why.
//! Headquarters' cookies are `Secure` over HTTPS (issue 15), and not over plain HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use cashless::terminal::client::{ClientError, LedgerClient, LedgerTls};
use common::terminal::*;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for 127.0.0.1 and localhost signed by `ca`, expired when `expired`;
/// written to `dir` as `NAME.pem` and `NAME.key`.
fn server_cert(dir: &Path, name: &str, ca: &Ca, expired: bool) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// `cashless ledger serve` over HTTPS on the seeded database of `l`.
struct HttpsLedger {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    url: String,
}

impl Drop for HttpsLedger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_ledger_config(dir: &Path, name: &str, server: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n{server}"),
    )
    .unwrap();
    path
}

/// Runs `cashless ledger --config CONFIG serve` on `l`'s database.
fn ledger_serve(l: &Ledger, config: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["ledger", "--config", config.to_str().unwrap(), "--database"])
        .arg(format!("sqlite:{}", l.db_path().display()))
        .arg("serve")
        .env_remove("CASHLESS_DATABASE")
        .env_remove("CASHLESS_LISTEN")
        .env("RUST_LOG", "warn");
    cmd
}

fn serve_https(l: &Ledger, cert: &Path, key: &Path) -> HttpsLedger {
    let config = write_ledger_config(
        l.dir.path(),
        &format!("tls-{}", file_stem(cert)),
        &format!("tls_cert_file = {:?}\ntls_key_file = {:?}\n", cert, key),
    );
    let mut child = ledger_serve(l, &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no `listening on` line: {line:?}"))
        .to_owned();
    HttpsLedger {
        child,
        url: format!("https://{addr}"),
    }
}

fn file_stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

fn trust(ca: &Ca, pin_ca: bool) -> LedgerTls {
    LedgerTls {
        ca_file: None,
        ca_pem: ca.pem.clone().into_bytes(),
        pin_ca,
    }
}

/// `GET /v1/terminals/me` through a client trusting `tls`.
async fn me(url: &str, token: &str, tls: &LedgerTls) -> Result<String, ClientError> {
    let client = LedgerClient::with_tls(url, token, 5_000, tls).unwrap();
    client.me().await.map(|me| me.name)
}

fn refused_because(result: Result<String, ClientError>, why: &str) -> String {
    match result {
        Err(ClientError::Unreachable(message)) => {
            assert!(message.contains(why), "{message}");
            assert!(
                message.contains("not trusted: check [ledger] ca_file"),
                "no hint in: {message}"
            );
            message
        }
        other => panic!("expected a refusal ({why}), got {other:?}"),
    }
}

#[tokio::test]
async fn the_festival_ca_is_trusted_and_a_wrong_ca_or_an_expired_certificate_refused() {
    let l = Ledger::start().await;
    let dir = tempfile::tempdir().unwrap();
    let festival = new_ca("Festival CA");
    let stranger = new_ca("Someone else's CA");
    let (cert, key) = server_cert(dir.path(), "ledger", &festival, false);
    let https = serve_https(&l, &cert, &key);

    // The festival's CA, pinned or beside the system's roots.
    for pinned in [true, false] {
        let name = me(&https.url, &l.bar_token, &trust(&festival, pinned)).await;
        assert_eq!(name.unwrap(), "bar-1", "pinned: {pinned}");
    }
    // A wrong CA, pinned or not, and the system's roots alone: refused, saying why.
    for pinned in [true, false] {
        refused_because(
            me(&https.url, &l.bar_token, &trust(&stranger, pinned)).await,
            "UnknownIssuer",
        );
    }
    refused_because(
        me(&https.url, &l.bar_token, &LedgerTls::default()).await,
        "UnknownIssuer",
    );
    // Plain HTTP to the HTTPS port gets no answer from the API.
    let plain = me(
        &https.url.replace("https://", "http://"),
        &l.bar_token,
        &LedgerTls::default(),
    )
    .await;
    assert!(plain.is_err(), "{plain:?}");

    // An expired certificate of the right CA.
    let (old_cert, old_key) = server_cert(dir.path(), "expired", &festival, true);
    let expired = serve_https(&l, &old_cert, &old_key);
    let message = refused_because(
        me(&expired.url, &l.bar_token, &trust(&festival, true)).await,
        "certificate expired",
    );
    assert!(message.contains("invalid peer certificate"), "{message}");
}

/// The `Set-Cookie` header that sets `name`, whole.
fn set_cookie_header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no cookie {name}"))
        .to_owned()
}

#[tokio::test]
async fn headquarters_cookies_are_secure_over_https() {
    let l = Ledger::start().await;
    l.add_operator("ana", "viewer", "a long password");
    let dir = tempfile::tempdir().unwrap();
    let festival = new_ca("Festival CA");
    let (cert, key) = server_cert(dir.path(), "ledger", &festival, false);
    let https = serve_https(&l, &cert, &key);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(festival.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    // The login form's cookie, then the session's: both Secure, HttpOnly, SameSite=Strict.
    let page = http
        .get(format!("{}/hq/login", https.url))
        .send()
        .await
        .unwrap();
    let login_cookie = set_cookie_header(&page, "cashless_hq_login");
    let login = hq_login_with(&http, &https.url, "ana", "a long password").await;
    assert_eq!(login.status(), 303);
    let session_cookie = set_cookie_header(&login, "cashless_hq");
    for cookie in [&login_cookie, &session_cookie] {
        for flag in ["; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/hq"] {
            assert!(cookie.contains(flag), "{flag} missing in {cookie}");
        }
    }
    // The session works over HTTPS.
    let value = session_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("cashless_hq=")
        .to_owned();
    let overview = http
        .get(format!("{}/hq/overview", https.url))
        .header(reqwest::header::COOKIE, format!("cashless_hq={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);

    // The same ledger over plain HTTP: cookies without Secure (they would never be sent).
    let plain = hq_login(&l.base_url, "ana", "a long password").await;
    let cookie = set_cookie_header(&plain, "cashless_hq");
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn a_real_terminal_sells_online_over_https_and_offline_with_the_wrong_ca() {
    let l = Ledger::start().await;
    l.fund(&uid(1), 5_000).await;
    let dir = tempfile::tempdir().unwrap();
    let festival = new_ca("Festival CA");
    let stranger = new_ca("Someone else's CA");
    let (cert, key) = server_cert(dir.path(), "ledger", &festival, false);
    let https = serve_https(&l, &cert, &key);
    let (festival_pem, stranger_pem) = (
        dir.path().join("festival-ca.pem"),
        dir.path().join("stranger-ca.pem"),
    );
    std::fs::write(&festival_pem, &festival.pem).unwrap();
    std::fs::write(&stranger_pem, &stranger.pem).unwrap();

    // One terminal: its CA file right, then wrong (the ledger's certificate no longer
    // chains to it), then right again; its journal and caches are kept throughout.
    let journal = dir.path().join("journal.db");
    let mut charged_cents = 0;
    for (run, ca_file, online) in [
        ("right", &festival_pem, true),
        ("wrong", &stranger_pem, false),
        ("right-again", &festival_pem, true),
    ] {
        let config = dir.path().join(format!("terminal-{run}.toml"));
        std::fs::write(
            &config,
            format!(
                "[terminal]\nname = \"bar-1\"\nkind = \"bar\"\njournal = {journal:?}\n\n\
                 [ledger]\nurl = \"{}\"\ntoken = \"{}\"\ntimeout_ms = 2000\nca_file = {ca_file:?}\npin_ca = true\n\n\
                 [sync]\ninterval_ms = 200\nbackoff_base_ms = 100\nbackoff_cap_ms = 400\n\n\
                 [reader]\nbackend = \"simulated\"\n",
                https.url, l.bar_token,
            ),
        )
        .unwrap();
        let log = dir.path().join(format!("terminal-{run}.log"));
        let mut t = Terminal::spawn_with(
            &config,
            &[("RUST_LOG", "info")],
            Stdio::from(std::fs::File::create(&log).unwrap()),
        );
        ready_to_sell(&mut t).await;
        let sold = t.sell("water", 1, &uid(1)).await;
        let expected = if online {
            "approved_online"
        } else {
            "approved_offline"
        };
        assert_eq!(sold["status"], expected, "{run} CA: {sold}");
        charged_cents += sold["total_cents"].as_i64().unwrap();
        if online {
            // Everything journaled reaches the ledger, the offline sale included.
            wait_until_synced(&mut t).await;
        } else {
            let log_text = std::fs::read_to_string(&log).unwrap();
            assert!(
                log_text.contains("invalid peer certificate: UnknownIssuer")
                    && log_text.contains("the ledger's TLS certificate is not trusted"),
                "the log says why the ledger is unreachable:\n{log_text}"
            );
        }
        t.quit().await;
    }
    assert_eq!(l.balance(&uid(1)).await, 5_000 - charged_cents);
    l.assert_audit_ok();
}

#[tokio::test]
async fn bad_tls_files_stop_the_ledger_naming_the_key_and_file() {
    let l = Ledger::start().await;
    let dir = l.dir.path();
    let festival = new_ca("Festival CA");
    let (cert, key) = server_cert(dir, "ledger", &festival, false);
    let (_, other_key) = server_cert(dir, "other", &festival, false);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.join("missing.pem");
    let cases = [
        (
            format!("tls_cert_file = {cert:?}\n"),
            1,
            "[server] tls_key_file",
        ),
        (
            format!("tls_key_file = {key:?}\n"),
            1,
            "[server] tls_cert_file",
        ),
        (
            format!("tls_cert_file = {missing:?}\ntls_key_file = {key:?}\n"),
            1,
            "[server] tls_cert_file",
        ),
        (
            format!("tls_cert_file = {garbage:?}\ntls_key_file = {key:?}\n"),
            1,
            "no certificate in it",
        ),
        (
            format!("tls_cert_file = {cert:?}\ntls_key_file = {garbage:?}\n"),
            1,
            "no private key in it",
        ),
        (
            format!("tls_cert_file = {cert:?}\ntls_key_file = {other_key:?}\n"),
            1,
            "does not go with the certificate",
        ),
    ];
    for (i, (server, code, message)) in cases.iter().enumerate() {
        let config = write_ledger_config(dir, &format!("bad-{i}"), server);
        let out = ledger_serve(&l, &config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{server}: {stderr}");
        assert!(stderr.contains(message), "{server}: {stderr}");
        assert!(
            stderr.contains(&format!("bad-{i}.toml")),
            "the file is named: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening on"),
            "{server}"
        );
    }
}
