//! Driving the real terminal binary end to end: [`Terminal`] runs
//! `cashless terminal --config FILE` (JSON-lines interface, simulated reader) and reads its
//! events; [`Proxy`] sits between terminal and ledger and takes the network down, brings it
//! back, or loses answers on purpose.
#![allow(clippy::unwrap_used)]

use super::{BIN, wait_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, Command};

/// How long [`Terminal::expect`] waits for an event.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// A proxy between terminal and ledger: forwards to `target`, or refuses while `down`.
pub struct Proxy {
    /// `127.0.0.1:PORT`: the address to give the terminal as its ledger.
    pub addr: String,
    pub target: Arc<Mutex<String>>,
    pub down: Arc<AtomicBool>,
    /// Connections being forwarded right now.
    pub active: Arc<AtomicUsize>,
    /// How new connections are treated: see [`FORWARD`], [`SWALLOW`], [`HOLD`], [`TWICE`],
    /// [`SHIFTS_UNAVAILABLE`].
    pub mode: Arc<AtomicU8>,
}

/// Forward both ways.
pub const FORWARD: u8 = 0;
/// Deliver the request to the ledger, read its answer, and cut the connection without
/// delivering it: the ledger committed, the terminal never hears it.
pub const SWALLOW: u8 = 1;
/// Deliver the request, read the answer, and keep the terminal waiting forever.
pub const HOLD: u8 = 2;
/// Deliver the online order to the ledger twice, and hand the second answer back.
pub const TWICE: u8 = 3;
/// Answer `POST /v1/shifts` with 503 `DATABASE_ERROR` without delivering it, and forward
/// every other request, one per connection (so that each is seen here first).
pub const SHIFTS_UNAVAILABLE: u8 = 4;

/// SHIFTS_UNAVAILABLE on one connection, whose first bytes (`first`) were read.
async fn refuse_shifts(first: &[u8], client: &mut TcpStream, to: &str) {
    use tokio::io::AsyncReadExt;
    if first.starts_with(b"POST /v1/shifts ") {
        let body =
            br#"{"error":{"code":"DATABASE_ERROR","message":"the database is unavailable"}}"#;
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = client.write_all(head.as_bytes()).await;
        let _ = client.write_all(body).await;
        let _ = client.shutdown().await;
        // Read what is left of the request until the terminal closes: closing with unread
        // bytes would reset the connection before the answer is read.
        let mut rest = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while matches!(client.read(&mut rest).await, Ok(n) if n > 0) {}
        })
        .await;
        return;
    }
    let Some(eol) = first.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let Ok(mut server) = TcpStream::connect(to).await else {
        return;
    };
    // `connection: close`: the ledger closes after its answer, so the terminal opens a new
    // connection (seen here first) for its next request.
    let mut request = first[..eol + 2].to_vec();
    request.extend_from_slice(b"connection: close\r\n");
    request.extend_from_slice(&first[eol + 2..]);
    if server.write_all(&request).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(client, &mut server).await;
}

/// SWALLOW and HOLD: an online order (`POST /v1/orders`, the first request on a new
/// connection) is delivered and answered by the ledger, and the answer is dropped (the
/// connection cut, or held open forever); any other connection is forwarded as usual, so
/// replay and feeds keep working.
async fn misbehave(mode: u8, client: &mut TcpStream, to: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 256 * 1024];
    if mode == SHIFTS_UNAVAILABLE {
        if let Ok(n) = client.read(&mut buf).await {
            refuse_shifts(&buf[..n], client, to).await;
        }
        return;
    }
    let Ok(mut server) = TcpStream::connect(to).await else {
        return;
    };
    let Ok(n) = client.read(&mut buf).await else {
        return;
    };
    if server.write_all(&buf[..n]).await.is_err() {
        return;
    }
    if buf[..n].starts_with(b"POST /v1/orders ") && mode == TWICE {
        let request = buf[..n].to_vec();
        let _ = server.read(&mut buf).await;
        let Ok(mut again) = TcpStream::connect(to).await else {
            return;
        };
        if again.write_all(&request).await.is_err() {
            return;
        }
        let Ok(m) = again.read(&mut buf).await else {
            return;
        };
        let _ = client.write_all(&buf[..m]).await;
        let _ = tokio::io::copy_bidirectional(client, &mut again).await;
        return;
    }
    if buf[..n].starts_with(b"POST /v1/orders ") {
        let _ = server.read(&mut buf).await;
        if mode == HOLD {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        return;
    }
    let _ = tokio::io::copy_bidirectional(client, &mut server).await;
}

impl Proxy {
    /// Takes the network down: refuses new connections and waits until every forwarded one
    /// is cut.
    pub async fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        wait_for(
            "the proxy to cut every connection",
            Duration::from_secs(5),
            || self.active.load(Ordering::SeqCst) == 0,
        )
        .await;
    }

    /// Brings the network back.
    pub fn go_up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Changes how new connections are treated, and cuts the ones being forwarded so the
    /// terminal's next request opens a new connection.
    pub async fn set_mode(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.down.store(true, Ordering::SeqCst);
        wait_for(
            "the proxy to cut every connection",
            Duration::from_secs(5),
            || self.active.load(Ordering::SeqCst) == 0,
        )
        .await;
        self.down.store(false, Ordering::SeqCst);
    }

    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target = Arc::new(Mutex::new(target.trim_start_matches("http://").to_owned()));
        let down = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let (t, d, a, m) = (
            Arc::clone(&target),
            Arc::clone(&down),
            Arc::clone(&active),
            Arc::clone(&mode),
        );
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let to = t.lock().unwrap().clone();
                let special = m.load(Ordering::SeqCst);
                if special != FORWARD {
                    tokio::spawn(async move { misbehave(special, &mut client, &to).await });
                    continue;
                }
                let d = Arc::clone(&d);
                let a = Arc::clone(&a);
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&to).await else {
                        a.fetch_sub(1, Ordering::SeqCst);
                        return;
                    };
                    // Cut established connections too when the network goes down.
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    tokio::select! {
                        _ = copy => {}
                        _ = async { while !d.load(Ordering::SeqCst) { tokio::time::sleep(Duration::from_millis(20)).await } } => {}
                    }
                    a.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Proxy {
            addr,
            target,
            down,
            active,
            mode,
        }
    }
}

/// A running `cashless terminal --ui jsonl --reader simulated`, killed when dropped.
pub struct Terminal {
    pub child: Child,
    pub stdin: ChildStdin,
    /// Every event the terminal printed, in order (a reader task parses stdout).
    pub events: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

/// Writes `dir/terminal.toml` for terminal `name` of `kind` with its journal at `journal`,
/// the ledger at `url` (`HOST:PORT`), a `timeout_ms` online decision timeout and a fast
/// sync loop (200 ms, backoff 100-400 ms); returns the file's path.
pub fn write_config(
    dir: &Path,
    journal: &Path,
    url: &str,
    token: &str,
    name: &str,
    kind: &str,
    timeout_ms: u64,
) -> PathBuf {
    let config = dir.join("terminal.toml");
    std::fs::write(
        &config,
        format!(
            "[terminal]\nname = \"{name}\"\nkind = \"{kind}\"\njournal = {:?}\n\n[ledger]\nurl = \"http://{url}\"\ntoken = \"{token}\"\ntimeout_ms = {timeout_ms}\n\n[sync]\ninterval_ms = 200\nbackoff_base_ms = 100\nbackoff_cap_ms = 400\n\n[reader]\nbackend = \"simulated\"\n",
            journal.display().to_string()
        ),
    )
    .unwrap();
    config
}

impl Terminal {
    /// Terminal bar-1 with its config and journal (`journal.db`) in `dir`.
    pub async fn start(dir: &Path, url: &str, token: &str) -> Terminal {
        Terminal::start_as(dir, url, token, "bar-1", "bar").await
    }

    pub async fn start_as(dir: &Path, url: &str, token: &str, name: &str, kind: &str) -> Terminal {
        Terminal::start_with_timeout(dir, url, token, name, kind, 1000).await
    }

    /// `timeout_ms` is the online decision timeout.
    pub async fn start_with_timeout(
        dir: &Path,
        url: &str,
        token: &str,
        name: &str,
        kind: &str,
        timeout_ms: u64,
    ) -> Terminal {
        let config = write_config(
            dir,
            &dir.join("journal.db"),
            url,
            token,
            name,
            kind,
            timeout_ms,
        );
        Terminal::spawn(&config)
    }

    /// Runs `cashless terminal --config CONFIG`; stderr (the logs) goes to the test's.
    pub fn spawn(config: &Path) -> Terminal {
        Terminal::spawn_with(config, &[], Stdio::inherit())
    }

    /// [`Terminal::spawn`] with environment variables, and stderr (the logs) to `stderr`.
    pub fn spawn_with(config: &Path, env: &[(&str, &str)], stderr: Stdio) -> Terminal {
        let mut child = Command::new(BIN)
            .args([
                "terminal",
                "--config",
                config.to_str().unwrap(),
                "--ui",
                "jsonl",
            ])
            .env_remove("CASHLESS_LEDGER_URL")
            .env_remove("CASHLESS_LEDGER_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let event: Value =
                    serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Terminal {
            child,
            stdin,
            events,
        }
    }

    /// Arms an order of `quantity` × `product`, taps `card`, and returns the decision.
    pub async fn sell(&mut self, product: &str, quantity: i64, card: &str) -> Value {
        self.send(
            json!({"cmd": "order", "items": [{"product_id": product, "quantity": quantity}]}),
        )
        .await;
        self.expect("armed").await;
        self.send(json!({"cmd": "tap", "uid": card})).await;
        self.expect("decision").await
    }

    /// Arms a top-up of `amount_cents` paid by `method`, checks the armed amount, taps
    /// `card`, and returns the decision.
    pub async fn top_up(&mut self, amount_cents: i64, method: &str, card: &str) -> Value {
        self.send(json!({"cmd": "topup", "amount_cents": amount_cents, "payment_method": method}))
            .await;
        assert_eq!(self.expect("armed").await["amount_cents"], amount_cents);
        self.send(json!({"cmd": "tap", "uid": card})).await;
        self.expect("decision").await
    }

    /// `quit`, and the process exits 0.
    pub async fn quit(mut self) {
        self.send(json!({"cmd": "quit"})).await;
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
    }

    pub async fn send(&mut self, command: Value) {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    pub async fn send_raw(&mut self, line: &[u8]) {
        self.stdin.write_all(line).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
    }

    /// The next event named `name`, skipping others (sync reports arrive at any time).
    pub async fn expect(&mut self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {name} event within {EVENT_DEADLINE:?}"));
            let Some(event) = event else {
                let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
                panic!(
                    "the terminal closed its stdout before a {name} event (exit: {status:?}; \
                     its stderr is in the test output)"
                );
            };
            if event["event"] == name {
                return event;
            }
        }
    }

    /// Sends each command and expects an `error` event with its code.
    pub async fn expect_errors(&mut self, cases: &[(Value, &str)]) {
        for (command, code) in cases {
            self.send(command.clone()).await;
            let event = self.expect("error").await;
            assert_eq!(event["code"], *code, "{command}: {event}");
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A fresh ledger, a proxy in front of it, and checkpoint cp-1 behind the proxy (its
/// configuration and journal in the directory), ready and logged in as the cashier.
pub async fn checkpoint_ready_to_top_up() -> (super::Ledger, Proxy, tempfile::TempDir, Terminal) {
    let l = super::Ledger::start().await;
    let proxy = Proxy::start(&l.base_url).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Terminal::start_as(
        dir.path(),
        &proxy.addr,
        &l.checkpoint_token,
        "cp-1",
        "checkpoint",
    )
    .await;
    ready_to_top_up(&mut t).await;
    (l, proxy, dir, t)
}

/// Waits for `ready` and logs in as s-bar.
pub async fn ready_to_sell(t: &mut Terminal) {
    t.expect("ready").await;
    t.send(json!({"cmd": "login", "staff_id": "s-bar", "pin": "1234"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
}

/// Waits for `ready` and logs in as the cashier (s-cash).
pub async fn ready_to_top_up(t: &mut Terminal) {
    t.expect("ready").await;
    t.send(json!({"cmd": "login", "staff_id": super::CASH_STAFF, "pin": "2345"}))
        .await;
    assert_eq!(t.expect("login").await["ok"], true);
}

/// Polls `status` every `every` until `done` says so, within `within`; returns that status.
pub async fn wait_for_status(
    t: &mut Terminal,
    what: &str,
    (within, every): (Duration, Duration),
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        t.send(json!({"cmd": "status"})).await;
        let s = t.expect("status").await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not yet in {s}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Polls `status` until nothing is pending or in doubt and the terminal is online.
pub async fn wait_until_synced(t: &mut Terminal) -> Value {
    wait_until_synced_within(t, EVENT_DEADLINE).await
}

/// [`wait_until_synced`] with a deadline of its own (a large drain on a loaded machine).
pub async fn wait_until_synced_within(t: &mut Terminal, within: Duration) -> Value {
    wait_for_status(t, "synced", (within, Duration::from_millis(200)), |s| {
        s["pending"] == 0 && s["in_doubt"] == 0 && s["online"] == true
    })
    .await
}

/// A two-thread runtime for a test that runs in a process of its own (PC/SC tests: the
/// virtual cards play on std threads, the terminal and ledger clients on this runtime).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Arms an order of one beer.
pub async fn arm_beer(t: &mut Terminal) {
    t.send(json!({"cmd": "order", "items": [{"product_id": "beer-05", "quantity": 1}]}))
        .await;
    t.expect("armed").await;
}
