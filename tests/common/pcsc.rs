//! The real PC/SC stack without hardware: an isolated `pcscd` per test with two virtual
//! readers (`vsmartcard-vpcd`), and virtual cards played in Rust ([`VirtualCard`]).
//!
//! # Why every PC/SC test runs in its own process
//!
//! - pcscd (1.9.9 in Debian 12, and 2.x) always binds `/run/pcscd/pcscd.comm`; it ignores
//!   `PCSCLITE_CSOCK_NAME`. Except when it is socket-activated: then it serves the listening
//!   socket it gets on fd 3 (`LISTEN_FDS=1`, `LISTEN_PID`), and leaves
//!   `/run/pcscd/pcscd.comm` alone. [`Pcscd`] does that activation itself, with a socket in a
//!   temporary directory, so any number of daemons run side by side and none touches a system
//!   pcscd.
//! - The client library (libpcsclite, which the `pcsc` crate links) finds the daemon through
//!   `PCSCLITE_CSOCK_NAME`, read ONCE per process at the first PC/SC call. So one process talks
//!   to one pcscd, and a test cannot point itself elsewhere (`set_var` is `unsafe` in edition
//!   2024, and this crate forbids `unsafe`).
//!
//! Hence [`in_own_process`]: the test re-runs its own test binary with `--exact NAME` in a
//! child process whose environment names a fresh socket. The child starts the [`Pcscd`],
//! plays the cards and uses the `pcsc` crate directly; processes it starts (`cashless
//! terminal`) inherit the variable. The parent waits for the child with a deadline, kills its
//! process group if it hangs, and fails with the child's whole output.
//! A program without libtest (the reader benchmark, `benches/reader.rs`) does the same with
//! [`main_in_own_process`], and starts its pcscd with [`Pcscd::start_quiet`] (no debug log).
//!
//! Timing: nothing sleeps a fixed time as synchronisation. Waits are `get_status_change` with
//! a deadline, a condition variable, or a poll with a deadline.
#![allow(clippy::unwrap_used)]

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pcsc::{Context, Protocols, ReaderState, Scope, ShareMode, State};

use super::ntag424::Ntag424Chip;

/// The variable libpcsclite reads (once per process) to find pcscd's socket.
pub const SOCKET_ENV: &str = "PCSCLITE_CSOCK_NAME";
/// Set in the child process to the name of the test it runs.
const CHILD_ENV: &str = "CASHLESS_PCSC_TEST";
/// Set in the child process: its index among the processes of one test (see [`Role`]).
const ROLE_ENV: &str = "CASHLESS_PCSC_ROLE";
/// Set in the child process: its own directory (the pcscd's files go there, so that the
/// parent removes them even if the child dies without cleaning up).
const CHILD_DIR_ENV: &str = "CASHLESS_PCSC_DIR";
/// Set in the child process: a directory shared by all processes of one test.
const SHARED_DIR_ENV: &str = "CASHLESS_PCSC_SHARED";

/// The Debian packages the PC/SC tests need.
pub const APT_HINT: &str = "apt-get install -y pcscd vsmartcard-vpcd libpcsclite-dev";
const PCSCD_CANDIDATES: &[&str] = &["/usr/sbin/pcscd", "/usr/bin/pcscd", "/sbin/pcscd"];
/// vsmartcard's reader driver (the same path in Debian and upstream builds).
pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";

/// The readers of every [`Pcscd`]: vpcd gives one config entry two slots, on `port` and
/// `port + 1`, named after `FRIENDLYNAME` plus reader and slot index.
pub const READERS: [&str; 2] = ["Virtual PCD 00 00", "Virtual PCD 00 01"];
const FRIENDLY_NAME: &str = "Virtual PCD";

/// How long a child test process may run.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(180);
/// How long pcscd may take to serve its socket with both readers.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
/// How long a card event may take to show (pcscd polls vpcd every 400 ms).
pub const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// The GET DATA pseudo-APDU that reads a contactless card's UID.
pub const GET_UID: [u8; 5] = [0xFF, 0xCA, 0x00, 0x00, 0x00];
pub const SW_OK: [u8; 2] = [0x90, 0x00];
/// What a [`VirtualCard`] answers to any APDU it does not know.
pub const SW_INS_NOT_SUPPORTED: [u8; 2] = [0x6D, 0x00];
/// The ATR of a MIFARE Classic 1K behind an ACR122U (`docs/nfc.md`).
pub const ATR_CLASSIC_1K: [u8; 20] = [
    0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03, 0x00, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x6A,
];
/// The ATR of an ISO 14443-4 card (an NTAG 424 DNA, a DESFire) behind an ACR122U.
pub const ATR_ISO14443_4: [u8; 6] = [0x3B, 0x81, 0x80, 0x01, 0x80, 0x80];

// ---------------------------------------------------------------------------------------------
// One process per test
// ---------------------------------------------------------------------------------------------

/// Where a child process stands among the processes of one test.
#[derive(Debug, Clone)]
pub struct Role {
    /// 0..count
    pub index: usize,
    pub count: usize,
    /// A directory all processes of the test share (for [`Role::barrier`]).
    pub shared_dir: PathBuf,
}

impl Role {
    /// Waits until every process of the test reached the barrier `name`.
    pub fn barrier(&self, name: &str) {
        let mine = self.shared_dir.join(format!("{name}.{}", self.index));
        std::fs::write(&mine, b"").unwrap();
        poll_until(
            &format!("all {} processes to reach barrier {name:?}", self.count),
            Duration::from_secs(60),
            || {
                (0..self.count)
                    .all(|i| self.shared_dir.join(format!("{name}.{i}")).exists())
                    .then_some(())
            },
        );
    }

    /// Publishes a value for the other processes of the test.
    pub fn publish(&self, key: &str, value: &str) {
        let tmp = self.shared_dir.join(format!(".{key}.{}", self.index));
        std::fs::write(&tmp, value).unwrap();
        std::fs::rename(&tmp, self.shared_dir.join(format!("{key}.{}", self.index))).unwrap();
    }

    /// What process `index` published under `key` (waits for it).
    pub fn read(&self, index: usize, key: &str) -> String {
        let path = self.shared_dir.join(format!("{key}.{index}"));
        poll_until(
            &format!("process {index} to publish {key:?}"),
            Duration::from_secs(60),
            || std::fs::read_to_string(&path).ok(),
        )
    }
}

/// Runs `body` in a child process of its own, whose `PCSCLITE_CSOCK_NAME` names a fresh
/// socket for the [`Pcscd`] the body starts. `test` is the test's name as libtest prints it
/// (the function name, for a test at the top of its file).
///
/// In the parent, this waits for the child (at most [`CHILD_DEADLINE`]) and panics with the
/// child's output if it failed. In the child, it runs `body`.
pub fn in_own_process(test: &str, body: impl FnOnce()) {
    in_own_processes(test, 1, |_| body());
}

/// Like [`in_own_process`], with `count` processes running `body` at the same time, each with
/// its own socket (see [`Role`]).
pub fn in_own_processes(test: &str, count: usize, body: impl FnOnce(Role)) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(test) {
        let index = std::env::var(ROLE_ENV).unwrap().parse().unwrap();
        let shared_dir = std::env::var_os(SHARED_DIR_ENV).unwrap().into();
        return body(Role {
            index,
            count,
            shared_dir,
        });
    }
    assert!(
        std::env::var_os(CHILD_ENV).is_none(),
        "test {test:?} runs inside the child process of test {:?}: the name given to \
         in_own_process must be the test's own name",
        std::env::var(CHILD_ENV)
    );
    if let Some(thread) = std::thread::current().name()
        && thread != "main"
    {
        assert_eq!(
            thread, test,
            "in_own_process needs the test's name exactly as libtest prints it"
        );
    }
    require_installed();

    let dir = tempfile::Builder::new()
        .prefix("cashless-pcsc-")
        .tempdir()
        .unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut children: Vec<Option<Child>> = (0..count)
        .map(|i| {
            let child_dir = dir.path().join(format!("p{i}"));
            std::fs::create_dir(&child_dir).unwrap();
            let socket = child_dir.join("pcscd.comm");
            assert!(
                socket.as_os_str().len() < 100,
                "socket path {} is too long for a Unix socket: set TMPDIR to a shorter directory",
                socket.display()
            );
            Command::new(&exe)
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, test)
                .env(ROLE_ENV, i.to_string())
                .env(CHILD_DIR_ENV, &child_dir)
                .env(SHARED_DIR_ENV, &shared)
                .env(SOCKET_ENV, &socket)
                .stdin(Stdio::null())
                .stdout(File::create(dir.path().join(format!("p{i}.out"))).unwrap())
                .stderr(File::create(dir.path().join(format!("p{i}.err"))).unwrap())
                // Its own process group, so that the parent can kill it with its pcscd.
                .process_group(0)
                .spawn()
                .map(Some)
                .unwrap_or_else(|e| panic!("cannot re-run {} for {test}: {e}", exe.display()))
        })
        .collect();

    let mut statuses = vec![None; count];
    let mut failure: Option<String> = None;
    while statuses.iter().any(Option::is_none) {
        for (i, slot) in children.iter_mut().enumerate() {
            if let Some(child) = slot
                && exited(child.id())
            {
                // Not reaped yet, so its id cannot be reused: sweep what it left in its
                // process group (a pcscd, a terminal) if it died without cleaning up.
                kill_group(child.id());
                let status = child.wait().unwrap();
                if !status.success() && failure.is_none() {
                    failure = Some(format!("process {i} exited with {status}"));
                }
                statuses[i] = Some(status);
                *slot = None;
            }
        }
        let timed_out = started.elapsed() > CHILD_DEADLINE;
        if timed_out && failure.is_none() {
            failure = Some(format!("still running after {CHILD_DEADLINE:?}"));
        }
        if failure.is_some() {
            // The others are not reaped yet: their process groups are theirs.
            for child in children.iter_mut().flatten() {
                kill_group(child.id());
                let _ = child.wait();
            }
            children.iter_mut().for_each(|c| *c = None);
            for status in statuses.iter_mut().filter(|s| s.is_none()) {
                *status = Some(std::process::ExitStatus::from_raw(9));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut report = String::new();
    for (i, status) in statuses.iter().enumerate() {
        let status = status.map_or_else(|| "not run".to_owned(), |s| s.to_string());
        let out = std::fs::read_to_string(dir.path().join(format!("p{i}.out"))).unwrap();
        let err = std::fs::read_to_string(dir.path().join(format!("p{i}.err"))).unwrap();
        if !out.contains("test result: ok. 1 passed") && failure.is_none() {
            failure = Some(format!(
                "process {i} ran no test named {test:?} (pass the test's name as libtest prints it)"
            ));
        }
        report.push_str(&format!(
            "--- process {i} of {test} ({status}) stdout ---\n{out}--- stderr ---\n{err}"
        ));
    }
    if let Some(failure) = failure {
        panic!("{test}: {failure}\n{report}");
    }
    // Shown with --nocapture (timings), or never.
    eprintln!(
        "{test}: {count} process(es) passed in {:?}\n{report}",
        started.elapsed()
    );
}

/// For a program without libtest (the reader benchmark, `benches/reader.rs`): runs `body` in
/// a copy of this executable (same arguments) whose `PCSCLITE_CSOCK_NAME` names a fresh
/// socket for the [`Pcscd`] the body starts, and exits with the copy's status. Its output is
/// passed through, and it stays in this process group, so that Ctrl-C stops it with its pcscd
/// and everything else it started. In the copy, this runs `body`.
pub fn main_in_own_process(name: &str, body: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        return body();
    }
    require_installed();
    let dir = tempfile::Builder::new()
        .prefix("cashless-pcsc-")
        .tempdir()
        .unwrap();
    let shared = dir.path().join("shared");
    let child_dir = dir.path().join("p0");
    std::fs::create_dir(&shared).unwrap();
    std::fs::create_dir(&child_dir).unwrap();
    let socket = child_dir.join("pcscd.comm");
    assert!(
        socket.as_os_str().len() < 100,
        "socket path {} is too long for a Unix socket: set TMPDIR to a shorter directory",
        socket.display()
    );
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, name)
        .env(ROLE_ENV, "0")
        .env(CHILD_DIR_ENV, &child_dir)
        .env(SHARED_DIR_ENV, &shared)
        .env(SOCKET_ENV, &socket)
        .status()
        .unwrap_or_else(|e| panic!("cannot re-run {} for {name}: {e}", exe.display()));
    drop(dir);
    std::process::exit(status.code().unwrap_or(1));
}

/// Whether process `pid` (our child) has exited, without reaping it: `/proc/PID/stat` shows a
/// zombie. The `Child` handle reaps it afterwards.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after_name) = stat.rsplit_once(") ")?;
            after_name.chars().next()
        })
        .is_none_or(|state| state == 'Z' || state == 'X')
}

/// SIGKILLs process group `pgid` (a child we spawned with `process_group(0)` and have not
/// reaped, so the id cannot have been reused).
fn kill_group(pgid: u32) {
    let _ = Command::new("sh")
        // dash's `kill` takes no `--`; `-KILL -PGID` is read as signal, then group.
        .args(["-c", &format!("kill -KILL -{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Panics, naming the packages to install, if pcscd or the vpcd driver is missing.
pub fn require_installed() {
    assert!(
        pcscd_path().is_some() && Path::new(VPCD_DRIVER).exists(),
        "the PC/SC tests need pcscd ({}) and the vpcd reader driver ({VPCD_DRIVER}); install \
         them with: {APT_HINT}",
        PCSCD_CANDIDATES.join(" or ")
    );
}

fn pcscd_path() -> Option<&'static str> {
    PCSCD_CANDIDATES
        .iter()
        .copied()
        .find(|p| Path::new(p).exists())
}

/// Polls `f` every 20 ms until it returns `Some`; panics naming `what` after `deadline`.
pub fn poll_until<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// pcscd
// ---------------------------------------------------------------------------------------------

/// Only one [`Pcscd`] per process: libpcsclite knows one socket per process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// An isolated `pcscd --foreground` on this process's `PCSCLITE_CSOCK_NAME` socket, with two
/// vpcd readers ([`READERS`]) on two free TCP ports. Killed (SIGKILL) and its files removed
/// when dropped.
pub struct Pcscd {
    /// Config file and logs.
    dir: tempfile::TempDir,
    socket: PathBuf,
    config: PathBuf,
    /// Reader 0 waits for its card on `port`, reader 1 on `port + 1`.
    port: u16,
    child: Option<Child>,
    /// Number of pcscd processes started so far (names the log files).
    starts: u32,
    /// `pcscd --disable-polkit`, where the daemon has polkit (pcsc-lite 2.x).
    disable_polkit: bool,
    /// `--debug --apdu`: every poll and APDU in the log (tests); off for measurements.
    debug: bool,
}

impl Pcscd {
    /// Starts pcscd (logging every poll and APDU: `--debug --apdu`) and waits until a client
    /// of this process sees both readers. Must run inside [`in_own_process`].
    pub fn start() -> Pcscd {
        Pcscd::start_with(true)
    }

    /// Like [`Pcscd::start`], but pcscd logs only errors, as a system pcscd does: for
    /// measurements (debug logging costs pcscd CPU at every poll).
    pub fn start_quiet() -> Pcscd {
        Pcscd::start_with(false)
    }

    fn start_with(debug: bool) -> Pcscd {
        require_installed();
        let socket: PathBuf = std::env::var_os(SOCKET_ENV)
            .filter(|_| std::env::var_os(CHILD_ENV).is_some())
            .unwrap_or_else(|| {
                panic!(
                    "Pcscd::start must run inside pcsc::in_own_process: libpcsclite reads \
                     {SOCKET_ENV} once per process, so each test that uses pcscd runs in a \
                     process of its own"
                )
            })
            .into();
        assert!(
            !RUNNING.swap(true, Ordering::SeqCst),
            "only one Pcscd per process (libpcsclite knows one socket per process)"
        );
        let parent = std::env::var_os(CHILD_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("pcscd-")
            .tempdir_in(parent)
            .unwrap();
        let help = Command::new(pcscd_path().unwrap())
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut pcscd = Pcscd {
            config: dir.path().join("reader.conf"),
            dir,
            socket,
            port: 0,
            child: None,
            starts: 0,
            disable_polkit: help.contains("--disable-polkit"),
            debug,
        };
        // Free ports are checked before pcscd binds them, so another process can take them
        // in between: then vpcd fails to bind ("Address already in use"), the reader is
        // missing, and we try other ports.
        let mut tries = Vec::new();
        for _ in 0..5 {
            pcscd.port = free_port_pair();
            std::fs::write(
                &pcscd.config,
                format!(
                    "FRIENDLYNAME \"{FRIENDLY_NAME}\"\nDEVICENAME /dev/null:{}\nLIBPATH {VPCD_DRIVER}\n",
                    pcscd.port
                ),
            )
            .unwrap();
            let started = Instant::now();
            pcscd.spawn();
            match pcscd.wait_ready() {
                Ok(()) => {
                    eprintln!(
                        "pcscd ready after {:?} (ports {}, {}; socket {})",
                        started.elapsed(),
                        pcscd.port,
                        pcscd.port + 1,
                        pcscd.socket.display()
                    );
                    return pcscd;
                }
                Err(NotReady::PortTaken(why)) => {
                    tries.push(format!("ports {}, {}: {why}", pcscd.port, pcscd.port + 1));
                    pcscd.kill9();
                }
                Err(NotReady::Failed(why)) => panic!("{why}\n{}", pcscd.log()),
            }
        }
        panic!(
            "pcscd never came up with both readers: {tries:?}\n{}",
            pcscd.log()
        );
    }

    /// The socket clients connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The TCP port on which reader `reader` (0 or 1) waits for its [`VirtualCard`].
    pub fn port(&self, reader: usize) -> u16 {
        assert!(reader < READERS.len());
        self.port + reader as u16
    }

    /// Reader `reader`'s name as a C string, for the `pcsc` crate.
    pub fn reader(&self, reader: usize) -> CString {
        CString::new(READERS[reader]).unwrap()
    }

    /// The environment a client process (`cashless terminal`) needs to reach this pcscd.
    /// Processes started inside [`in_own_process`] inherit it anyway.
    pub fn client_env(&self) -> Vec<(&'static str, OsString)> {
        vec![(SOCKET_ENV, self.socket.clone().into_os_string())]
    }

    /// Whether the current pcscd process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The current pcscd process's id (`sh` execs pcscd, so it is pcscd's own), if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs pcscd and waits for it to be gone. Its socket file stays, without a listener
    /// (as after a crash): clients get `NoService`. Cards see their connection closed.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills pcscd (if running) and starts a new one on the same socket, config and ports.
    pub fn restart(&mut self) {
        self.kill9();
        let started = Instant::now();
        self.spawn();
        if let Err(NotReady::PortTaken(why) | NotReady::Failed(why)) = self.wait_ready() {
            panic!(
                "pcscd did not come back on ports {}, {}: {why}\n{}",
                self.port,
                self.port + 1,
                self.log()
            );
        }
        eprintln!("pcscd restarted, ready after {:?}", started.elapsed());
    }

    /// Everything the pcscd processes logged so far (all starts).
    pub fn log(&self) -> String {
        let mut text = String::new();
        for n in 1..=self.starts {
            let path = self.dir.path().join(format!("pcscd-{n}.log"));
            let log = std::fs::read_to_string(path).unwrap_or_default();
            text.push_str(&format!("--- pcscd #{n} ---\n{log}"));
        }
        text
    }

    /// A new context on this pcscd (fails the test after [`STARTUP_DEADLINE`]).
    pub fn context(&self) -> Context {
        match establish_within(STARTUP_DEADLINE) {
            Ok(ctx) => ctx,
            Err(e) => panic!("cannot establish a PC/SC context: {e}\n{}", self.log()),
        }
    }

    /// Socket activation, the way systemd does it: we bind the listening socket, pass it as
    /// fd 3 with `LISTEN_FDS=1` and `LISTEN_PID` = pcscd's pid. `sh` moves it from stdin to
    /// fd 3 and execs pcscd (same pid), so no `unsafe` `pre_exec` is needed.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "pcscd is already running");
        self.starts += 1;
        let _ = std::fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket)
            .unwrap_or_else(|e| panic!("cannot bind {}: {e}", self.socket.display()));
        let log = File::create(self.dir.path().join(format!("pcscd-{}.log", self.starts))).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"exec 3<&0 0</dev/null; LISTEN_PID=$$; LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; exec "$@""#)
            .arg("sh")
            .arg(pcscd_path().unwrap())
            .arg("--foreground");
        if self.debug {
            cmd.args(["--debug", "--apdu"]);
        }
        cmd.arg("--config").arg(&self.config);
        if self.disable_polkit {
            cmd.arg("--disable-polkit");
        }
        cmd.env_remove("LISTEN_FDNAMES")
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pcscd: {e}"));
        // `cmd` still holds our copy of the listening socket: drop it, so that the socket dies
        // with pcscd (clients then get NoService instead of hanging in the backlog).
        drop(cmd);
        self.child = Some(child);
    }

    /// Waits until a context of this process lists both readers. pcscd creates the readers
    /// before it serves its socket, so a reader missing once it answers is final: a port was
    /// taken (vpcd logs "Address already in use"), and other ports may do.
    fn wait_ready(&mut self) -> Result<(), NotReady> {
        let until = Instant::now() + STARTUP_DEADLINE;
        let mut last = String::from("nothing yet");
        while Instant::now() < until {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                let mut why = format!("pcscd exited with {status}");
                if self.log().contains("cannot create /run/pcscd") {
                    why.push_str(
                        " (pcscd needs the directory /run/pcscd for its pid file, even with a \
                         socket of its own: create it once as root with \
                         `install -d -m 755 /run/pcscd`, or run the tests as root)",
                    );
                }
                return Err(NotReady::Failed(why));
            }
            match establish_within(until.saturating_duration_since(Instant::now())) {
                Ok(ctx) => {
                    let names = ctx.list_readers_owned();
                    match &names {
                        Ok(names)
                            if READERS
                                .iter()
                                .all(|r| names.iter().any(|n| n.to_bytes() == r.as_bytes())) =>
                        {
                            return Ok(());
                        }
                        Err(pcsc::Error::NoReadersAvailable) | Ok(_) => {
                            return Err(NotReady::PortTaken(format!(
                                "pcscd answers with readers {names:?}, not {READERS:?}"
                            )));
                        }
                        Err(e) => last = format!("list_readers: {e}"),
                    }
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(NotReady::Failed(format!(
            "not ready within {STARTUP_DEADLINE:?}; last: {last}"
        )))
    }
}

enum NotReady {
    /// A vpcd port was taken: try other ports.
    PortTaken(String),
    Failed(String),
}

impl Drop for Pcscd {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("pcscd's log (the test failed):\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.socket);
        RUNNING.store(false, Ordering::SeqCst);
    }
}

/// `Context::establish` on a thread, so that a hung pcscd fails the test instead of hanging
/// it (libpcsclite waits for the daemon's answer without a timeout).
pub fn establish_within(deadline: Duration) -> Result<Context, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Context::establish(Scope::User));
    });
    match rx.recv_timeout(deadline) {
        Ok(Ok(ctx)) => Ok(ctx),
        Ok(Err(e)) => Err(format!("establish: {e} ({e:?})")),
        Err(_) => Err(format!("establish did not return within {deadline:?}")),
    }
}

/// Two consecutive TCP ports, both free on all interfaces (vpcd binds `0.0.0.0`), below the
/// kernel's ephemeral range (32768+) so that outgoing connections do not take them.
fn free_port_pair() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..32_000u16);
        let a = TcpListener::bind(("0.0.0.0", port));
        let b = TcpListener::bind(("0.0.0.0", port + 1));
        if a.is_ok() && b.is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free TCP ports in 20000..32000");
}

// ---------------------------------------------------------------------------------------------
// Client helpers (the `pcsc` crate, in this process)
// ---------------------------------------------------------------------------------------------

/// Whether the reader reports a card.
pub fn is_present(state: &ReaderState) -> bool {
    state.event_state().contains(State::PRESENT)
}

/// Whether the reader reports no card.
pub fn is_empty(state: &ReaderState) -> bool {
    state.event_state().contains(State::EMPTY)
}

/// Calls `get_status_change` on `reader` (from `UNAWARE`, then from each reported state)
/// until the reported state satisfies `want`; returns it. Panics after `deadline`, showing the
/// last state.
pub fn wait_for_state(
    ctx: &Context,
    reader: &CStr,
    what: &str,
    deadline: Duration,
    want: impl Fn(&ReaderState) -> bool,
) -> ReaderState {
    let until = Instant::now() + deadline;
    let mut states = [ReaderState::new(reader, State::UNAWARE)];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match ctx.get_status_change(left.min(Duration::from_secs(1)), &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) => {
                panic!("get_status_change on {reader:?} failed while waiting for {what}: {e:?}")
            }
        }
        if want(&states[0]) {
            let [state] = states;
            return state;
        }
        assert!(
            !left.is_zero(),
            "timed out after {deadline:?} waiting for {what} on {reader:?}; last state {:?} (count {})",
            states[0].event_state(),
            states[0].event_count()
        );
        states[0].sync_current_state();
    }
}

/// Connects to the card in `reader` and sends GET DATA; returns the whole answer (data and
/// status word).
pub fn read_uid(ctx: &Context, reader: &CStr) -> Result<Vec<u8>, pcsc::Error> {
    let card = ctx.connect(reader, ShareMode::Shared, Protocols::ANY)?;
    transmit(&card, &GET_UID)
}

/// `transmit` into a buffer of the maximum size; returns the answer.
pub fn transmit(card: &pcsc::Card, apdu: &[u8]) -> Result<Vec<u8>, pcsc::Error> {
    let mut buf = [0; pcsc::MAX_BUFFER_SIZE];
    card.transmit(apdu, &mut buf).map(<[u8]>::to_vec)
}

// ---------------------------------------------------------------------------------------------
// Virtual cards
// ---------------------------------------------------------------------------------------------

/// How a [`VirtualCard`] leaves in the middle of an APDU (the first APDU it gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vanish {
    /// Closes the connection after reading the APDU, answering nothing.
    BeforeAnswer,
    /// Sends the length prefix and the first byte of the answer, then closes.
    MidAnswer,
}

/// What a [`VirtualCard`] is and how it behaves.
#[derive(Debug, Clone)]
pub struct CardSpec {
    /// Answered to GET DATA (any length: a wrong-length UID is a misbehaviour to test).
    pub uid: Vec<u8>,
    pub atr: Vec<u8>,
    /// Status word of GET DATA; when not `90 00`, the answer is the status word alone.
    pub get_data_sw: [u8; 2],
    pub vanish: Option<Vanish>,
    /// The APDU (0-based, in this insertion) the card vanishes at.
    pub vanish_at: usize,
    /// An NTAG 424 DNA chip that answers every APDU instead (shared, so that a test can put
    /// the same card back on the reader, and look at what it holds).
    pub chip: Option<Arc<Mutex<Ntag424Chip>>>,
}

impl CardSpec {
    /// A well-behaved MIFARE Classic 1K with `uid`.
    pub fn new(uid: &[u8]) -> CardSpec {
        CardSpec {
            uid: uid.to_vec(),
            atr: ATR_CLASSIC_1K.to_vec(),
            get_data_sw: SW_OK,
            vanish: None,
            vanish_at: 0,
            chip: None,
        }
    }

    /// An NTAG 424 DNA (ATR of an ISO 14443-4 card) played by `chip`.
    pub fn ntag424(chip: &Arc<Mutex<Ntag424Chip>>) -> CardSpec {
        let uid = chip.lock().unwrap().uid().to_vec();
        CardSpec {
            chip: Some(Arc::clone(chip)),
            ..CardSpec::new(&uid).with_atr(&ATR_ISO14443_4)
        }
    }

    /// The card leaves in the middle of APDU `index` of this insertion (the chip executed
    /// it: only the answer is lost), and does not come back.
    pub fn vanishing_at(mut self, index: usize, how: Vanish) -> CardSpec {
        self.vanish = Some(how);
        self.vanish_at = index;
        self
    }

    /// GET DATA fails with `sw` (e.g. `63 00`).
    pub fn failing_get_data(mut self, sw: [u8; 2]) -> CardSpec {
        self.get_data_sw = sw;
        self
    }

    /// The card leaves in the middle of its first APDU, and does not come back.
    pub fn vanishing(mut self, how: Vanish) -> CardSpec {
        self.vanish = Some(how);
        self
    }

    pub fn with_atr(mut self, atr: &[u8]) -> CardSpec {
        self.atr = atr.to_vec();
        self
    }

    /// The answer to `apdu`.
    fn answer(&self, apdu: &[u8]) -> Vec<u8> {
        if let Some(chip) = &self.chip {
            return chip.lock().unwrap().answer(apdu);
        }
        if apdu.len() >= 4 && apdu[..4] == GET_UID[..4] {
            if self.get_data_sw == SW_OK {
                [self.uid.as_slice(), &SW_OK].concat()
            } else {
                self.get_data_sw.to_vec()
            }
        } else {
            SW_INS_NOT_SUPPORTED.to_vec()
        }
    }
}

/// What a [`VirtualCard`] saw.
#[derive(Debug, Clone, Default)]
pub struct CardLog {
    /// APDUs received, in order (controls excluded).
    pub apdus: Vec<Vec<u8>>,
    /// When each of [`CardLog::apdus`] was received (read in full from the connection).
    pub apdu_at: Vec<Instant>,
    pub power_on: usize,
    pub power_off: usize,
    pub resets: usize,
    /// vpcd asks for the ATR at power-on and on every presence poll (every 400 ms).
    pub atr_requests: usize,
    /// TCP connections made to the reader (the kernel accepts them before vpcd does).
    pub connections: usize,
    /// Connections on which vpcd sent at least one message: pcscd polled the card.
    pub sessions: usize,
    /// Power-ons per connection, in order (how to tell that pcscd took this insertion).
    pub power_on_per_connection: Vec<usize>,
    /// The card left on its own ([`Vanish`]).
    pub vanished: bool,
    /// The last I/O error, if any (for diagnostics).
    pub last_error: Option<String>,
}

struct CardShared {
    spec: CardSpec,
    port: u16,
    removed: AtomicBool,
    /// The current connection (a clone), so that `remove` can cut it.
    stream: Mutex<Option<TcpStream>>,
    log: Mutex<CardLog>,
    changed: Condvar,
}

impl CardShared {
    fn log(&self) -> MutexGuard<'_, CardLog> {
        self.log.lock().unwrap()
    }

    fn update(&self, f: impl FnOnce(&mut CardLog)) {
        f(&mut self.log());
        self.changed.notify_all();
    }
}

/// A card lying on a vpcd reader: a TCP client of the reader's port that answers vpcd
/// (2-byte big-endian length + payload; 1-byte controls `00` off, `01` on, `02` reset, `04`
/// ATR; longer messages are APDUs). `FF CA 00 00 ..` gets the UID and `90 00`, anything else
/// `6D 00`.
///
/// Runs on a std thread with blocking I/O: the protocol is strictly request/answer, the
/// `pcsc` crate it plays against is blocking too, and a thread works the same under a sync
/// test and a `#[tokio::test]` (no runtime to share or to block).
///
/// The card stays on the reader until [`VirtualCard::remove`] (or drop): if the connection
/// closes under it (pcscd killed or restarted), it reconnects, as a card lying on a reader
/// would be seen again by a new pcscd. A vanishing card ([`Vanish`]) does not come back.
///
/// Wait for the reader to report EMPTY before putting the next card on it. vpcd notices a
/// closed connection only when it next writes to it; when that write is a power-down or an
/// APDU rather than its presence poll, the next presence poll accepts the waiting new
/// connection and pcscd sees one card that never left: no removal, no insertion, no power-on.
pub struct VirtualCard {
    shared: Arc<CardShared>,
    thread: Option<JoinHandle<()>>,
}

impl VirtualCard {
    /// Puts a card on the reader at `port` ([`Pcscd::port`]).
    pub fn insert(port: u16, spec: CardSpec) -> VirtualCard {
        let shared = Arc::new(CardShared {
            spec,
            port,
            removed: AtomicBool::new(false),
            stream: Mutex::new(None),
            log: Mutex::new(CardLog::default()),
            changed: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("virtual-card-{port}"))
            .spawn(move || run_card(&s))
            .unwrap();
        VirtualCard {
            shared,
            thread: Some(thread),
        }
    }

    /// What the card is and how it behaves.
    pub fn spec(&self) -> &CardSpec {
        &self.shared.spec
    }

    /// What the card saw so far.
    pub fn log(&self) -> CardLog {
        self.shared.log().clone()
    }

    /// APDUs received so far.
    pub fn apdus(&self) -> Vec<Vec<u8>> {
        self.shared.log().apdus.clone()
    }

    /// Waits until `f(log)` holds (woken by every message the card handles).
    pub fn wait_until(&self, what: &str, deadline: Duration, f: impl Fn(&CardLog) -> bool) {
        let until = Instant::now() + deadline;
        let mut log = self.shared.log();
        while !f(&log) {
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {deadline:?} waiting for the card on port {} to see {what}; \
                 its log: {:?}",
                self.shared.port,
                *log
            );
            log = self.shared.changed.wait_timeout(log, left).unwrap().0;
        }
    }

    /// Takes the card off the reader: closes its connection. Returns what it saw.
    pub fn remove(mut self) -> CardLog {
        self.stop();
        self.log()
    }

    fn stop(&mut self) {
        self.shared.removed.store(true, Ordering::SeqCst);
        if let Some(stream) = self.shared.stream.lock().unwrap().take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The card's thread: connect (retrying while the reader is not listening), serve, and
/// reconnect if the reader closed the connection, until removed or vanished.
fn run_card(s: &CardShared) {
    while !s.removed.load(Ordering::SeqCst) {
        let stream = match TcpStream::connect(("127.0.0.1", s.port)) {
            Ok(stream) => stream,
            Err(e) => {
                // The reader is not listening (pcscd down or restarting): retry soon, or stop
                // at once when removed.
                let log = s.log();
                let mut log = s
                    .changed
                    .wait_timeout(log, Duration::from_millis(20))
                    .unwrap()
                    .0;
                log.last_error = Some(format!("connect: {e}"));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        {
            // Publish the connection, then re-check `removed` under the same lock, so that a
            // concurrent `remove` either sees this stream or we see its flag.
            let mut slot = s.stream.lock().unwrap();
            *slot = Some(stream.try_clone().unwrap());
            if s.removed.load(Ordering::SeqCst) {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
        s.update(|l| {
            l.connections += 1;
            l.power_on_per_connection.push(0);
        });
        let result = serve(s, stream);
        *s.stream.lock().unwrap() = None;
        match result {
            Ok(Ended::Vanished) => {
                s.update(|l| l.vanished = true);
                return;
            }
            Ok(Ended::Closed) => {}
            Err(e) => s.update(|l| l.last_error = Some(e.to_string())),
        }
    }
}

enum Ended {
    /// The reader closed the connection (or `remove` cut it).
    Closed,
    Vanished,
}

/// Acknowledge what arrives at once. Debian's vpcd (3.3) writes the length prefix and the
/// payload with two `send` calls: with Nagle on its side and delayed ACKs on ours, every
/// message would wait ~40 ms for our ACK of its first two bytes. Linux clears quick-ACK mode
/// by itself, so this is set again before every read.
fn quickack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

fn serve(s: &CardShared, mut stream: TcpStream) -> std::io::Result<Ended> {
    let mut first = true;
    loop {
        let mut len = [0u8; 2];
        quickack(&stream);
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Ended::Closed),
            Err(e) => return Err(e),
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        quickack(&stream);
        stream.read_exact(&mut msg)?;
        if first {
            first = false;
            s.update(|l| l.sessions += 1);
        }
        let reply: Option<Vec<u8>> = match msg.as_slice() {
            [0x00] => {
                s.update(|l| l.power_off += 1);
                None
            }
            [0x01] => {
                if let Some(chip) = &s.spec.chip {
                    chip.lock().unwrap().power_on();
                }
                s.update(|l| {
                    l.power_on += 1;
                    if let Some(n) = l.power_on_per_connection.last_mut() {
                        *n += 1;
                    }
                });
                None
            }
            [0x02] => {
                if let Some(chip) = &s.spec.chip {
                    chip.lock().unwrap().power_on();
                }
                s.update(|l| l.resets += 1);
                None
            }
            [0x04] => {
                s.update(|l| l.atr_requests += 1);
                Some(s.spec.atr.clone())
            }
            [other] => {
                s.update(|l| l.last_error = Some(format!("unknown control {other:#04x}")));
                None
            }
            apdu => {
                let at = Instant::now();
                let mut index = 0;
                s.update(|l| {
                    l.apdus.push(apdu.to_vec());
                    l.apdu_at.push(at);
                    index = l.apdus.len() - 1;
                });
                let answer = s.spec.answer(apdu);
                match s.spec.vanish.filter(|_| index == s.spec.vanish_at) {
                    Some(Vanish::BeforeAnswer) => {
                        let _ = stream.shutdown(Shutdown::Both);
                        return Ok(Ended::Vanished);
                    }
                    Some(Vanish::MidAnswer) => {
                        let len = u16::try_from(answer.len()).unwrap().to_be_bytes();
                        stream.write_all(&[&len[..], &answer[..1]].concat())?;
                        stream.flush()?;
                        let _ = stream.shutdown(Shutdown::Both);
                        return Ok(Ended::Vanished);
                    }
                    None => Some(answer),
                }
            }
        };
        if let Some(reply) = reply {
            let len = u16::try_from(reply.len()).unwrap().to_be_bytes();
            // One write: length and payload in one segment.
            stream.write_all(&[&len[..], &reply[..]].concat())?;
        }
    }
}
