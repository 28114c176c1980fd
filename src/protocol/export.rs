//! The file `cashless terminal export` writes and `cashless ledger import` reads: a terminal's
//! unacknowledged operations, each exactly as it would be sent in `POST /v1/batch`, then its
//! unrecorded shift close-outs, each as `POST /v1/shifts` takes it.
//!
//! ```json
//! {"format": "cashless-journal-export", "version": 1, "terminal": "bar-1",
//!  "exported_at": "2026-07-04T23:59:00.000Z", "operations": [...], "closeouts": [...]}
//! ```

/// The `format` field of a terminal's journal export.
pub const EXPORT_FORMAT: &str = "cashless-journal-export";
/// The export version this program reads and writes.
pub const EXPORT_VERSION: u32 = 1;
/// Shift close-outs an export holds at most (`cashless terminal export` refuses to write
/// more, `import` to read more).
pub const EXPORT_CLOSEOUTS_MAX: usize = 1_000;
