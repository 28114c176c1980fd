//! The export of a terminal that never comes back online: its unacknowledged journal and
//! pending shift close-outs, in the format `cashless ledger import` reads
//! ([`crate::protocol::export`]).

use super::journal::{EntryState, Journal};
use super::sync::batch_operation;
use super::tap::{each_unacknowledged_page, recover};
use crate::protocol::api::format_time;
use crate::protocol::export::{EXPORT_CLOSEOUTS_MAX, EXPORT_FORMAT, EXPORT_VERSION};
use chrono::Utc;
use serde_json::json;
use std::io::Write;
use std::path::Path;

/// Writes the journal's unacknowledged operations, then its pending shift close-outs, as a
/// file `cashless ledger import` applies, for a terminal that never comes back online.
/// In-doubt attempts are left out: their voids are in the file (recovery adds any that are
/// missing first). Returns how many operations and close-outs it wrote.
pub fn export(journal_path: &Path, terminal: &str, out: &Path) -> anyhow::Result<(usize, usize)> {
    let mut j = Journal::open(journal_path)
        .map_err(|e| anyhow::anyhow!("cannot open the journal {}: {e}", journal_path.display()))?;
    recover(&mut j)?;
    // Read first, so that too many of them fail the export before anything is written.
    // A terminal closes a few shifts a day: more than the bound means something else is
    // wrong, and the export says so rather than leave some out.
    let closeouts = j.pending_closeouts(EXPORT_CLOSEOUTS_MAX + 1)?;
    if closeouts.len() > EXPORT_CLOSEOUTS_MAX {
        anyhow::bail!(
            "the journal holds more than {EXPORT_CLOSEOUTS_MAX} shift close-outs the ledger has \
             not recorded; nothing exported"
        );
    }
    // Written next to the target and renamed, so a half-written export never exists; and
    // streamed page by page, so a terminal with a long backlog does not hold it in memory.
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let head = json!({
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "terminal": terminal,
        "exported_at": format_time(Utc::now()),
    })
    .to_string();
    // `{...}` without its closing brace, then the operations, then the close-outs, last.
    w.write_all(head.trim_end_matches('}').as_bytes())?;
    w.write_all(b",\"operations\":[")?;
    let mut count = 0usize;
    each_unacknowledged_page(&j, |page| {
        for e in page
            .iter()
            .filter(|e| matches!(e.state, EntryState::Pending | EntryState::Rejected))
        {
            if count > 0 {
                w.write_all(b",")?;
            }
            serde_json::to_writer(&mut w, &batch_operation(e)?)?;
            count += 1;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    w.write_all(b"],\"closeouts\":")?;
    let closeouts: Vec<_> = closeouts.into_iter().map(|c| c.closeout).collect();
    serde_json::to_writer(&mut w, &closeouts)?;
    w.write_all(b"}\n")?;
    let file = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    file.sync_all()?;
    std::fs::rename(&tmp, out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    Ok((count, closeouts.len()))
}
