//! `cashless ledger housekeeping`: what keeps a ledger's database from growing for ever,
//! safe to run while the ledger serves (every step is a short transaction of its own).
//!
//! 1. The keys of declines past their retention are deleted, [`KEY_PURGE_BATCH`] at a time.
//!    Applied operations keep theirs for ever: a late replay is always recognised and
//!    answered as before, never applied twice.
//! 2. Scan-log and audit-log rows older than `archive_after_days` are archived to a new file
//!    in `archive_dir`, `cashless-archive-<UTC time>.jsonl.gz` (each log's newest row always
//!    stays, so that SQLite never hands its id out again): one JSON line per row,
//!    `{"table": ..., "id": ..., "row": {...}}`, in gzip members of at most
//!    [`ARCHIVE_CHUNK_ROWS`] rows. Each member is written and the file fsynced (the
//!    directory too, once the file exists) *before* the rows it holds are removed, by
//!    their exact ids, in one transaction. A run cut short leaves a valid file (whole
//!    members: a failed append is cut back) and rows not yet removed, which the next run
//!    archives again into its own file: a row may then be in two files, never in none (ids
//!    are never reused, so `(table, id)` names a row across files). Runs may overlap (two
//!    timers, a run by hand): a row removed by one is carried by that one alone. `zcat` reads the files, and so
//!    does any gzip reader that reads every member.
//!
//! A run archives at most [`ARCHIVE_ROWS_PER_RUN_MAX`] rows; memory stays at one chunk.

use super::store::{AdminStore, ArchivedLog, ArchivedRow, StoreError};
use chrono::{DateTime, Utc};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Decline keys deleted per transaction.
pub const KEY_PURGE_BATCH: u32 = 5_000;
/// Rows per gzip member, per fsync, and per removing transaction.
pub const ARCHIVE_CHUNK_ROWS: u32 = 2_000;
/// Rows one run archives, at most: a first run on a large festival's database stops there,
/// and the next run (the timer's) goes on.
pub const ARCHIVE_ROWS_PER_RUN_MAX: u64 = 5_000_000;
/// The longest `archive_after_days` may be: ten years.
pub const ARCHIVE_AFTER_DAYS_MAX: u32 = 3_650;

/// What a run is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HousekeepingSettings {
    /// Where archive files go; must exist and be writable.
    pub archive_dir: PathBuf,
    /// Rows older than this many days are archived (0: every row written before `now`).
    pub archive_after_days: u32,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HousekeepingReport {
    /// Decline keys deleted.
    pub keys_purged: u64,
    /// Scan-log rows archived and removed.
    pub scans_archived: u64,
    /// Audit-log rows archived and removed.
    pub audit_rows_archived: u64,
    /// The archive file written, if any row was archived.
    pub archive_file: Option<PathBuf>,
    /// The run stopped at [`ARCHIVE_ROWS_PER_RUN_MAX`]: rows are left for the next one.
    pub more_left: bool,
}

/// Why a run failed. Rows are removed only once archived and fsynced, so a failure loses
/// nothing: run it again.
#[derive(Debug, thiserror::Error)]
pub enum HousekeepingError {
    /// The archive directory or file could not be written.
    #[error("archive {}: {source}", path.display())]
    Archive {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The name of a run's archive file.
pub fn archive_file_name(now: DateTime<Utc>) -> String {
    format!(
        "cashless-archive-{}.jsonl.gz",
        now.format("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// The JSON lines of `rows` of `log`, compressed as one complete gzip member.
pub fn gzip_member(log: ArchivedLog, rows: &[ArchivedRow]) -> std::io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for row in rows {
        // The row is the database's own JSON text, put in as it is (it is an object).
        writeln!(
            gz,
            "{{\"table\":\"{}\",\"id\":{},\"row\":{}}}",
            log.table(),
            row.id,
            row.json
        )?;
    }
    gz.finish()
}

/// Checks that `dir` is a directory this process can create files in, before anything is
/// changed.
pub fn check_archive_dir(dir: &Path) -> Result<(), HousekeepingError> {
    let err = |source| HousekeepingError::Archive {
        path: dir.to_owned(),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    let probe = dir.join(format!(".cashless-probe-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)?;
    Ok(())
}

/// The archive file of a run, created on its first chunk.
struct ArchiveFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl ArchiveFile {
    /// Appends a member and fsyncs the file (and, when it was just created, its
    /// directory): once this returns, the member survives a power cut.
    async fn append_durably(&mut self, member: Vec<u8>) -> Result<(), HousekeepingError> {
        let path = self.path.clone();
        let file = self.file.take();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let created = file.is_none();
            let mut file = match file {
                Some(f) => f,
                None => std::fs::OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)?,
            };
            let whole = file.metadata()?.len();
            let appended = file.write_all(&member).and_then(|()| file.sync_all());
            if let Err(e) = appended {
                // A member cut short (a full disk) would make the whole file unreadable to
                // gzip readers: cut the file back to its last whole member (or remove it,
                // when it holds none), then fail; nothing was removed from the database.
                if created {
                    let _ = std::fs::remove_file(&path);
                } else {
                    let _ = file.set_len(whole).and_then(|()| file.sync_all());
                }
                return Err(e);
            }
            if created && let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(file)
        })
        .await
        .map_err(|e| HousekeepingError::Archive {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|source| HousekeepingError::Archive {
            path: self.path.clone(),
            source,
        })?;
        self.file = Some(file);
        Ok(())
    }
}

/// How many of a chunk's rows to archive, and whether the log is done for this run: the
/// rows before the first one not due (ids grow with time, so the rest are newer too; one
/// that committed late, older than its neighbours, waits for the next run), and done when
/// a row was not due or the chunk was not full.
fn chunk_plan(rows: &[ArchivedRow], limit: u32) -> (usize, bool) {
    let due = rows.iter().take_while(|r| r.due).count();
    let done = due < rows.len() || rows.len() < limit as usize;
    (due, done)
}

/// Runs housekeeping once (see the module's text); `now` sets the archive's cut-off.
pub async fn run<S: AdminStore>(
    store: &S,
    settings: &HousekeepingSettings,
    now: DateTime<Utc>,
) -> Result<HousekeepingReport, HousekeepingError> {
    check_archive_dir(&settings.archive_dir)?;
    let mut report = HousekeepingReport::default();
    loop {
        let n = store.purge_expired_keys(KEY_PURGE_BATCH).await?;
        report.keys_purged += n;
        if n < u64::from(KEY_PURGE_BATCH) {
            break;
        }
    }

    let before = now - chrono::Duration::days(i64::from(settings.archive_after_days));
    let mut archive = ArchiveFile {
        path: settings.archive_dir.join(archive_file_name(now)),
        file: None,
    };
    let mut archived_total = 0u64;
    'logs: for log in ArchivedLog::ALL {
        let mut after_id = 0;
        loop {
            let rows = store
                .archive_candidates(log, before, after_id, ARCHIVE_CHUNK_ROWS)
                .await?;
            let (due, done) = chunk_plan(&rows, ARCHIVE_CHUNK_ROWS);
            if due > 0 {
                if archived_total >= ARCHIVE_ROWS_PER_RUN_MAX {
                    report.more_left = true;
                    break 'logs;
                }
                let rows = &rows[..due];
                let member =
                    gzip_member(log, rows).map_err(|source| HousekeepingError::Archive {
                        path: archive.path.clone(),
                        source,
                    })?;
                archive.append_durably(member).await?;
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                let removed = store.remove_archived(log, ids).await?;
                archived_total += removed;
                match log {
                    ArchivedLog::Scans => report.scans_archived += removed,
                    ArchivedLog::Audit => report.audit_rows_archived += removed,
                }
            }
            // Not done: the whole (full) chunk was due and archived; go on after it.
            match rows.last() {
                Some(last) if !done => after_id = last.id,
                _ => break,
            }
        }
    }
    if archive.file.is_some() {
        report.archive_file = Some(archive.path);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn members_concatenate_into_one_readable_file_of_json_lines() {
        let a = gzip_member(
            ArchivedLog::Scans,
            &[ArchivedRow {
                id: 7,
                due: true,
                json: r#"{"scan_id":7,"card_uid":"04AA"}"#.into(),
            }],
        )
        .unwrap();
        let b = gzip_member(
            ArchivedLog::Audit,
            &[ArchivedRow {
                id: 9,
                due: true,
                json: r#"{"log_id":9,"details":{"units":3}}"#.into(),
            }],
        )
        .unwrap();
        let file = [a, b].concat();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&file[..])
            .read_to_string(&mut text)
            .unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["table"], "nfc_scan_log");
        assert_eq!(lines[0]["row"]["card_uid"], "04AA");
        assert_eq!(lines[1]["id"], 9);
        assert_eq!(lines[1]["row"]["details"]["units"], 3);
    }

    #[test]
    fn a_chunk_is_archived_up_to_its_first_row_not_due() {
        let row = |id, due| ArchivedRow {
            id,
            due,
            json: "{}".into(),
        };
        // A full chunk of due rows: archive it all, and go on.
        assert_eq!(chunk_plan(&[row(1, true), row(2, true)], 2), (2, false));
        // A short chunk: the log is done.
        assert_eq!(chunk_plan(&[row(1, true)], 2), (1, true));
        assert_eq!(chunk_plan(&[], 2), (0, true));
        // A row not due: those before it, and done (a late straggler after it waits).
        assert_eq!(chunk_plan(&[row(1, true), row(2, false)], 2), (1, true));
        assert_eq!(chunk_plan(&[row(1, false), row(2, true)], 2), (0, true));
    }

    #[test]
    fn archive_files_are_named_by_their_run_to_the_millisecond() {
        let t = DateTime::parse_from_rfc3339("2026-12-04T03:15:16.917Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            archive_file_name(t),
            "cashless-archive-20261204T031516.917Z.jsonl.gz"
        );
    }
}
