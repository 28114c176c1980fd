//! The ledger's connection limits, against the real `cashless ledger serve` over real
//! sockets on loopback: a connection that never finishes its request head, a body sent a
//! byte at a time, an idle kept-alive connection, more connections than `max_connections`,
//! SIGTERM with such connections held, and bad `[server]` values.
//!
//! Each ledger runs with short timeouts in its config file so that the tests are quick. The
//! server's side of a connection is observed from the client (EOF or reset on read) and from
//! the kernel (`/proc/net/tcp`: a listening socket's receive queue is its accept queue).
//! Nothing sleeps to wait for a condition; the only pacing is the trickle of the slow body.
//!
//! The two tests that involve the database (a cut body writes nothing; SIGTERM's grace with a
//! request in flight) run on both backends (`sqlite::`, `postgres::`). The others are about
//! the HTTP server in front of the store, the same code whatever the backend, and run on
//! SQLite only; so does the refusal of bad `[server]` values, which checks that no SQLite
//! file is created.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{BIN, Backend, Ledger, recharge_body, uid, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections that each send half a request head in the first test (the figure).
const HALF_OPEN_CONNECTIONS: usize = 2000;
/// Descriptors the test process and the server need besides those connections.
const DESCRIPTORS_SPARE: u64 = 256;
/// How much later than its timeout the server may close a connection: timers on a loaded
/// 2-core machine that closes thousands of connections at once.
const CLOSE_MARGIN: Duration = Duration::from_secs(5);
/// How much earlier than its timeout a close may be observed: the client's clock starts a
/// little after the server's (the response still travelling, millisecond rounding).
const EARLY_SLACK: Duration = Duration::from_millis(50);
/// How long a request the server should answer may take.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// Half a request head: the request line and one header, without the blank line.
const HALF_HEAD: &[u8] = b"POST /v1/orders HTTP/1.1\r\nHost: ledger\r\nContent-Type: appl";

fn server_config(header_read_timeout_ms: u64, body_read_timeout_ms: u64, extra: &str) -> String {
    format!(
        "[server]\nheader_read_timeout_ms = {header_read_timeout_ms}\n\
         body_read_timeout_ms = {body_read_timeout_ms}\n{extra}"
    )
}

fn addr(l: &Ledger) -> SocketAddr {
    l.base_url
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("base_url {} is not http://ADDR", l.base_url))
}

/// Reads until the server closes the connection (EOF or reset); returns when that was seen,
/// or `None` if it is still open at `deadline`.
async fn server_closes(stream: &mut TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// [`server_closes`], panicking with `what` if the connection is still open at `deadline`.
async fn closed_by_server(stream: &mut TcpStream, deadline: Instant, what: &str) -> Instant {
    server_closes(stream, deadline)
        .await
        .unwrap_or_else(|| panic!("{what}: still open at the deadline"))
}

/// Reads one response with a `Content-Length` from a kept-alive connection; returns its
/// status line and body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
                if raw.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]);
                    let status = head.lines().next().unwrap_or_default().to_owned();
                    return (status, body.into_owned());
                }
            }
            let n = stream.read(&mut buf).await.expect("read the response");
            assert!(
                n > 0,
                "closed before a whole response: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(ANSWER_DEADLINE, read)
        .await
        .expect("no response in time")
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: ledger\r\n\r\n";

/// Lines of `/proc/net/tcp` (IPv4: the ledger listens on 127.0.0.1) for local `port`, as
/// (state, receive queue). State `0A` is LISTEN, `01` ESTABLISHED; a listening socket's
/// receive queue is the number of connections waiting to be accepted.
fn sockets_on_port(port: u16) -> Vec<(String, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.split(':').nth(1)?;
            if u16::from_str_radix(local_port, 16).ok()? != port {
                return None;
            }
            let rx_queue = fields.get(4)?.split(':').nth(1)?;
            Some((
                (*fields.get(3)?).to_owned(),
                u64::from_str_radix(rx_queue, 16).ok()?,
            ))
        })
        .collect()
}

/// Connections waiting in the ledger's accept queue.
fn accept_queue(port: u16) -> u64 {
    sockets_on_port(port)
        .iter()
        .filter(|(state, _)| state == "0A")
        .map(|(_, queue)| queue)
        .sum()
}

/// The server's ends of established connections (accepted or waiting to be).
fn server_connections(port: u16) -> usize {
    sockets_on_port(port)
        .iter()
        .filter(|(state, _)| state == "01")
        .count()
}

/// The soft limit on open files of this process (inherited by the server it starts).
fn open_files_soft_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let soft = line["Max open files".len()..]
        .split_whitespace()
        .next()
        .expect("a soft limit");
    soft.parse().unwrap_or(u64::MAX)
}

#[tokio::test]
async fn thousands_of_half_sent_heads_are_closed_by_the_header_timeout_and_others_are_served() {
    let needed = HALF_OPEN_CONNECTIONS as u64 + DESCRIPTORS_SPARE;
    let soft = open_files_soft_limit();
    assert!(
        soft >= needed,
        "this test opens {HALF_OPEN_CONNECTIONS} connections: it needs `ulimit -n` of at \
         least {needed} (the server inherits it), and it is {soft}"
    );
    // Long enough that every connection is open and sent before the first timeout, even on
    // a loaded machine (opening 2,000 took 3.3 s once while the whole suite ran).
    let header_timeout = Duration::from_millis(8000);
    let l = Ledger::start_with_config(&server_config(8000, 30_000, "")).await;
    let addr = addr(&l);

    let closed = Arc::new(AtomicUsize::new(0));
    let mut watchers = Vec::with_capacity(HALF_OPEN_CONNECTIONS);
    let opening = Instant::now();
    for i in 0..HALF_OPEN_CONNECTIONS {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let connected_at = Instant::now();
        stream.write_all(HALF_HEAD).await.expect("send half a head");
        let closed = Arc::clone(&closed);
        watchers.push(tokio::spawn(async move {
            let deadline = connected_at + header_timeout + CLOSE_MARGIN;
            let at = server_closes(&mut stream, deadline).await;
            if at.is_some() {
                closed.fetch_add(1, Ordering::SeqCst);
            }
            (connected_at, at)
        }));
    }
    let opened_in = opening.elapsed();

    // While all of them are held, the ledger answers: health, and a top-up that writes.
    let health = l.get("/health", None).await;
    health.assert_status(200);
    let card = uid(1);
    l.fund(&card, 1500).await;
    assert_eq!(l.balance(&card).await, 1500);
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "the requests must be answered while all {HALF_OPEN_CONNECTIONS} half-open \
         connections are held (opening them took {opened_in:?})"
    );

    let (mut still_open, mut early) = (0, Vec::new());
    for watcher in watchers {
        match watcher.await.expect("watcher panicked") {
            (_, None) => still_open += 1,
            (connected_at, Some(at)) if at - connected_at + EARLY_SLACK < header_timeout => {
                early.push(at - connected_at);
            }
            _ => {}
        }
    }
    assert_eq!(
        still_open, 0,
        "connections still open {CLOSE_MARGIN:?} after the header timeout {header_timeout:?}"
    );
    assert!(
        early.is_empty(),
        "{} connections closed before the header timeout {header_timeout:?}: {early:?}",
        early.len()
    );
    // And every descriptor is given back on the server's side too.
    wait_for("the server to hold no connection", CLOSE_MARGIN, || {
        server_connections(addr.port()) == 0
    })
    .await;
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_by_the_header_timeout() {
    let header_timeout = Duration::from_millis(1000);
    let l = Ledger::start_with_config(&server_config(1000, 30_000, "")).await;
    let mut stream = TcpStream::connect(addr(&l)).await.expect("connect");
    let connected_at = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let mut sent = 0;
    // A head far longer than the timeout allows at this pace (1 s / 50 ms = 20 bytes).
    let head = b"GET /health HTTP/1.1\r\nHost: ledger\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut buf = [0u8; 256];
    let deadline = connected_at + header_timeout + CLOSE_MARGIN;
    let closed_at = loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break Instant::now(),
                Ok(n) => panic!("an answer to a head never finished: {:?}",
                    String::from_utf8_lossy(&buf[..n])),
            },
            _ = pace.tick() => {
                assert!(sent < head.len(), "the whole head was sent before the timeout");
                assert!(Instant::now() < deadline, "still open at the deadline");
                if stream.write_all(&head[sent..=sent]).await.is_err() {
                    break Instant::now();
                }
                sent += 1;
            }
        }
    };
    let held = closed_at - connected_at;
    assert!(
        held + EARLY_SLACK >= header_timeout,
        "closed after {held:?}, before {header_timeout:?}"
    );
}

async fn a_body_sent_a_byte_at_a_time_is_cut_by_the_body_timeout_and_writes_nothing(
    backend: Backend,
) {
    let body_timeout = Duration::from_millis(1000);
    let l = Ledger::start_with_config_on(backend, &server_config(30_000, 1000, "")).await;
    let card = uid(7);
    let seq = l.seq(&l.checkpoint_token);
    let body = serde_json::to_vec(&recharge_body(&card, seq, 2000, "cash", "online")).unwrap();
    let before = l.db_fingerprint();

    let stream = TcpStream::connect(addr(&l)).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/recharges HTTP/1.1\r\nHost: ledger\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        l.checkpoint_token,
        body.len()
    );
    writer.write_all(head.as_bytes()).await.expect("send head");
    let head_sent_at = Instant::now();
    let mut answer = tokio::spawn(async move {
        let mut raw = Vec::new();
        let _ = reader.read_to_end(&mut raw).await;
        (raw, Instant::now())
    });
    // A byte every 100 ms: each comes well inside the timeout, so only a deadline on the
    // whole body (not one restarted by every byte) can cut it.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let deadline = head_sent_at + body_timeout + CLOSE_MARGIN;
    let mut sent = 0;
    let (raw, closed_at) = loop {
        tokio::select! {
            done = &mut answer => break done.expect("reader panicked"),
            _ = pace.tick() => {
                assert!(sent < body.len(), "the whole body was sent before the timeout");
                assert!(Instant::now() < deadline, "still open at the deadline");
                if writer.write_all(&body[sent..=sent]).await.is_ok() {
                    sent += 1;
                }
            }
        }
    };
    let held = closed_at - head_sent_at;
    assert!(
        held + EARLY_SLACK >= body_timeout,
        "closed after {held:?}, before the body timeout {body_timeout:?}"
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 400 "),
        "a body cut by the timeout gets 400: {text:?}"
    );
    assert!(
        text.contains("INVALID_REQUEST") && text.contains("did not arrive within 1000 ms"),
        "the answer says why: {text:?}"
    );
    assert_eq!(l.db_fingerprint(), before, "a cut body wrote something");

    // The same top-up sent at once is new to the ledger: nothing of it was applied.
    let resp = l
        .post_raw(
            "/v1/recharges",
            Some(&l.checkpoint_token.clone()),
            body,
            &[],
        )
        .await;
    resp.assert_status(201);
    assert!(
        !resp.replayed(),
        "the cut request must not have been applied"
    );
    assert_eq!(l.balance(&card).await, 2000);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let idle_timeout = Duration::from_millis(1000);
    let l = Ledger::start_with_config(&server_config(1000, 30_000, "")).await;
    let mut stream = TcpStream::connect(addr(&l)).await.expect("connect");
    // Kept alive: a second request on the same connection is answered.
    for _ in 0..2 {
        stream.write_all(HEALTH).await.expect("send request");
        let (status, _) = read_response(&mut stream).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    }
    let answered_at = Instant::now();
    let closed_at = closed_by_server(
        &mut stream,
        answered_at + idle_timeout + CLOSE_MARGIN,
        "the idle connection",
    )
    .await;
    let idle = closed_at - answered_at;
    assert!(
        idle + EARLY_SLACK >= idle_timeout,
        "closed after {idle:?} idle, before {idle_timeout:?}"
    );
}

#[tokio::test]
async fn connections_past_max_connections_wait_until_one_closes() {
    const CAP: usize = 16;
    let mut l = Ledger::start_with_config(&server_config(
        30_000,
        30_000,
        &format!("max_connections = {CAP}\n"),
    ))
    .await;
    let addr = addr(&l);
    // The harness's client keeps its startup connection alive: a new client, and wait for
    // the server to have let that connection go, so the cap is ours to fill.
    l.client = reqwest::Client::new();
    wait_for("the harness's connection to close", ANSWER_DEADLINE, || {
        server_connections(addr.port()) == 0
    })
    .await;

    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(HALF_HEAD).await.expect("send half a head");
        held.push(stream);
    }
    wait_for(
        "the server to log that it reached the connection limit",
        ANSWER_DEADLINE,
        || l.server_log().contains("connection limit reached"),
    )
    .await;

    let mut waiting = TcpStream::connect(addr).await.expect("the kernel takes it");
    waiting.write_all(HEALTH).await.expect("send request");
    wait_for(
        "the extra connection to wait in the accept queue",
        ANSWER_DEADLINE,
        || accept_queue(addr.port()) == 1,
    )
    .await;
    let mut buf = [0u8; 64];
    match waiting.try_read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a connection past the cap was answered or closed: {other:?}"),
    }

    // One held connection goes away: the waiting one is accepted and served.
    drop(held.pop());
    let (status, _) = read_response(&mut waiting).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(accept_queue(addr.port()), 0);

    drop(held);
    drop(waiting);
    l.get("/health", None).await.assert_status(200);
}

async fn sigterm_gives_an_unfinished_request_the_grace_and_no_more(backend: Backend) {
    let grace = Duration::from_millis(1000);
    let config = server_config(30_000, 30_000, "shutdown_grace_ms = 1000\n");
    let mut l = Ledger::start_with_config_on(backend, &config).await;
    let addr = addr(&l);
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(HALF_HEAD).await.expect("send half a head");
        held.push(stream);
    }
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(HEALTH).await.expect("send request");
    read_response(&mut idle).await;
    held.push(idle);
    // In flight: its head is in, its body never comes (until the 30 s body timeout).
    let mut unfinished = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/recharges HTTP/1.1\r\nHost: ledger\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        l.checkpoint_token
    );
    unfinished
        .write_all(head.as_bytes())
        .await
        .expect("send head");
    held.push(unfinished);
    let log_line = "method=POST route=\"/v1/recharges\"";
    let before = l.server_log().matches(log_line).count();

    let signalled = Instant::now();
    let status = l.terminate(grace + CLOSE_MARGIN).await;
    let took = signalled.elapsed();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    assert!(
        took + EARLY_SLACK >= grace,
        "exited after {took:?}: the unfinished request had the grace {grace:?} to finish"
    );
    assert!(
        l.server_log()
            .contains("in-flight requests did not finish in time"),
        "the cut is logged: {}",
        l.server_log()
    );
    assert_eq!(
        l.server_log().matches(log_line).count(),
        before,
        "the unfinished request must not have been answered"
    );
    let deadline = Instant::now() + CLOSE_MARGIN;
    for (i, stream) in held.iter_mut().enumerate() {
        closed_by_server(stream, deadline, &format!("held connection {i}")).await;
    }
}

/// `cashless ledger serve` with `config` in a file: must exit (not serve) with an error on
/// stderr that names the file, the key and the expectation, and create no database.
fn refuses(config: &str, expected: &[&str]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.toml");
    std::fs::write(&file, config).unwrap();
    let db = dir.path().join("ledger.db");
    let mut child = Command::new(BIN)
        .args(["ledger", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--database")
        .arg(format!("sqlite:{}", db.display()))
        .env_remove("CASHLESS_DATABASE")
        .env_remove("CASHLESS_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cashless ledger serve");
    let until = Instant::now() + ANSWER_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{config:?}: serves instead of refusing"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let mut problems = Vec::new();
    if status.success() {
        problems.push("exited 0".to_owned());
    }
    for needle in std::iter::once(file.to_str().unwrap()).chain(expected.iter().copied()) {
        if !stderr.contains(needle) {
            problems.push(format!("lacks {needle:?}"));
        }
    }
    if db.exists() {
        problems.push("created the database".to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{config:?}: {}; stderr: {stderr}",
            problems.join(", ")
        ))
    }
}

#[test]
fn bad_server_limits_are_refused_naming_the_file_key_and_expectation() {
    let ms = "milliseconds between 1 and 600000";
    let connections = "connections between 1 and 1048576";
    let cases: &[(&str, &[&str])] = &[
        (
            "header_read_timeout_ms = 0",
            &["[server] header_read_timeout_ms", ms, "got 0"],
        ),
        (
            "header_read_timeout_ms = -1000",
            &["[server] header_read_timeout_ms", ms, "got -1000"],
        ),
        (
            "header_read_timeout_ms = 600001",
            &["[server] header_read_timeout_ms", ms, "got 600001"],
        ),
        (
            "body_read_timeout_ms = 0",
            &["[server] body_read_timeout_ms", ms, "got 0"],
        ),
        (
            "body_read_timeout_ms = -1",
            &["[server] body_read_timeout_ms", ms, "got -1"],
        ),
        (
            "body_read_timeout_ms = \"30s\"",
            &["body_read_timeout_ms = \"30s\"", "expected i64"],
        ),
        (
            "max_connections = 0",
            &["[server] max_connections", connections, "got 0"],
        ),
        (
            "max_connections = -16",
            &["[server] max_connections", connections, "got -16"],
        ),
        (
            "max_connections = 1.5",
            &["max_connections = 1.5", "expected i64"],
        ),
        (
            "header_read_timeout_ms = true",
            &["header_read_timeout_ms = true", "expected i64"],
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(line, expected)| refuses(&format!("[server]\n{line}\n"), expected).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

on_both_backends! {
    a_body_sent_a_byte_at_a_time_is_cut_by_the_body_timeout_and_writes_nothing,
    sigterm_gives_an_unfinished_request_the_grace_and_no_more,
}
