//! The writer thread and its group commit, the checkpointer, and the way callers reach
//! the writer (`write`, `write_as`) and the readers (`read`).
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every commit waits for the
//! disk. So a single thread owns the write connection and commits several jobs per
//! transaction: it takes the first waiting job, then whatever else is already queued (up to
//! [`GROUP_JOBS_MAX`]), runs each job inside its own SAVEPOINT (a failing job is rolled back
//! alone), commits once, and only then answers every job. No answer leaves before its
//! operation is durable.

use super::{CHECKPOINT_INTERVAL_MS, GROUP_JOBS_MAX, SqliteStore, internal};
use crate::ledger::caller::Terminal;
use crate::ledger::flow::Context;
use crate::ledger::store::StoreError;
use chrono::Utc;
use rusqlite::Connection;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};

pub(super) type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
pub(super) type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

impl SqliteStore {
    /// Runs `f` on the writer thread inside a savepoint of a group-committed transaction.
    /// An `Err` rolls back what `f` wrote; the answer arrives only after the commit.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |committed| {
                let _ = reply_tx.send(committed.and(result));
            });
            (ok, finish)
        });
        let sender = self
            .inner
            .writer
            .lock()
            .map_err(internal)?
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is shutting down".into()))?;
        sender
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        reply_rx
            .await
            .map_err(|_| StoreError::Unavailable("the write was not carried out; retry".into()))?
    }

    /// Runs `f` like [`Self::write`], with the flow's context for a terminal's request (one
    /// `now` for the whole job).
    pub(super) async fn write_as<T, F>(
        &self,
        terminal: Terminal,
        request_id: String,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Context<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (limits, retention_days) = (self.inner.limits, self.inner.retention_days);
        let taxes = Arc::clone(&self.inner.taxes);
        self.write(move |conn| {
            let ctx = Context {
                terminal: &terminal,
                request_id: &request_id,
                now: Utc::now(),
                limits,
                retention_days,
                taxes: &taxes,
            };
            f(conn, &ctx)
        })
        .await
    }

    /// Runs `f` on one of the read connections, off the async runtime.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // The first free reader from the next in turn; only when all are busy, wait for
            // that one. A long read (a headquarters page, a report) then never holds up a
            // short one (a terminal's) while another reader is free.
            let n = inner.readers.len();
            let first = inner.next_reader.fetch_add(1, Ordering::Relaxed) % n;
            let free = (0..n).find_map(|k| inner.readers[(first + k) % n].try_lock().ok());
            let conn = match free {
                Some(conn) => conn,
                None => inner.readers[first].lock().map_err(internal)?,
            };
            f(&conn)
        })
        .await
        .map_err(internal)?
    }

    /// Runs `f` on the background reader's connection, at the lowest CPU priority, after the
    /// reads queued before it: for headquarters' pages and reports, which must never take the
    /// core from a payment (the terminals' reads and the writer keep theirs).
    pub(super) async fn read_in_background<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let job: super::BackgroundJob = Box::new(move |conn| {
            // A read whose caller has gone (a page given up on, a browser closed) is not
            // run: refreshing a slow page does not pile reads up.
            if !done_tx.is_closed() {
                let _ = done_tx.send(f(conn));
            }
        });
        let queue = self
            .inner
            .background
            .lock()
            .map_err(internal)?
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the store is closing".into()))?;
        queue
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the background reader has stopped".into()))?;
        done_rx.await.map_err(|_| {
            StoreError::Internal(
                "a headquarters read failed without an answer (see the log)".into(),
            )
        })?
    }
}

/// The CPU priority of the background reader's thread: the lowest (`nice` 19). When the
/// ledger's core is busy with payments, the scheduler gives this thread a sliver of it
/// (about 1.5% against a thread at the default priority), so a headquarters page never
/// makes an order wait for the core; when the core is idle, the page runs at full speed.
pub(super) const BACKGROUND_NICE: i32 = 19;

/// Runs the background reads one after another, at [`BACKGROUND_NICE`]. A read that panics
/// fails alone (its caller gets an error) and the thread goes on with the next.
pub(super) fn background_loop(conn: &Connection, mut rx: mpsc::Receiver<super::BackgroundJob>) {
    lower_this_threads_priority();
    while let Some(job) = rx.blocking_recv() {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))).is_err() {
            tracing::error!("a headquarters read panicked; the next ones go on");
        }
    }
}

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`] (on Linux, `nice` is a
/// thread's own); where that fails, the reads go on at the usual priority, said in the log.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE)
    {
        tracing::warn!(error = %e, "headquarters' reads run at the usual CPU priority");
    }
}

pub(super) fn checkpoint_loop(conn: &Connection, stop: &std::sync::mpsc::Receiver<()>) {
    let interval = std::time::Duration::from_millis(CHECKPOINT_INTERVAL_MS);
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        // PASSIVE never blocks the writer or readers; it copies what it can.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "checkpoint failed");
        }
    }
}

pub(super) fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut group: Vec<Job> = Vec::with_capacity(GROUP_JOBS_MAX);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < GROUP_JOBS_MAX {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        run_group(&conn, &mut group);
    }
}

/// Runs one statement through the statement cache (savepoints run thousands of times a second).
pub(super) fn exec_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn run_group(conn: &Connection, group: &mut Vec<Job>) {
    if let Err(e) = exec_cached(conn, "BEGIN IMMEDIATE") {
        // Dropping the jobs unanswered tells each caller the write was not carried out.
        tracing::error!(error = %e, jobs = group.len(), "cannot begin a write transaction");
        group.clear();
        return;
    }
    let mut finishers: Vec<Finish> = Vec::with_capacity(group.len());
    for job in group.drain(..) {
        if let Err(e) = exec_cached(conn, "SAVEPOINT job") {
            tracing::error!(error = %e, "cannot open a savepoint; the job is not run");
            continue;
        }
        let (ok, finish) = job(conn);
        let closed = if ok {
            exec_cached(conn, "RELEASE job")
        } else {
            exec_cached(conn, "ROLLBACK TO job").and_then(|()| exec_cached(conn, "RELEASE job"))
        };
        if let Err(e) = closed {
            tracing::error!(error = %e, "cannot close a savepoint");
        }
        finishers.push(finish);
    }
    let committed = exec_cached(conn, "COMMIT");
    if let Err(e) = &committed {
        tracing::error!(error = %e, "commit failed; the whole group is rolled back");
        let _ = conn.execute_batch("ROLLBACK");
    }
    for finish in finishers {
        finish(match &committed {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        });
    }
}
