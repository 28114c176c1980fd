//! A PostgreSQL server of one test's own, for tests that stop, crash or freeze it (the
//! shared server of `CASHLESS_TEST_PG` serves other tests at the same time and is never
//! touched): Debian's `initdb` and `pg_ctl` (package `postgresql`) on a free port, its data
//! directory and unix socket in a temporary directory, trust authentication for `postgres`.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, every command runs as the
//! `postgres` OS user (`runuser -u postgres --`), and the temporary directory is given to
//! it. The server is stopped (`immediate`) and its directory removed when the value is
//! dropped, also when the test fails.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Where Debian installs the server binaries of each major version.
const DEBIAN_PG_LIB: &str = "/usr/lib/postgresql";

/// How `pg_ctl stop` stops the server (`-m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Ends the sessions (their transactions roll back), checkpoints, exits.
    Fast,
    /// Kills every process without a checkpoint: a crash; the next start recovers from WAL.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// One private PostgreSQL server (see the module's text).
pub struct PgServer {
    /// Holds `data/` (the cluster), the unix socket and `server.log`.
    dir: tempfile::TempDir,
    /// The directory of `initdb`, `pg_ctl` and `postgres`.
    bin: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

impl PgServer {
    /// A new cluster (`initdb`), started; panics saying what to install when the binaries
    /// are missing.
    pub fn start() -> PgServer {
        PgServer::start_with("")
    }

    /// A server whose every commit waits until a synchronous standby has it
    /// (`synchronous_standby_names = '*'`): it hangs until [`PgServer::standby_of`] it runs.
    pub fn start_primary_of_sync_standby() -> PgServer {
        PgServer::start_with(
            "wal_level = replica\nmax_wal_senders = 4\nsynchronous_standby_names = '*'\n\
             synchronous_commit = on\n",
        )
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`: a copy of its data directory
    /// that follows its WAL), started on a port of its own; [`PgServer::promote`] makes it
    /// a primary. Once promoted it waits for no standby of its own.
    pub fn standby_of(primary: &PgServer) -> PgServer {
        let server = PgServer::new_dir(primary.bin.clone());
        server.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &server.data().to_string_lossy(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        server.append_conf(&format!(
            "\nport = {}\nunix_socket_directories = '{}'\nsynchronous_standby_names = ''\n",
            server.port,
            server.dir.path().display()
        ));
        server.start_again();
        server
    }

    /// Waits until a standby streams from this server synchronously.
    pub fn wait_for_sync_standby(&self) {
        for _ in 0..600 {
            let out = self
                .command("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-At", "-c", "SELECT sync_state FROM pg_stat_replication"])
                .stdin(Stdio::null())
                .output()
                .expect("run psql");
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == "sync")
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no synchronous standby within 60 s:\n{}", self.log());
    }

    /// Promotes a standby to primary (`pg_ctl promote`, waiting until it takes writes).
    pub fn promote(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-w",
                "-t",
                "60",
                "promote",
            ],
        );
    }

    /// Kills the postmaster and every backend with `SIGKILL`: the machine dying, as far
    /// as its clients can tell.
    pub fn kill9(&self) {
        let postmaster = self.postmaster_pid();
        let children = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .expect("run pgrep");
        // The postmaster first (else it notices a child die and ends the others itself);
        // a child already gone by the time its turn comes is fine.
        let _ = Command::new("kill")
            .args(["-KILL", &postmaster])
            .args(String::from_utf8_lossy(&children.stdout).split_whitespace())
            .stderr(Stdio::null())
            .status();
        for _ in 0..600 {
            if !std::path::Path::new(&format!("/proc/{postmaster}")).exists()
                || std::fs::read_to_string(format!("/proc/{postmaster}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the postmaster {postmaster} survived SIGKILL");
    }

    /// The postmaster's pid, from `postmaster.pid`.
    fn postmaster_pid(&self) -> String {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("postmaster.pid of a running server");
        pid_file
            .lines()
            .next()
            .expect("the postmaster's pid")
            .trim()
            .to_owned()
    }

    /// A server with `extra_conf` appended to its `postgresql.conf`, started.
    fn start_with(extra_conf: &str) -> PgServer {
        let bin = server_bin().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server binaries under {DEBIAN_PG_LIB}/*/bin: this test starts \
                 (and stops) a PostgreSQL server of its own; install them with \
                 `apt-get install postgresql` (see the README)"
            )
        });
        let server = PgServer::new_dir(bin);
        server.run(
            "initdb",
            &[
                "-D",
                &server.data().to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        // Settings in the cluster's own file, so that every start has them.
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nmax_connections = 200\n{extra_conf}",
            server.port,
            server.dir.path().display()
        );
        server.append_conf(&conf);
        server.start_again();
        server
    }

    /// A server value over a new temporary directory (its `data/` not made yet) and a free
    /// port.
    fn new_dir(bin: PathBuf) -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("cashless-pg-")
            .tempdir_in("/tmp")
            .expect("create the server's temporary directory");
        if running_as_root() {
            run_checked(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        PgServer {
            dir,
            bin,
            port: free_port(),
        }
    }

    /// Settings in the cluster's own file, so that every start has them (the last of a
    /// setting wins).
    fn append_conf(&self, conf: &str) {
        let conf_path = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        text.push_str(conf);
        // Written as the server's user would (runs as root: the file keeps its owner).
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
    }

    /// The superuser's URL of the maintenance database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server (`pg_ctl stop -m MODE`) and waits until it is gone.
    pub fn stop(&self, mode: StopMode) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                mode.as_str(),
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    /// Freezes the server (`SIGSTOP` to the postmaster and every backend): it keeps its
    /// connections open and answers nothing, like a server cut off by the network without a
    /// reset. [`PgServer::thaw`] lets it go on.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Sends `signal` to the postmaster and its children.
    fn signal(&self, signal: &str) {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("postmaster.pid of a running server");
        let postmaster = pid_file
            .lines()
            .next()
            .expect("the postmaster's pid")
            .trim();
        let children = Command::new("pgrep")
            .args(["-P", postmaster])
            .output()
            .expect("run pgrep");
        let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert!(
            !pids.is_empty(),
            "the postmaster {postmaster} has no children"
        );
        pids.push(postmaster.to_owned());
        run_checked(Command::new("kill").arg(signal).args(&pids));
    }

    /// The server's log so far, for diagnostics.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs; panics with its output if it fails.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args).current_dir(self.dir.path());
        run_checked(&mut cmd)
    }

    /// One of the server's programs, run as `postgres` when the tests run as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&path);
            cmd
        } else {
            Command::new(&path)
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// The `bin` directory of the newest server version Debian installed.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_PG_LIB)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

#[track_caller]
fn run_checked(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
