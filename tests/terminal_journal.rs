#![allow(clippy::unwrap_used)]
//! The terminal journal on real SQLite files in temporary directories: sequence numbers,
//! durability across reopen, state changes, an unwritable and a full journal, the card
//! replica and `local_charges`, the catalog and staff caches, the scan log, shift totals and
//! close-outs.

use cashless::domain::{CardUid, Cents, ClientRequestId, MinAge, ProductId, StaffId, TerminalSeq};
use cashless::protocol::api::{Mode, SHIFT_TOTAL_CENTS_MAX, Scan, StaffRole};
use cashless::terminal::core::policy::ReplicaCard;
use cashless::terminal::journal::{
    CachedStaff, Catalog, CatalogProduct, ClosedShift, CloseoutState, Decision, Entry, EntryState,
    FeedRow, Journal, JournalError, NewEntry, OperationKind, ShiftSummary, StateChange,
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A fixed clock: `t(s)` is `s` seconds after an arbitrary start.
fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_750_000_000 + seconds, 0).unwrap()
}

fn uid(text: &str) -> CardUid {
    CardUid::parse(text).unwrap()
}

fn seq(n: i64) -> TerminalSeq {
    TerminalSeq::new(n).unwrap()
}

const CARD: &str = "04A1B2C3D4E5F6";
const OTHER_CARD: &str = "04FFFFFF";

/// A temporary directory holding one journal file.
struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.db");
        Fixture { dir, path }
    }

    fn open(&self) -> Journal {
        Journal::open(&self.path).unwrap()
    }
}

fn new_entry(
    operation: OperationKind,
    card: Option<&str>,
    amount: i64,
    decision: Option<Decision>,
    state: EntryState,
) -> NewEntry {
    NewEntry {
        client_request_id: ClientRequestId::new_random(),
        operation,
        mode: if decision == Some(Decision::ApprovedOffline) {
            Mode::Offline
        } else {
            Mode::Online
        },
        card_uid: card.map(uid),
        amount_cents: Cents::new(amount),
        decision,
        decline_reason: None,
        state,
    }
}

/// An offline sale of `total` on `CARD`, approved and waiting for replay.
fn offline_sale(total: i64) -> NewEntry {
    new_entry(
        OperationKind::Order,
        Some(CARD),
        -total,
        Some(Decision::ApprovedOffline),
        EntryState::Pending,
    )
}

/// Appends with a request body that embeds the ids the journal assigns, plus `padding`
/// bytes of text (to fill pages quickly).
fn append_padded(
    journal: &mut Journal,
    entry: NewEntry,
    padding: usize,
    now: DateTime<Utc>,
) -> Result<Entry, JournalError> {
    let crid = entry.client_request_id;
    let amount = entry.amount_cents.get();
    journal.append(
        entry,
        move |seq| {
            json!({
                "client_request_id": crid,
                "terminal_seq": seq,
                "amount": amount,
                "note": "x".repeat(padding),
            })
        },
        now,
    )
}

fn append(journal: &mut Journal, entry: NewEntry, now: DateTime<Utc>) -> Entry {
    append_padded(journal, entry, 0, now).unwrap()
}

fn seqs(entries: &[Entry]) -> Vec<i64> {
    entries.iter().map(|e| e.terminal_seq.get()).collect()
}

/// Every entry, through the export pages (`unacknowledged`) plus the synced ones by number.
fn all_unacknowledged(journal: &Journal, page: usize) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    loop {
        let after = out.last().map(|e| e.terminal_seq);
        let batch = journal.unacknowledged(after, page).unwrap();
        let last_page = batch.len() < page;
        out.extend(batch);
        if last_page {
            return out;
        }
        assert!(out.len() <= 100_000, "export does not end");
    }
}

#[test]
fn seqs_are_gapless_across_many_appends_and_a_reopen() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    for i in 0..150 {
        let e = append(&mut journal, offline_sale(100), t(i));
        assert_eq!(e.terminal_seq.get(), i + 1);
        // The body the journal stored embeds the number it assigned.
        assert_eq!(e.request().unwrap()["terminal_seq"], json!(i + 1));
    }
    drop(journal);
    let mut journal = fx.open();
    for i in 150..200 {
        let e = append(&mut journal, offline_sale(100), t(i));
        assert_eq!(e.terminal_seq.get(), i + 1);
    }
    let all = all_unacknowledged(&journal, 64);
    assert_eq!(seqs(&all), (1..=200).collect::<Vec<_>>());
    assert_eq!(journal.counts().unwrap().last_seq, Some(seq(200)));
}

#[test]
fn an_appended_entry_is_all_there_after_reopen() {
    let fx = Fixture::new();
    let mut entry = new_entry(
        OperationKind::Order,
        Some(CARD),
        -750,
        Some(Decision::Declined),
        EntryState::Pending,
    );
    entry.decline_reason = Some("OFFLINE_LIMIT".into());
    let crid = entry.client_request_id;
    let now = Utc.timestamp_millis_opt(1_750_000_123_456).unwrap();
    let written = {
        let mut journal = fx.open();
        journal
            .append(
                entry.clone(),
                |seq| json!({"client_request_id": crid, "terminal_seq": seq, "total_cents": 750}),
                now,
            )
            .unwrap()
    };
    assert_eq!(written.client_request_id, crid);
    assert_eq!(written.created_at, now);
    let journal = fx.open();
    let read = journal.entry(written.terminal_seq).unwrap().unwrap();
    assert_eq!(read, written);
    assert_eq!(read.operation, OperationKind::Order);
    assert_eq!(read.mode, Mode::Online);
    assert_eq!(read.card_uid, Some(uid(CARD)));
    assert_eq!(read.amount_cents, Cents::new(-750));
    assert_eq!(read.decision, Some(Decision::Declined));
    assert_eq!(read.decline_reason.as_deref(), Some("OFFLINE_LIMIT"));
    assert_eq!(read.state, EntryState::Pending);
    assert_eq!(read.attempts, 0);
    assert_eq!(read.synced_at, None);
    assert_eq!(
        read.request().unwrap(),
        json!({"client_request_id": crid, "terminal_seq": 1, "total_cents": 750})
    );
    assert_eq!(journal.entry(seq(2)).unwrap(), None);
}

#[test]
fn refused_appends_write_nothing_and_take_no_number() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    let first = append(&mut journal, offline_sale(100), t(0));

    // The same client_request_id twice.
    let mut again = offline_sale(100);
    again.client_request_id = first.client_request_id;
    // A body that does not carry the assigned number, or the entry's id.
    let wrong_seq = offline_sale(100);
    let wrong_seq_crid = wrong_seq.client_request_id;
    let no_crid = offline_sale(100);
    // An order that credits the card, a top-up that debits it.
    let credit_order = new_entry(
        OperationKind::Order,
        Some(CARD),
        100,
        None,
        EntryState::Pending,
    );
    let debit_topup = new_entry(
        OperationKind::Recharge,
        Some(CARD),
        -100,
        None,
        EntryState::Pending,
    );

    let results = [
        append_padded(&mut journal, again, 0, t(1)),
        journal.append(
            wrong_seq,
            move |s| json!({"client_request_id": wrong_seq_crid, "terminal_seq": s.get() + 1}),
            t(1),
        ),
        journal.append(no_crid, |s| json!({"terminal_seq": s}), t(1)),
        append_padded(&mut journal, credit_order, 0, t(1)),
        append_padded(&mut journal, debit_topup, 0, t(1)),
    ];
    for (i, r) in results.into_iter().enumerate() {
        assert!(
            matches!(r, Err(JournalError::Invalid(_))),
            "case {i}: {r:?}"
        );
    }
    assert_eq!(journal.counts().unwrap().pending, 1);
    let next = append(&mut journal, offline_sale(100), t(2));
    assert_eq!(next.terminal_seq.get(), 2, "a refused append took a number");
}

/// What the test does to entry 1 before the move under test.
#[derive(Debug, Clone, Copy)]
enum Setup {
    Pending,
    InDoubt,
    Synced,
    Rejected,
}

#[test]
fn state_changes_follow_the_table_and_record_the_ledger_answer() {
    use EntryState as S;
    // (state before, move to, allowed)
    let cases = [
        (Setup::Pending, S::Synced, true),
        (Setup::Pending, S::Rejected, true),
        (Setup::Pending, S::InDoubt, true),
        (Setup::InDoubt, S::Pending, true),
        (Setup::InDoubt, S::Synced, true),
        (Setup::Rejected, S::Pending, true),
        (Setup::Rejected, S::Synced, false),
        (Setup::Synced, S::Pending, false),
        (Setup::Synced, S::Rejected, false),
        (Setup::Synced, S::Synced, false),
    ];
    for (setup, to, allowed) in cases {
        let fx = Fixture::new();
        let mut journal = fx.open();
        let entry = new_entry(OperationKind::Order, Some(CARD), -500, None, S::Pending);
        let e = append(&mut journal, entry, t(0));
        let before = match setup {
            Setup::Pending => S::Pending,
            Setup::InDoubt => S::InDoubt,
            Setup::Synced => S::Synced,
            Setup::Rejected => S::Rejected,
        };
        if before != S::Pending {
            journal
                .set_state(e.terminal_seq, before, None, None, None, t(1))
                .unwrap();
        }
        let snapshot = journal.entry(e.terminal_seq).unwrap().unwrap();
        let answer = r#"{"status":"approved","new_balance_cents":500}"#;
        let r = journal.set_state(
            e.terminal_seq,
            to,
            Some(Decision::ApprovedOnline),
            None,
            Some((201, answer)),
            t(2),
        );
        let after = journal.entry(e.terminal_seq).unwrap().unwrap();
        let label = format!("{setup:?} -> {to}");
        if allowed {
            r.unwrap();
            assert_eq!(after.state, to, "{label}");
            assert_eq!(after.decision, Some(Decision::ApprovedOnline), "{label}");
            assert_eq!(after.ledger_status, Some(201), "{label}");
            assert_eq!(after.ledger_body.as_deref(), Some(answer), "{label}");
            assert_eq!(after.attempts, 1, "{label}");
            assert_eq!(after.updated_at, t(2), "{label}");
            assert_eq!(after.synced_at, (to == S::Synced).then(|| t(2)), "{label}");
        } else {
            assert!(matches!(r, Err(JournalError::Invalid(_))), "{label}: {r:?}");
            assert_eq!(after, snapshot, "{label}: a refused move changed the entry");
        }
    }
}

#[test]
fn settling_keeps_what_is_not_given_and_refuses_unknown_entries() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    let mut entry = offline_sale(300);
    entry.decline_reason = None;
    let e = append(&mut journal, entry, t(0));

    journal
        .record_attempt_failure(e.terminal_seq, "connection refused", t(1))
        .unwrap();
    journal
        .record_attempt_failure(e.terminal_seq, &"é".repeat(2000), t(2))
        .unwrap();
    let failed = journal.entry(e.terminal_seq).unwrap().unwrap();
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.state, EntryState::Pending);
    let last_error = failed.last_error.unwrap();
    assert!(last_error.len() <= 1024 && last_error.starts_with('é'));

    // Rejected for good: the decision stays, the answer is kept.
    journal
        .set_state(
            e.terminal_seq,
            EntryState::Rejected,
            None,
            Some("INVALID_REQUEST"),
            Some((400, r#"{"error":{"code":"INVALID_REQUEST"}}"#)),
            t(3),
        )
        .unwrap();
    let rejected = journal.entry(e.terminal_seq).unwrap().unwrap();
    assert_eq!(rejected.decision, Some(Decision::ApprovedOffline));
    assert_eq!(rejected.decline_reason.as_deref(), Some("INVALID_REQUEST"));
    assert_eq!(rejected.ledger_status, Some(400));
    assert_eq!(rejected.attempts, 3);
    // A rejected entry is not sent any more, so it cannot fail a send.
    assert!(matches!(
        journal.record_attempt_failure(e.terminal_seq, "x", t(4)),
        Err(JournalError::Invalid(_))
    ));

    let unknown = seq(99);
    let results = [
        journal.set_state(unknown, EntryState::Synced, None, None, None, t(5)),
        journal.record_attempt_failure(unknown, "x", t(5)),
        journal.set_state(
            e.terminal_seq,
            EntryState::Pending,
            None,
            None,
            Some((999, "")),
            t(5),
        ),
    ];
    for r in results {
        assert!(matches!(r, Err(JournalError::Invalid(_))), "{r:?}");
    }
    assert_eq!(journal.counts().unwrap().rejected, 1);
}

#[test]
fn a_batch_settles_all_or_nothing() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    for i in 0..6 {
        append(&mut journal, offline_sale(100), t(i));
    }
    let change = |n: i64, state: EntryState, status: u16| StateChange {
        seq: seq(n),
        state,
        decision: None,
        reason: None,
        ledger: Some((status, "{}")),
    };
    // One refused change (entry 99 does not exist) and nothing of the batch is written.
    let refused = [
        change(1, EntryState::Synced, 201),
        change(99, EntryState::Synced, 201),
    ];
    let r = journal.set_states(&refused, t(10));
    assert!(matches!(r, Err(JournalError::Invalid(_))), "{r:?}");
    assert_eq!(journal.counts().unwrap().synced, 0);
    assert_eq!(journal.entry(seq(1)).unwrap().unwrap().attempts, 0);

    let results = [
        change(1, EntryState::Synced, 201),
        change(2, EntryState::Synced, 402),
        change(3, EntryState::Rejected, 400),
        // A later change in the same batch sees the earlier one: 3 is rejected by now.
        change(3, EntryState::Pending, 400),
    ];
    journal.set_states(&results, t(11)).unwrap();
    let c = journal.counts().unwrap();
    assert_eq!((c.synced, c.rejected, c.pending), (2, 0, 4));
    assert_eq!(c.last_sync_at, Some(t(11)));
    assert_eq!(journal.entry(seq(3)).unwrap().unwrap().attempts, 2);

    // A batch lost on the network: every entry gets the attempt, or none does.
    let sent = [seq(3), seq(4), seq(5), seq(6)];
    journal
        .record_attempt_failures(&sent, "connection reset", t(12))
        .unwrap();
    let r = journal.record_attempt_failures(&[seq(4), seq(1)], "again", t(13));
    assert!(matches!(r, Err(JournalError::Invalid(_))), "{r:?}");
    for n in 4..=6 {
        let e = journal.entry(seq(n)).unwrap().unwrap();
        assert_eq!(
            (e.attempts, e.last_error.as_deref()),
            (1, Some("connection reset"))
        );
    }
    let too_many = vec![seq(4); 501];
    let r = journal.record_attempt_failures(&too_many, "x", t(14));
    assert!(matches!(r, Err(JournalError::Invalid(_))), "{r:?}");
}

#[test]
fn lists_are_ordered_by_seq_and_capped() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    for i in 0..30 {
        append(&mut journal, offline_sale(100), t(i));
    }
    for n in [3, 7, 11] {
        journal
            .set_state(seq(n), EntryState::InDoubt, None, None, None, t(40))
            .unwrap();
    }
    for n in [1, 2, 20] {
        journal
            .set_state(
                seq(n),
                EntryState::Synced,
                None,
                None,
                Some((200, "{}")),
                t(41),
            )
            .unwrap();
    }
    journal
        .set_state(seq(25), EntryState::Rejected, None, None, None, t(42))
        .unwrap();

    // (limit, expected pending seqs)
    let pending_cases: [(usize, Vec<i64>); 4] = [
        (0, vec![]),
        (1, vec![4]),
        (5, vec![4, 5, 6, 8, 9]),
        (
            1000,
            (4..=30).filter(|n| ![7, 11, 20, 25].contains(n)).collect(),
        ),
    ];
    for (limit, expected) in pending_cases {
        assert_eq!(
            seqs(&journal.pending(limit).unwrap()),
            expected,
            "limit {limit}"
        );
    }
    assert_eq!(seqs(&journal.pending(usize::MAX).unwrap()).len(), 23);
    assert_eq!(seqs(&journal.in_doubt(10).unwrap()), vec![3, 7, 11]);
    assert_eq!(seqs(&journal.in_doubt(2).unwrap()), vec![3, 7]);

    // Export pages: every entry but the synced ones, rejected and in doubt included.
    let exported = all_unacknowledged(&journal, 4);
    let expected: Vec<i64> = (3..=30).filter(|n| *n != 20).collect();
    assert_eq!(seqs(&exported), expected);
    assert_eq!(
        seqs(&journal.unacknowledged(Some(seq(20)), 3).unwrap()),
        vec![21, 22, 23]
    );
}

#[test]
fn counts_follow_the_states_and_the_last_sync() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    let empty = journal.counts().unwrap();
    assert_eq!(
        (empty.pending, empty.in_doubt, empty.rejected, empty.synced),
        (0, 0, 0, 0)
    );
    assert_eq!(empty.last_seq, None);
    assert_eq!(empty.last_sync_at, None);
    assert_eq!(empty.last_feed_at, None);

    for i in 0..10 {
        append(&mut journal, offline_sale(100), t(i));
    }
    let moves = [
        (1, EntryState::Synced, t(20)),
        (2, EntryState::Synced, t(21)),
        (3, EntryState::Synced, t(22)),
        (4, EntryState::InDoubt, t(23)),
        (5, EntryState::Rejected, t(24)),
    ];
    for (n, state, now) in moves {
        journal
            .set_state(seq(n), state, None, None, None, now)
            .unwrap();
    }
    journal.apply_card_feed(&[], "c1", t(25)).unwrap();
    let c = journal.counts().unwrap();
    assert_eq!((c.pending, c.in_doubt, c.rejected, c.synced), (5, 1, 1, 3));
    assert_eq!(c.last_seq, Some(seq(10)));
    assert_eq!(c.last_sync_at, Some(t(22)));
    assert_eq!(c.last_feed_at, Some(t(25)));

    // An idle round with the ledger keeps "last sync" fresh; it survives a reopen.
    journal.record_sync(t(30)).unwrap();
    drop(journal);
    let journal = fx.open();
    let c = journal.counts().unwrap();
    assert_eq!(c.last_sync_at, Some(t(30)));
    assert_eq!(c.pending, 5);
}

/// Restores the permissions of the files and directories it names when dropped, so that the
/// temporary directory can be removed even when an assertion fails.
struct Restore(Vec<(PathBuf, u32)>);

impl Drop for Restore {
    fn drop(&mut self) {
        for (path, mode) in &self.0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode));
        }
    }
}

fn make_read_only(file: &Path, dir: &Path) -> Restore {
    let restore = Restore(vec![
        (dir.to_path_buf(), 0o755),
        (file.to_path_buf(), 0o644),
    ]);
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    restore
}

/// A read-only journal: `chmod 0444` on the file and `0555` on its directory. When that
/// really stops writes (an ordinary user), the daemon's own `Journal::open` is used; as root,
/// which `chmod` does not stop, the file is opened with SQLite's read-only flag
/// (`Journal::open_read_only`) instead. Either way `append` fails with the `Io` kind, the
/// journal stays readable, and the file is unchanged, byte for byte.
#[test]
fn a_read_only_journal_refuses_appends_and_changes_nothing() {
    let fx = Fixture::new();
    {
        let mut journal = fx.open();
        for i in 0..3 {
            append(&mut journal, offline_sale(100), t(i));
        }
    }
    // Closing the last connection checkpointed the log into the file and removed it.
    let before = std::fs::read(&fx.path).unwrap();
    let restore = make_read_only(&fx.path, fx.dir.path());
    let chmod_stops_writes = std::fs::OpenOptions::new()
        .append(true)
        .open(&fx.path)
        .is_err();
    let mut journal = if chmod_stops_writes {
        Journal::open(&fx.path).unwrap()
    } else {
        Journal::open_read_only(&fx.path).unwrap()
    };

    let err = append_padded(&mut journal, offline_sale(100), 0, t(10)).unwrap_err();
    match &err {
        JournalError::Io(message) => assert!(message.contains("read-only"), "{message}"),
        other => panic!("expected an Io error, got {other:?}"),
    }
    let err = journal
        .set_state(seq(1), EntryState::Synced, None, None, None, t(11))
        .unwrap_err();
    assert!(matches!(err, JournalError::Io(_)), "{err:?}");

    // Still readable: status and export work on an unwritable journal.
    assert_eq!(journal.counts().unwrap().pending, 3);
    assert_eq!(seqs(&journal.pending(10).unwrap()), vec![1, 2, 3]);
    drop(journal);
    drop(restore);
    assert!(
        std::fs::read(&fx.path).unwrap() == before,
        "the journal file changed"
    );
    let mut journal = fx.open();
    assert_eq!(journal.counts().unwrap().pending, 3);
    assert_eq!(
        append(&mut journal, offline_sale(100), t(12))
            .terminal_seq
            .get(),
        4
    );
}

#[test]
fn a_journal_opened_read_only_refuses_every_write() {
    let fx = Fixture::new();
    {
        let mut journal = fx.open();
        append(&mut journal, offline_sale(100), t(0));
    }
    let mut journal = Journal::open_read_only(&fx.path).unwrap();
    let scan = Scan {
        card_uid: uid(CARD),
        result: "ok".into(),
        reader: "r".into(),
        scanned_at: t(1),
        terminal_seq: None,
    };
    let results = [
        append_padded(&mut journal, offline_sale(100), 0, t(1)).map(|_| ()),
        journal.set_state(seq(1), EntryState::InDoubt, None, None, None, t(1)),
        journal.record_attempt_failure(seq(1), "x", t(1)),
        journal.record_sync(t(1)),
        journal.apply_card_feed(
            &[FeedRow::new(uid(CARD), Cents::new(1), false, 1)],
            "c",
            t(1),
        ),
        journal.replace_staff(&[], t(1)),
        journal.record_scan(&scan).map(|_| ()),
    ];
    for (i, r) in results.into_iter().enumerate() {
        assert!(matches!(r, Err(JournalError::Io(_))), "write {i}: {r:?}");
    }
    assert_eq!(journal.counts().unwrap().pending, 1);
    assert_eq!(journal.feed_cursor().unwrap(), "");
    // A file that is not there is not created read-only.
    let missing = fx.dir.path().join("missing.db");
    assert!(matches!(
        Journal::open_read_only(&missing),
        Err(JournalError::Io(_))
    ));
    assert!(!missing.exists());
}

/// A full disk, simulated with `PRAGMA max_page_count` (`Journal::open_with_max_pages`):
/// SQLite answers `SQLITE_FULL` as it would on a full file system.
#[test]
fn a_full_disk_fails_appends_cleanly_and_keeps_every_entry() {
    let fx = Fixture::new();
    {
        let mut journal = fx.open();
        for i in 0..20 {
            append_padded(&mut journal, offline_sale(100), 500, t(i)).unwrap();
        }
    }
    let pages: u32 = rusqlite::Connection::open(&fx.path)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let mut journal = Journal::open_with_max_pages(&fx.path, pages).unwrap();
    let mut appended = 20;
    let err = loop {
        match append_padded(&mut journal, offline_sale(100), 2000, t(100)) {
            Ok(e) => {
                appended += 1;
                assert_eq!(e.terminal_seq.get(), appended);
                assert!(appended < 1000, "the page limit never bit");
            }
            Err(e) => break e,
        }
    };
    match &err {
        JournalError::Io(message) => assert!(message.contains("disk full"), "{message}"),
        other => panic!("expected an Io error, got {other:?}"),
    }
    // Still full: the next one fails the same way; nothing half-written shows.
    let again = append_padded(&mut journal, offline_sale(100), 2000, t(101)).unwrap_err();
    assert!(matches!(again, JournalError::Io(_)), "{again:?}");
    let all = all_unacknowledged(&journal, 7);
    assert_eq!(seqs(&all), (1..=appended).collect::<Vec<_>>());
    assert_eq!(
        journal.counts().unwrap().pending,
        u64::try_from(appended).unwrap()
    );
    drop(journal);

    // With room again, numbering continues with no gap.
    let mut journal = fx.open();
    let next = append(&mut journal, offline_sale(100), t(102));
    assert_eq!(next.terminal_seq.get(), appended + 1);
    let integrity: String = rusqlite::Connection::open(&fx.path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn the_card_feed_fills_the_replica_and_moves_the_cursor() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    assert_eq!(journal.feed_cursor().unwrap(), "");
    assert_eq!(journal.replica_card(&uid(CARD)).unwrap(), None);

    let page1 = [
        FeedRow::new(uid(CARD), Cents::new(2000), false, 10),
        FeedRow::new(uid(OTHER_CARD), Cents::new(-300), true, 11),
    ];
    journal.apply_card_feed(&page1, "11", t(0)).unwrap();
    let page2 = [FeedRow::new(uid(CARD), Cents::new(1500), false, 12)];
    journal.apply_card_feed(&page2, "12", t(10)).unwrap();
    // Page 1 again (a retry after a lost answer): the newer version of CARD stays.
    journal.apply_card_feed(&page1, "12", t(20)).unwrap();
    drop(journal);

    let journal = fx.open();
    assert_eq!(journal.feed_cursor().unwrap(), "12");
    // (card, balance, blocked, fetched at)
    let cases = [(CARD, 1500, false, t(10)), (OTHER_CARD, -300, true, t(20))];
    for (card, balance, blocked, fetched_at) in cases {
        assert_eq!(
            journal.replica_card(&uid(card)).unwrap(),
            Some((
                ReplicaCard {
                    balance: Cents::new(balance),
                    blocked,
                    age_flag: None,
                    vouchers: 0,
                },
                fetched_at
            )),
            "{card}"
        );
    }
    assert_eq!(journal.replica_card(&uid("0A0B0C0D")).unwrap(), None);
    assert_eq!(journal.counts().unwrap().last_feed_at, Some(t(20)));
}

#[test]
fn the_replica_keeps_the_key_version_the_feed_carries() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    let keyed = |version, key_version| FeedRow {
        key_version,
        ..FeedRow::new(uid(CARD), Cents::new(2000), false, version)
    };
    journal
        .apply_card_feed(&[keyed(10, None)], "10", t(0))
        .unwrap();
    assert_eq!(journal.replica_key_version(&uid(CARD)).unwrap(), None);
    // Issued at a checkpoint with key version 2, then re-keyed with version 3.
    journal
        .apply_card_feed(&[keyed(11, Some(2))], "11", t(10))
        .unwrap();
    assert_eq!(journal.replica_key_version(&uid(CARD)).unwrap(), Some(2));
    journal
        .apply_card_feed(&[keyed(12, Some(3))], "12", t(20))
        .unwrap();
    // An old page again does not take the card back to an older key.
    journal
        .apply_card_feed(&[keyed(11, Some(2))], "12", t(30))
        .unwrap();
    drop(journal);
    let journal = fx.open();
    assert_eq!(journal.replica_key_version(&uid(CARD)).unwrap(), Some(3));
    assert_eq!(journal.replica_key_version(&uid(OTHER_CARD)).unwrap(), None);
}

#[test]
fn oversized_feeds_are_refused() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    let too_many: Vec<_> = (0..10_001u32)
        .map(|i| {
            FeedRow::new(
                CardUid::from_bytes(&i.to_be_bytes()).unwrap(),
                Cents::new(1),
                false,
                i64::from(i),
            )
        })
        .collect();
    let r = journal.apply_card_feed(&too_many, "x", t(0));
    assert!(matches!(r, Err(JournalError::Invalid(_))), "{r:?}");
    let r = journal.apply_card_feed(&[], &"c".repeat(2000), t(0));
    assert!(matches!(r, Err(JournalError::Invalid(_))), "{r:?}");
    assert_eq!(journal.feed_cursor().unwrap(), "");
    journal
        .apply_card_feed(&too_many[..10_000], "ok", t(0))
        .unwrap();
    assert_eq!(journal.feed_cursor().unwrap(), "ok");
}

/// One step of a `local_charges` scenario, at a time in seconds.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Journal an entry on `CARD`: operation, signed amount, decision, state.
    Append(OperationKind, i64, Option<Decision>, EntryState),
    /// Journal an approved offline sale on another card.
    OtherCard(i64),
    /// Move the last entry to this state.
    Settle(EntryState),
    /// Apply a card-feed row for `CARD` with this balance; the request was sent now.
    Feed(i64),
}

/// (what the case shows, steps at times in seconds, expected local charges)
type LocalChargesCase = (&'static str, &'static [(i64, Step)], i64);

#[test]
fn local_charges_count_what_the_replica_does_not_reflect() {
    use Decision::{ApprovedOffline as Off, ApprovedOnline as On, Declined};
    use EntryState::{InDoubt, Pending, Rejected, Synced};
    use OperationKind::{Order, Recharge, Void};
    use Step::*;
    let cases: &[LocalChargesCase] = &[
        ("nothing journaled", &[], 0),
        (
            "an offline sale waiting for replay",
            &[(1, Append(Order, -500, Some(Off), Pending))],
            500,
        ),
        (
            "two sales and an offline top-up",
            &[
                (1, Append(Order, -500, Some(Off), Pending)),
                (2, Append(Order, -300, Some(Off), Pending)),
                (3, Append(Recharge, 1000, Some(Off), Pending)),
            ],
            -200,
        ),
        (
            "a declined sale",
            &[(1, Append(Order, -500, Some(Declined), Pending))],
            0,
        ),
        (
            "an online attempt without an answer",
            &[(1, Append(Order, -500, None, Pending))],
            0,
        ),
        (
            "an in-doubt attempt and its void (amount 0)",
            &[
                (1, Append(Order, -500, None, Pending)),
                (2, Settle(InDoubt)),
                (3, Append(Void, 0, Some(Off), Pending)),
            ],
            0,
        ),
        (
            "a sale and its refund",
            &[
                (1, Append(Order, -500, Some(Off), Pending)),
                (2, Append(Void, 500, Some(Off), Pending)),
            ],
            0,
        ),
        ("another card's sale", &[(1, OtherCard(500))], 0),
        (
            "a rejected sale keeps counting, a rejected top-up gives no room",
            &[
                (1, Append(Order, -500, Some(Off), Pending)),
                (2, Settle(Rejected)),
                (3, Append(Recharge, 1000, Some(Off), Pending)),
                (4, Settle(Rejected)),
            ],
            500,
        ),
        (
            "synced, but the card has no replica row",
            &[
                (1, Append(Order, -500, Some(Off), Pending)),
                (2, Settle(Synced)),
            ],
            500,
        ),
        (
            "synced after the feed: not reflected yet",
            &[
                (1, Feed(2000)),
                (2, Append(Order, -500, Some(Off), Pending)),
                (3, Settle(Synced)),
            ],
            500,
        ),
        (
            "synced before the feed: reflected",
            &[
                (1, Append(Order, -500, Some(Off), Pending)),
                (2, Settle(Synced)),
                (3, Feed(1500)),
            ],
            0,
        ),
        (
            "synced at the feed's instant: counted (errs toward declining)",
            &[
                (1, Append(Order, -500, Some(Off), Pending)),
                (2, Settle(Synced)),
                (2, Feed(1500)),
            ],
            500,
        ),
        (
            "still pending after a feed",
            &[
                (1, Append(Order, -500, Some(Off), Pending)),
                (2, Feed(2000)),
            ],
            500,
        ),
        (
            "rejected approvals keep counting",
            &[
                (1, Append(Order, -500, Some(Off), Pending)),
                (2, Settle(Rejected)),
                (3, Feed(2000)),
            ],
            500,
        ),
        (
            "an online approval after the feed, then a newer feed",
            &[
                (1, Feed(2000)),
                (2, Append(Order, -300, Some(On), Synced)),
                (3, Append(Order, -200, Some(On), Synced)),
                (4, Feed(1500)),
                (5, Append(Order, -100, Some(On), Synced)),
            ],
            100,
        ),
    ];
    for (name, steps, expected) in cases {
        let fx = Fixture::new();
        let mut journal = fx.open();
        let mut last = None;
        let mut version = 0;
        for &(at, step) in *steps {
            match step {
                Append(op, amount, decision, state) => {
                    let e = new_entry(op, Some(CARD), amount, decision, state);
                    last = Some(append(&mut journal, e, t(at)).terminal_seq);
                }
                OtherCard(total) => {
                    let e = new_entry(Order, Some(OTHER_CARD), -total, Some(Off), Pending);
                    last = Some(append(&mut journal, e, t(at)).terminal_seq);
                }
                Settle(state) => journal
                    .set_state(last.unwrap(), state, None, None, None, t(at))
                    .unwrap(),
                Feed(balance) => {
                    version += 1;
                    let row = FeedRow::new(uid(CARD), Cents::new(balance), false, version);
                    journal
                        .apply_card_feed(&[row], &version.to_string(), t(at))
                        .unwrap();
                }
            }
        }
        assert_eq!(
            journal.local_charges(&uid(CARD)).unwrap(),
            Cents::new(*expected),
            "{name}"
        );
    }
}

#[test]
fn local_charges_through_a_sale_its_sync_and_the_next_feed() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    let card = uid(CARD);
    journal
        .apply_card_feed(
            &[FeedRow::new(card.clone(), Cents::new(2000), false, 1)],
            "1",
            t(0),
        )
        .unwrap();
    let sale = append(&mut journal, offline_sale(500), t(1));
    assert_eq!(journal.local_charges(&card).unwrap(), Cents::new(500));
    journal
        .set_state(
            sale.terminal_seq,
            EntryState::Synced,
            None,
            None,
            Some((201, "{}")),
            t(2),
        )
        .unwrap();
    // The ledger has it, but the replica still shows 20.00: it keeps counting.
    assert_eq!(journal.local_charges(&card).unwrap(), Cents::new(500));
    journal
        .apply_card_feed(
            &[FeedRow::new(card.clone(), Cents::new(1500), false, 2)],
            "2",
            t(3),
        )
        .unwrap();
    assert_eq!(journal.local_charges(&card).unwrap(), Cents::ZERO);
    let (replica, _) = journal.replica_card(&card).unwrap().unwrap();
    assert_eq!(replica.balance, Cents::new(1500));
}

#[test]
fn voucher_use_counts_until_the_replica_shows_it() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    let card = uid(CARD);
    let mut row = FeedRow::new(card.clone(), Cents::new(2000), false, 1);
    row.voucher_units = 3;
    journal.apply_card_feed(&[row], "1", t(0)).unwrap();
    assert_eq!(journal.replica_card(&card).unwrap().unwrap().0.vouchers, 3);
    // An offline sale that said it used 2 vouchers (its request), an online approval whose
    // answer says the ledger took 1, and a declined attempt (never counts).
    let sale = offline_sale(450);
    let crid = sale.client_request_id;
    let sale = journal
        .append(
            sale,
            move |seq| json!({"client_request_id": crid, "terminal_seq": seq, "voucher_units": 2}),
            t(1),
        )
        .unwrap();
    let online = append(
        &mut journal,
        new_entry(
            OperationKind::Order,
            Some(CARD),
            -450,
            None,
            EntryState::Sending,
        ),
        t(2),
    );
    journal
        .set_state(
            online.terminal_seq,
            EntryState::Synced,
            Some(Decision::ApprovedOnline),
            None,
            Some((201, r#"{"vouchers_used":1,"money_cents":450}"#)),
            t(2),
        )
        .unwrap();
    let declined = append(
        &mut journal,
        new_entry(
            OperationKind::Order,
            Some(CARD),
            -450,
            None,
            EntryState::Sending,
        ),
        t(3),
    );
    journal
        .set_state(
            declined.terminal_seq,
            EntryState::Synced,
            Some(Decision::Declined),
            Some("INSUFFICIENT_FUNDS"),
            Some((402, r#"{"vouchers_used":9}"#)),
            t(3),
        )
        .unwrap();
    assert_eq!(journal.local_voucher_use(&card).unwrap(), 3);
    // The offline sale replayed: it keeps counting until a pull shows it.
    journal
        .set_state(
            sale.terminal_seq,
            EntryState::Synced,
            None,
            None,
            Some((201, r#"{"vouchers_used":2}"#)),
            t(4),
        )
        .unwrap();
    assert_eq!(journal.local_voucher_use(&card).unwrap(), 3);
    let mut row = FeedRow::new(card.clone(), Cents::new(1550), false, 2);
    row.voucher_units = 0;
    journal.apply_card_feed(&[row], "2", t(5)).unwrap();
    assert_eq!(journal.local_voucher_use(&card).unwrap(), 0);
}

/// A cached product; one with a category carries a VAT rate (19 %), a minimum age and an
/// open price, a voucher price and a deposit, one without none of them, as from a ledger
/// before VAT: both must come back from the cache as they went in.
fn product(id: &str, name: &str, price: i64, category: Option<&str>) -> CatalogProduct {
    CatalogProduct {
        product_id: ProductId::parse(id).unwrap(),
        name: name.into(),
        price_cents: Cents::new(price),
        category: category.map(Into::into),
        tax_rate: category.map(|_| "standard".into()),
        tax_rate_basis_points: category.map(|_| 1900),
        min_age: category.map(|_| MinAge::EIGHTEEN),
        open_price_max_cents: category.map(|_| Cents::new(3000)),
        voucher_price: category.map(|_| 2),
        returnable: category.is_none() && price > 0,
        deposit_product_id: category.map(|_| ProductId::parse("cup").unwrap()),
    }
}

#[test]
fn the_catalog_cache_is_replaced_whole_and_survives_a_restart() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    assert_eq!(journal.catalog().unwrap(), None);
    assert_eq!(journal.catalog_etag().unwrap(), None);

    let first = Catalog {
        point_of_sale: "Main Bar".into(),
        currency: "EUR".into(),
        products: vec![
            product("water", "Water", 250, None),
            product("beer-05", "Beer 0.5", 450, Some("drinks")),
        ],
    };
    journal
        .replace_catalog(&first, Some("\"v1\""), t(0))
        .unwrap();
    // The ledger's order is kept (not sorted by id).
    assert_eq!(journal.catalog().unwrap(), Some((first, t(0))));

    let second: Catalog = serde_json::from_value(json!({
        "point_of_sale": "Main Bar",
        "currency": "EUR",
        "products": [
            {"product_id": "cola", "name": "Cola", "price_cents": 300, "category": "drinks"},
            {"product_id": "beer-05", "name": "Beer 0.5", "price_cents": 500, "category": "drinks"},
        ],
    }))
    .unwrap();
    journal
        .replace_catalog(&second, Some("\"v2\""), t(10))
        .unwrap();

    // A catalog with a product twice is refused and the cached one stays.
    let mut twice = second.clone();
    twice.products.push(product("cola", "Cola", 1, None));
    let r = journal.replace_catalog(&twice, None, t(20));
    assert!(matches!(r, Err(JournalError::Invalid(_))), "{r:?}");
    drop(journal);

    let mut journal = fx.open();
    assert_eq!(journal.catalog().unwrap(), Some((second.clone(), t(10))));
    assert_eq!(journal.catalog_etag().unwrap().as_deref(), Some("\"v2\""));
    journal.replace_catalog(&second, None, t(30)).unwrap();
    assert_eq!(journal.catalog_etag().unwrap(), None);
}

#[test]
fn the_staff_cache_is_replaced_whole_and_read_by_id() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    assert!(journal.staff().unwrap().is_empty());
    let staff: Vec<CachedStaff> = serde_json::from_value(json!([
        {"staff_id": "s-3", "name": "Ana", "role": "bar", "active": true, "pin_hash": "$argon2id$a"},
        {"staff_id": "s-1", "name": "Bo", "role": "cashier", "active": false, "pin_hash": "$argon2id$b"},
    ]))
    .unwrap();
    journal.replace_staff(&staff, t(0)).unwrap();
    drop(journal);

    let mut journal = fx.open();
    let ids: Vec<String> = journal
        .staff()
        .unwrap()
        .iter()
        .map(|s| s.staff_id.to_string())
        .collect();
    assert_eq!(ids, ["s-1", "s-3"]);
    let s3 = journal
        .staff_member(&StaffId::parse("s-3").unwrap())
        .unwrap();
    assert_eq!(s3, Some(staff[0].clone()));
    assert_eq!(
        journal
            .staff_member(&StaffId::parse("s-9").unwrap())
            .unwrap(),
        None
    );

    let replacement = vec![CachedStaff {
        staff_id: StaffId::parse("s-9").unwrap(),
        name: "Cy".into(),
        role: StaffRole::Supervisor,
        active: true,
        pin_hash: "$argon2id$c".into(),
    }];
    journal.replace_staff(&replacement, t(10)).unwrap();
    assert_eq!(journal.staff().unwrap(), replacement);
    assert_eq!(
        journal
            .staff_member(&StaffId::parse("s-3").unwrap())
            .unwrap(),
        None
    );
}

#[test]
fn the_scan_log_uploads_in_order_and_once() {
    let fx = Fixture::new();
    let mut journal = fx.open();
    let scan = |i: i64| Scan {
        card_uid: uid(CARD),
        result: "ok".into(),
        reader: "ACS ACR122U 00 00".into(),
        scanned_at: t(i),
        terminal_seq: (i % 2 == 0).then(|| seq(i + 1)),
    };
    let ids: Vec<i64> = (0..5)
        .map(|i| journal.record_scan(&scan(i)).unwrap())
        .collect();

    let first = journal.unuploaded_scans(3).unwrap();
    assert_eq!(first.iter().map(|s| s.id).collect::<Vec<_>>(), ids[..3]);
    assert_eq!(first[0].scan, scan(0));
    assert_eq!(first[1].scan, scan(1));
    let sent: Vec<i64> = first.iter().map(|s| s.id).collect();
    assert_eq!(journal.mark_scans_uploaded(&sent).unwrap(), 3);
    // Marking again (an upload retried) marks nothing new.
    assert_eq!(journal.mark_scans_uploaded(&sent).unwrap(), 0);
    drop(journal);

    let mut journal = fx.open();
    let rest = journal.unuploaded_scans(100).unwrap();
    assert_eq!(rest.iter().map(|s| s.id).collect::<Vec<_>>(), ids[3..]);

    // Scans the ledger would refuse are refused here, so they cannot block later uploads.
    let bad = [
        Scan {
            result: "OK".into(),
            ..scan(9)
        },
        Scan {
            result: String::new(),
            ..scan(9)
        },
        Scan {
            reader: "a\nb".into(),
            ..scan(9)
        },
    ];
    for s in &bad {
        let r = journal.record_scan(s);
        assert!(matches!(r, Err(JournalError::Invalid(_))), "{s:?}: {r:?}");
    }
    assert_eq!(journal.unuploaded_scans(100).unwrap().len(), 2);
}

/// Data this program never writes, put into the file behind its back: every read reports
/// `Corrupt` instead of panicking.
#[test]
fn unexpected_data_in_the_file_is_reported_not_panicked_on() {
    // (what the case breaks, SQL run on the file)
    let cases = [
        ("an unknown state", "UPDATE journal SET state = 'lost'"),
        (
            "a lowercase card UID",
            "UPDATE journal SET card_uid = '04a1b2c3'",
        ),
        (
            "a bad client_request_id",
            "UPDATE journal SET client_request_id = 'nope'",
        ),
        ("an unknown mode", "UPDATE journal SET mode = 'maybe'"),
        (
            "an unknown decision",
            "UPDATE journal SET decision = 'perhaps'",
        ),
        ("a bad time", "UPDATE journal SET created_at = 'yesterday'"),
        ("a text amount", "UPDATE journal SET amount_cents = 'ten'"),
        ("negative attempts", "UPDATE journal SET attempts = -1"),
        ("a terminal_seq of 0", "UPDATE journal SET terminal_seq = 0"),
        (
            "synced without synced_at",
            "UPDATE journal SET state = 'synced'",
        ),
        (
            "a request that is not JSON",
            "UPDATE journal SET request_json = '{'",
        ),
    ];
    for (name, sql) in cases {
        let fx = Fixture::new();
        {
            let mut journal = fx.open();
            append(&mut journal, offline_sale(100), t(0));
        }
        let conn = rusqlite::Connection::open(&fx.path).unwrap();
        conn.pragma_update(None, "ignore_check_constraints", "ON")
            .unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let journal = fx.open();
        let reads = [
            ("export", journal.unacknowledged(None, 10).map(|v| v.len())),
            ("pending", journal.pending(10).map(|v| v.len())),
            (
                "entry 1",
                journal.entry(seq(1)).map(|e| usize::from(e.is_some())),
            ),
        ];
        // A read either reports the bad row or does not see it; at least one sees it.
        for (read, r) in &reads {
            assert!(
                matches!(r, Err(JournalError::Corrupt(_)) | Ok(0)),
                "{name}, {read}: {r:?}"
            );
        }
        assert!(
            reads.iter().any(|(_, r)| r.is_err()),
            "{name}: no read reported the bad row"
        );
    }

    let fx = Fixture::new();
    {
        let mut journal = fx.open();
        journal
            .apply_card_feed(
                &[FeedRow::new(uid(CARD), Cents::new(5), false, 1)],
                "1",
                t(0),
            )
            .unwrap();
        journal
            .replace_staff(
                &[CachedStaff {
                    staff_id: StaffId::parse("s-1").unwrap(),
                    name: "A".into(),
                    role: StaffRole::Bar,
                    active: true,
                    pin_hash: "h".into(),
                }],
                t(0),
            )
            .unwrap();
    }
    let conn = rusqlite::Connection::open(&fx.path).unwrap();
    conn.pragma_update(None, "ignore_check_constraints", "ON")
        .unwrap();
    conn.execute_batch(
        "UPDATE replica_cards SET status = 'frozen';
         UPDATE staff_cache SET role = 'boss';
         INSERT INTO replica_meta (key, value) VALUES ('last_sync_at', 'soon')
             ON CONFLICT (key) DO UPDATE SET value = excluded.value;",
    )
    .unwrap();
    drop(conn);
    let journal = fx.open();
    assert!(matches!(
        journal.replica_card(&uid(CARD)),
        Err(JournalError::Corrupt(_))
    ));
    assert!(matches!(journal.staff(), Err(JournalError::Corrupt(_))));
    assert!(matches!(journal.counts(), Err(JournalError::Corrupt(_))));
}

#[test]
fn a_file_that_is_not_a_journal_is_refused() {
    let fx = Fixture::new();
    std::fs::write(&fx.path, vec![0x42u8; 8192]).unwrap();
    let r = Journal::open(&fx.path);
    assert!(matches!(r, Err(JournalError::Corrupt(_))), "{r:?}");
    let in_missing_dir = fx.dir.path().join("no/such/dir/journal.db");
    let r = Journal::open(&in_missing_dir);
    assert!(matches!(r, Err(JournalError::Io(_))), "{r:?}");
}

#[test]
fn entries_serialize_their_spellings() {
    // The jsonl interface shows decisions and states with their database spelling.
    let cases: [(Value, &str); 3] = [
        (
            serde_json::to_value(Decision::ApprovedOffline).unwrap(),
            "approved_offline",
        ),
        (
            serde_json::to_value(EntryState::Rejected).unwrap(),
            "rejected",
        ),
        (
            serde_json::to_value(OperationKind::Recharge).unwrap(),
            "recharge",
        ),
    ];
    for (value, text) in cases {
        assert_eq!(value, json!(text));
    }
}

/// The void of an in-doubt attempt, with its request body.
fn void_of(target: ClientRequestId) -> (NewEntry, impl FnOnce(TerminalSeq) -> Value) {
    let entry = new_entry(OperationKind::Void, None, 0, None, EntryState::Pending);
    let crid = entry.client_request_id;
    (entry, move |seq: TerminalSeq| {
        json!({"client_request_id": crid.to_string(), "terminal_seq": seq.get(),
               "target_client_request_id": target.to_string(), "reason": "in_doubt"})
    })
}

#[test]
fn an_attempt_and_its_void_are_journaled_together_or_not_at_all() {
    let f = Fixture::new();
    let mut j = f.open();
    let attempt = append(
        &mut j,
        new_entry(
            OperationKind::Order,
            Some(CARD),
            -450,
            None,
            EntryState::Sending,
        ),
        t(0),
    );
    let (void, request) = void_of(attempt.client_request_id);
    let written = j
        .void_in_doubt(attempt.terminal_seq, void, request, t(1))
        .unwrap();
    assert_eq!(written.terminal_seq, seq(2));
    assert_eq!(
        j.entry(attempt.terminal_seq).unwrap().unwrap().state,
        EntryState::InDoubt
    );

    // Refused for an entry that is not an attempt being sent: nothing written at all.
    let sale = append(&mut j, offline_sale(200), t(2));
    let (void, request) = void_of(sale.client_request_id);
    assert!(matches!(
        j.void_in_doubt(sale.terminal_seq, void, request, t(3)),
        Err(JournalError::Invalid(_))
    ));
    assert_eq!(
        j.entry(sale.terminal_seq).unwrap().unwrap().state,
        EntryState::Pending
    );
    assert_eq!(j.counts().unwrap().last_seq, Some(seq(3)));

    // A void whose body is refused (it lacks its own ids) leaves the attempt as it was.
    let second = append(
        &mut j,
        new_entry(
            OperationKind::Order,
            Some(CARD),
            -200,
            None,
            EntryState::Sending,
        ),
        t(4),
    );
    let bad = new_entry(OperationKind::Void, None, 0, None, EntryState::Pending);
    assert!(
        j.void_in_doubt(second.terminal_seq, bad, |_| json!({}), t(5))
            .is_err()
    );
    assert_eq!(
        j.entry(second.terminal_seq).unwrap().unwrap().state,
        EntryState::Sending,
        "the attempt is not in doubt without its void"
    );
    assert_eq!(j.counts().unwrap().last_seq, Some(seq(4)));
    assert!(j.has_sending().unwrap());
}

#[test]
fn a_journal_reopened_after_its_file_became_writable_writes_again() {
    let f = Fixture::new();
    drop(f.open());
    let restore = make_read_only(&f.path, f.dir.path());
    let mut j = Journal::open_read_only(&f.path).unwrap();
    assert!(j.is_read_only());
    drop(restore);
    j.reopen(&f.path).unwrap();
    assert!(!j.is_read_only());
    append(&mut j, offline_sale(200), t(0));
    assert_eq!(j.counts().unwrap().pending, 1);
    // A reopen that fails leaves a handle that says it cannot write, so it is retried.
    let missing = f.dir.path().join("no-such-dir").join("journal.db");
    assert!(j.reopen(&missing).is_err());
    assert!(j.is_read_only());
    assert!(j.counts().is_err());
}

#[test]
fn recovery_finds_attempts_being_sent_and_in_doubt_attempts_without_their_void() {
    let f = Fixture::new();
    let mut j = f.open();
    let attempt = || {
        new_entry(
            OperationKind::Order,
            Some(CARD),
            -450,
            None,
            EntryState::Sending,
        )
    };
    let sending = append(&mut j, attempt(), t(0));
    // An in-doubt attempt with its void (written together), and one without (an older
    // journal, or a crash between two separate writes).
    let voided = append(&mut j, attempt(), t(1));
    let (void, request) = void_of(voided.client_request_id);
    j.void_in_doubt(voided.terminal_seq, void, request, t(2))
        .unwrap();
    let orphan = append(&mut j, attempt(), t(3));
    j.set_state(
        orphan.terminal_seq,
        EntryState::InDoubt,
        None,
        None,
        None,
        t(4),
    )
    .unwrap();
    for _ in 0..50 {
        append(&mut j, offline_sale(100), t(5));
    }
    assert_eq!(
        seqs(&j.sending(100).unwrap()),
        vec![sending.terminal_seq.get()]
    );
    assert_eq!(
        seqs(&j.in_doubt_without_void(100).unwrap()),
        vec![orphan.terminal_seq.get()]
    );
    // The in-doubt attempt once its void is journaled: nothing left to recover.
    let (void, request) = void_of(orphan.client_request_id);
    j.void_in_doubt(orphan.terminal_seq, void, request, t(6))
        .unwrap();
    assert!(j.in_doubt_without_void(100).unwrap().is_empty());
}

#[test]
fn an_idle_feed_is_recorded_once_a_minute_unless_something_was_synced_since() {
    let f = Fixture::new();
    let mut j = f.open();
    j.apply_card_feed(
        &[FeedRow::new(uid(CARD), Cents::new(500), false, 1)],
        "1",
        t(0),
    )
    .unwrap();
    // Empty pages that move nothing: not written again within a minute.
    j.apply_card_feed(&[], "1", t(10)).unwrap();
    assert_eq!(j.counts().unwrap().last_feed_at, Some(t(0)));
    // A minute later, it is (the replica's age stays honest).
    j.apply_card_feed(&[], "1", t(61)).unwrap();
    assert_eq!(j.counts().unwrap().last_feed_at, Some(t(61)));
    // An entry synced at the very time of the last pull still counts as a local charge; the
    // next empty page is recorded at once, so that it stops counting.
    let sale = append(&mut j, offline_sale(200), t(61));
    j.set_state(
        sale.terminal_seq,
        EntryState::Synced,
        None,
        None,
        Some((201, "{}")),
        t(61),
    )
    .unwrap();
    assert_eq!(j.local_charges(&uid(CARD)).unwrap(), Cents::new(200));
    j.apply_card_feed(&[], "1", t(62)).unwrap();
    assert_eq!(j.counts().unwrap().last_feed_at, Some(t(62)));
    assert_eq!(j.local_charges(&uid(CARD)).unwrap(), Cents::ZERO);
    // A moved cursor is always recorded.
    j.apply_card_feed(&[], "2", t(63)).unwrap();
    assert_eq!(j.feed_cursor().unwrap(), "2");
}

// Shifts at a checkpoint: the totals since the last close-out, and the close-outs.

const CASHIER: &str = "s-cash";

fn cashier() -> StaffId {
    StaffId::parse(CASHIER).unwrap()
}

/// Journals a top-up of `amount` paid by `method` on `card` as the daemon does: its body
/// carries the payment method.
fn append_topup(
    j: &mut Journal,
    card: &str,
    amount: i64,
    method: &str,
    decision: Option<Decision>,
    state: EntryState,
    now: DateTime<Utc>,
) -> Entry {
    let entry = new_entry(OperationKind::Recharge, Some(card), amount, decision, state);
    let crid = entry.client_request_id;
    let (card, method) = (card.to_owned(), method.to_owned());
    j.append(
        entry,
        move |seq| {
            json!({"type": "recharge", "client_request_id": crid, "terminal_seq": seq,
                   "card_uid": card, "amount_cents": amount, "payment_method": method,
                   "staff_id": CASHIER, "mode": "online"})
        },
        now,
    )
    .unwrap()
}

/// An approved top-up (online, settled).
fn topup(j: &mut Journal, amount: i64, method: &str, now: DateTime<Utc>) -> Entry {
    append_topup(
        j,
        CARD,
        amount,
        method,
        Some(Decision::ApprovedOnline),
        EntryState::Synced,
        now,
    )
}

/// `void_last` of `target` as the daemon journals it: approved, undoing its effect.
fn refund(j: &mut Journal, target: &Entry, now: DateTime<Utc>) -> Entry {
    let mut entry = new_entry(
        OperationKind::Void,
        Some(CARD),
        -target.amount_cents.get(),
        Some(Decision::ApprovedOffline),
        EntryState::Pending,
    );
    entry.card_uid = target.card_uid.clone();
    let crid = entry.client_request_id;
    let target = target.client_request_id;
    j.append(
        entry,
        move |seq| {
            json!({"client_request_id": crid, "terminal_seq": seq,
                   "target_client_request_id": target, "staff_id": CASHIER,
                   "reason": "customer_refund"})
        },
        now,
    )
    .unwrap()
}

fn summary(opened_at: Option<i64>, cash: i64, card: i64, count: u64, voids: u64) -> ShiftSummary {
    ShiftSummary {
        opened_at: opened_at.map(t),
        cash: Cents::new(cash),
        card: Cents::new(card),
        count,
        voids,
    }
}

/// A time of day on a festival evening, for the clock tests.
fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 7, 1, hour, minute, 0).unwrap()
}

/// A summary of a shift opened at `opened_at`.
fn summary_at(
    opened_at: DateTime<Utc>,
    cash: i64,
    card: i64,
    count: u64,
    voids: u64,
) -> ShiftSummary {
    ShiftSummary {
        opened_at: Some(opened_at),
        ..summary(None, cash, card, count, voids)
    }
}

fn close(j: &mut Journal, counted: i64, now: DateTime<Utc>) -> ClosedShift {
    j.close_shift(
        ClientRequestId::new_random(),
        &cashier(),
        Cents::new(counted),
        now,
    )
    .unwrap()
}

/// (opened_at, closed_at, cash, card, count, voids, difference, last_seq) of a close-out.
type Figures = (
    DateTime<Utc>,
    DateTime<Utc>,
    i64,
    i64,
    i64,
    u64,
    i64,
    Option<TerminalSeq>,
);

/// The `first_seq` and `last_seq` a close-out sends to the ledger.
fn sent_range(c: &ClosedShift) -> (Option<i64>, Option<i64>) {
    (
        c.closeout.first_seq.map(TerminalSeq::get),
        c.closeout.last_seq.map(TerminalSeq::get),
    )
}

fn figures(c: &ClosedShift) -> Figures {
    (
        c.closeout.opened_at,
        c.closeout.closed_at,
        c.closeout.cash_cents.get(),
        c.closeout.card_cents.get(),
        c.closeout.count,
        c.voids,
        c.difference.get(),
        c.last_seq,
    )
}

#[test]
fn a_shift_counts_approved_top_ups_by_method_net_of_refunds_and_nothing_else() {
    let f = Fixture::new();
    let mut j = f.open();
    assert_eq!(j.shift_summary().unwrap(), summary(None, 0, 0, 0, 0));

    // Before the first approved top-up: a declined one, a sale, an in-doubt top-up attempt
    // with its automatic void. None of them opens the shift or counts.
    append_topup(
        &mut j,
        CARD,
        700,
        "cash",
        Some(Decision::Declined),
        EntryState::Rejected,
        t(1),
    );
    append(&mut j, offline_sale(450), t(2));
    let attempt = append_topup(
        &mut j,
        OTHER_CARD,
        1100,
        "cash",
        None,
        EntryState::Sending,
        t(3),
    );
    let (void, request) = void_of(attempt.client_request_id);
    j.void_in_doubt(attempt.terminal_seq, void, request, t(4))
        .unwrap();
    assert_eq!(j.shift_summary().unwrap(), summary(None, 0, 0, 0, 0));

    // Cash online and offline, card online.
    topup(&mut j, 5000, "cash", t(10));
    let offline_cash = append_topup(
        &mut j,
        OTHER_CARD,
        3000,
        "cash",
        Some(Decision::ApprovedOffline),
        EntryState::Pending,
        t(20),
    );
    topup(&mut j, 2000, "card", t(30));
    assert_eq!(
        j.shift_summary().unwrap(),
        summary(Some(10), 8000, 2000, 3, 0)
    );

    // A sale refunded on the same journal: neither is a top-up.
    let sale = append(&mut j, offline_sale(900), t(40));
    refund(&mut j, &sale, t(41));
    // Another in-doubt top-up attempt, by card, voided automatically: not counted.
    let attempt = append_topup(&mut j, CARD, 2500, "card", None, EntryState::Sending, t(42));
    let (void, request) = void_of(attempt.client_request_id);
    j.void_in_doubt(attempt.terminal_seq, void, request, t(43))
        .unwrap();
    // An offline-declined top-up: not counted either.
    append_topup(
        &mut j,
        CARD,
        400,
        "card",
        Some(Decision::Declined),
        EntryState::Pending,
        t(44),
    );
    assert_eq!(
        j.shift_summary().unwrap(),
        summary(Some(10), 8000, 2000, 3, 0)
    );

    // The cash top-up refunded: its money went back out of the drawer.
    refund(&mut j, &offline_cash, t(50));
    let expected = summary(Some(10), 5000, 2000, 2, 1);
    assert_eq!(j.shift_summary().unwrap(), expected);
    // The ledger's answer does not change what staff were shown.
    j.set_state(
        offline_cash.terminal_seq,
        EntryState::Synced,
        None,
        None,
        Some((201, "{}")),
        t(60),
    )
    .unwrap();
    drop(j);
    assert_eq!(f.open().shift_summary().unwrap(), expected);
}

#[test]
fn closing_a_shift_records_its_totals_once_and_the_next_shift_starts_empty() {
    let f = Fixture::new();
    let mut j = f.open();
    topup(&mut j, 5000, "cash", t(10));
    let refunded = topup(&mut j, 1000, "cash", t(20));
    topup(&mut j, 2000, "card", t(30));
    refund(&mut j, &refunded, t(40));
    let before = j.shift_summary().unwrap();
    assert_eq!(before, summary(Some(10), 5000, 2000, 2, 1));

    // A counted amount out of range is refused and writes nothing.
    for counted in [-1, -5000, SHIFT_TOTAL_CENTS_MAX + 1, i64::MAX] {
        let r = j.close_shift(
            ClientRequestId::new_random(),
            &cashier(),
            Cents::new(counted),
            t(90),
        );
        assert!(
            matches!(r, Err(JournalError::Invalid(_))),
            "{counted}: {r:?}"
        );
    }
    assert_eq!(j.last_closeout().unwrap(), None);
    assert!(j.pending_closeouts(10).unwrap().is_empty());
    assert_eq!(j.shift_summary().unwrap(), before);

    // 1.50 short.
    let crid = ClientRequestId::new_random();
    let closed = j
        .close_shift(crid, &cashier(), Cents::new(4850), t(100))
        .unwrap();
    assert_eq!(closed.closeout.client_request_id, crid);
    assert_eq!(closed.closeout.staff_id, cashier());
    assert_eq!(
        (closed.closeout.opened_at, closed.closeout.closed_at),
        (t(10), t(100))
    );
    assert_eq!(
        (
            closed.closeout.cash_cents,
            closed.closeout.card_cents,
            closed.closeout.count,
            closed.voids
        ),
        (Cents::new(5000), Cents::new(2000), 2, 1)
    );
    assert_eq!(closed.closeout.counted_cash_cents, Cents::new(4850));
    assert_eq!(closed.difference, Cents::new(-150));
    assert_eq!(
        closed.last_seq,
        Some(seq(4)),
        "the shift ends at the last entry"
    );
    assert_eq!(sent_range(&closed), (Some(1), Some(4)));
    // Kept durably until the ledger records it.
    drop(j);
    let mut j = f.open();
    assert_eq!(j.pending_closeouts(10).unwrap(), vec![closed.clone()]);
    assert_eq!(
        j.last_closeout().unwrap(),
        Some((closed.clone(), CloseoutState::Pending))
    );

    // The next shift opens at the close, empty; what comes after counts there only.
    assert_eq!(j.shift_summary().unwrap(), summary(Some(100), 0, 0, 0, 0));
    topup(&mut j, 700, "cash", t(150));
    topup(&mut j, 300, "card", t(160));
    assert_eq!(
        j.shift_summary().unwrap(),
        summary(Some(100), 700, 300, 2, 0)
    );
    assert_eq!(
        j.pending_closeouts(10).unwrap(),
        vec![closed.clone()],
        "a closed shift's figures do not move"
    );

    // The ledger recorded it: no longer pending; settled once.
    j.settle_closeout(crid, CloseoutState::Recorded, 201, "{\"shift_id\":\"x\"}")
        .unwrap();
    assert!(j.pending_closeouts(10).unwrap().is_empty());
    assert_eq!(
        j.last_closeout().unwrap(),
        Some((closed.clone(), CloseoutState::Recorded))
    );
    for state in [CloseoutState::Recorded, CloseoutState::Rejected] {
        assert!(matches!(
            j.settle_closeout(crid, state, 201, "{}"),
            Err(JournalError::Invalid(_))
        ));
    }
    assert!(matches!(
        j.settle_closeout(
            ClientRequestId::new_random(),
            CloseoutState::Recorded,
            201,
            "{}"
        ),
        Err(JournalError::Invalid(_))
    ));

    // Exact: the second shift.
    let second = j
        .close_shift(
            ClientRequestId::new_random(),
            &cashier(),
            Cents::new(700),
            t(200),
        )
        .unwrap();
    assert_eq!(
        (second.closeout.opened_at, second.closeout.closed_at),
        (t(100), t(200))
    );
    assert_eq!(
        (
            second.closeout.cash_cents,
            second.closeout.card_cents,
            second.closeout.count,
            second.voids,
            second.difference
        ),
        (Cents::new(700), Cents::new(300), 2, 0, Cents::ZERO)
    );
    assert_eq!(sent_range(&second), (Some(5), Some(6)), "after the first");
    // Over: the third, with a top-up in the very millisecond of its close (it belongs to
    // the shift it was taken in, not the next).
    topup(&mut j, 1000, "cash", t(300));
    let third = j
        .close_shift(
            ClientRequestId::new_random(),
            &cashier(),
            Cents::new(1200),
            t(300),
        )
        .unwrap();
    assert_eq!(third.closeout.opened_at, t(200));
    assert_eq!(
        (
            third.closeout.cash_cents,
            third.closeout.count,
            third.difference
        ),
        (Cents::new(1000), 1, Cents::new(200))
    );
    assert_eq!(sent_range(&third), (Some(7), Some(7)));
    // Pending, oldest first, capped; a pending close-out cannot be "settled" as pending.
    assert_eq!(
        j.pending_closeouts(10).unwrap(),
        vec![second.clone(), third.clone()]
    );
    assert_eq!(j.pending_closeouts(1).unwrap(), vec![second.clone()]);
    assert!(matches!(
        j.settle_closeout(
            second.closeout.client_request_id,
            CloseoutState::Pending,
            201,
            "{}"
        ),
        Err(JournalError::Invalid(_))
    ));
    // Refused for good by the ledger: no longer pending either.
    j.settle_closeout(
        third.closeout.client_request_id,
        CloseoutState::Rejected,
        422,
        "{\"error\":{}}",
    )
    .unwrap();
    assert_eq!(
        j.last_closeout().unwrap(),
        Some((third.clone(), CloseoutState::Rejected))
    );
    assert_eq!(j.pending_closeouts(10).unwrap(), vec![second.clone()]);

    // An empty shift closes with zeros; the largest count is accepted.
    let empty = j
        .close_shift(
            ClientRequestId::new_random(),
            &cashier(),
            Cents::new(SHIFT_TOTAL_CENTS_MAX),
            t(400),
        )
        .unwrap();
    assert_eq!(
        (
            empty.closeout.opened_at,
            empty.closeout.cash_cents,
            empty.closeout.card_cents,
            empty.closeout.count,
            empty.difference
        ),
        (
            t(300),
            Cents::ZERO,
            Cents::ZERO,
            0,
            Cents::new(SHIFT_TOTAL_CENTS_MAX)
        )
    );
    // It has no entry: no range is sent, and the next shift still starts after seq 7.
    assert_eq!(
        (sent_range(&empty), empty.last_seq),
        ((None, None), Some(seq(7)))
    );
    topup(&mut j, 100, "cash", t(500));
    let after_empty = close(&mut j, 100, t(600));
    assert_eq!(sent_range(&after_empty), (Some(8), Some(8)));
    assert_eq!(
        j.pending_closeouts(10).unwrap(),
        vec![second, empty, after_empty],
        "the range is kept as it was sent"
    );
    // A terminal's first close-out without any top-up: the shift is empty, from the close.
    let g = Fixture::new();
    let mut fresh = g.open();
    let closed = fresh
        .close_shift(ClientRequestId::new_random(), &cashier(), Cents::ZERO, t(5))
        .unwrap();
    assert_eq!(
        (closed.closeout.opened_at, closed.closeout.closed_at),
        (t(5), t(5))
    );
    assert_eq!((closed.difference, closed.last_seq), (Cents::ZERO, None));
    assert_eq!(sent_range(&closed), (None, None));
    // The same key twice is refused: one close-out per key.
    assert!(
        fresh
            .close_shift(
                closed.closeout.client_request_id,
                &cashier(),
                Cents::ZERO,
                t(6)
            )
            .is_err()
    );
    assert_eq!(fresh.pending_closeouts(10).unwrap(), vec![closed]);
}

#[test]
fn a_clock_stepped_back_after_a_close_loses_no_top_up_and_counts_none_twice() {
    let f = Fixture::new();
    let mut j = f.open();
    topup(&mut j, 5000, "cash", at(18, 0));
    topup(&mut j, 2000, "card", at(19, 30));
    let first = close(&mut j, 5000, at(20, 0));
    assert_eq!(
        figures(&first),
        (at(18, 0), at(20, 0), 5000, 2000, 2, 0, 0, Some(seq(2)))
    );

    // The clock steps back an hour (a reboot without a real-time clock, offline): what is
    // taken now is stamped before the close, and belongs to the new shift all the same.
    topup(&mut j, 1000, "cash", at(19, 0));
    topup(&mut j, 300, "card", at(19, 1));
    let refunded = topup(&mut j, 700, "cash", at(19, 2));
    assert_eq!(
        j.shift_summary().unwrap(),
        summary_at(at(20, 0), 1700, 300, 3, 0)
    );
    refund(&mut j, &refunded, at(19, 3));
    let expected = summary_at(at(20, 0), 1000, 300, 2, 1);
    assert_eq!(j.shift_summary().unwrap(), expected);
    drop(j);
    let mut j = f.open();
    assert_eq!(j.shift_summary().unwrap(), expected);

    // Closed while the clock is still behind: it does not end before it began.
    let second = close(&mut j, 1000, at(19, 30));
    assert_eq!(
        figures(&second),
        (at(20, 0), at(20, 0), 1000, 300, 2, 1, 0, Some(seq(6)))
    );
    // The ledger compares this range, not the times (which the step made empty).
    assert_eq!(
        (sent_range(&first), sent_range(&second)),
        ((Some(1), Some(2)), (Some(3), Some(6)))
    );
    // Each top-up counted once: the next shift is empty, the closed ones do not move.
    assert_eq!(
        j.shift_summary().unwrap(),
        summary_at(at(20, 0), 0, 0, 0, 0)
    );
    assert_eq!(j.pending_closeouts(10).unwrap(), vec![first, second]);
}

#[test]
fn a_top_up_stamped_in_the_future_counts_in_one_shift_only() {
    let f = Fixture::new();
    let mut j = f.open();
    // A clock three hours ahead, then corrected back before the close.
    topup(&mut j, 4000, "cash", at(23, 0));
    topup(&mut j, 500, "card", at(20, 0));
    let first = close(&mut j, 4000, at(20, 30));
    assert_eq!(
        figures(&first),
        (at(23, 0), at(23, 0), 4000, 500, 2, 0, 0, Some(seq(2)))
    );
    // The top-up stamped 23:00 is not counted again in the next shift, and what is taken
    // next, stamped before it, is counted there.
    assert_eq!(
        j.shift_summary().unwrap(),
        summary_at(at(23, 0), 0, 0, 0, 0)
    );
    topup(&mut j, 600, "cash", at(20, 45));
    assert_eq!(
        j.shift_summary().unwrap(),
        summary_at(at(23, 0), 600, 0, 1, 0)
    );
    let second = close(&mut j, 600, at(21, 0));
    assert_eq!(
        figures(&second),
        (at(23, 0), at(23, 0), 600, 0, 1, 0, 0, Some(seq(3)))
    );
    // Once the clock passes the last close-out, close-outs take its time again.
    topup(&mut j, 200, "card", at(23, 30));
    let third = close(&mut j, 0, at(23, 45));
    assert_eq!(
        figures(&third),
        (at(23, 0), at(23, 45), 0, 200, 1, 0, 0, Some(seq(4)))
    );
}

#[test]
fn a_void_of_an_earlier_shifts_top_up_returns_money_in_its_own_shift() {
    // The screens cannot do it (void_last forgets the last top-up at a close), but the
    // arithmetic holds: the money went back during the shift the void was made in.
    let f = Fixture::new();
    let mut j = f.open();
    let earlier = topup(&mut j, 1000, "cash", t(10));
    let card = topup(&mut j, 400, "card", t(11));
    let first = close(&mut j, 1000, t(20));
    refund(&mut j, &earlier, t(30));
    refund(&mut j, &card, t(31));
    // Shown negative, not an error; the top-ups stay counted in the first shift only.
    assert_eq!(
        j.shift_summary().unwrap(),
        summary(Some(20), -1000, -400, 0, 2)
    );
    // Not closed with a negative total (the ledger refuses it): a refusal that says what to
    // do, which writes nothing.
    let refused = j.close_shift(
        ClientRequestId::new_random(),
        &cashier(),
        Cents::ZERO,
        t(40),
    );
    let Err(JournalError::Invalid(message)) = refused else {
        panic!("{refused:?}");
    };
    assert!(message.contains("further top-ups"), "{message}");
    assert_eq!(j.pending_closeouts(10).unwrap(), vec![first.clone()]);
    // Once the shift's top-ups cover the refunds, it closes.
    topup(&mut j, 1500, "cash", t(50));
    topup(&mut j, 400, "card", t(51));
    assert_eq!(j.shift_summary().unwrap(), summary(Some(20), 500, 0, 2, 2));
    let second = close(&mut j, 500, t(60));
    assert_eq!(
        figures(&second),
        (t(20), t(60), 500, 0, 2, 2, 0, Some(seq(6)))
    );
    assert_eq!(j.pending_closeouts(10).unwrap(), vec![first, second]);
}

#[test]
fn a_journal_of_schema_version_2_is_migrated_and_its_top_ups_open_the_first_shift() {
    let f = Fixture::new();
    {
        // The previous version's schema, exactly as it shipped, with a top-up in it.
        let conn = rusqlite::Connection::open(&f.path).unwrap();
        conn.execute_batch(include_str!("../migrations/terminal/0001_journal.sql"))
            .unwrap();
        conn.execute_batch(include_str!(
            "../migrations/terminal/0002_declines_and_limits.sql"
        ))
        .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        let crid = ClientRequestId::new_random().to_string();
        let body = json!({"client_request_id": crid, "terminal_seq": 1,
                          "payment_method": "cash", "amount_cents": 2500});
        conn.execute(
            "INSERT INTO journal (terminal_seq, client_request_id, operation, mode,
                 request_json, card_uid, amount_cents, state, decision, created_at, updated_at)
             VALUES (1, ?1, 'recharge', 'offline', ?2, ?3, 2500, 'pending',
                     'approved_offline', ?4, ?4)",
            rusqlite::params![crid, body.to_string(), CARD, "2025-06-15T15:06:40.000Z"],
        )
        .unwrap();
    }
    let mut j = f.open();
    let version: i64 = rusqlite::Connection::open(&f.path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, cashless::terminal::journal::SCHEMA_VERSION);
    assert_eq!(j.counts().unwrap().pending, 1, "the old entry is kept");
    assert_eq!(j.shift_summary().unwrap(), summary(Some(0), 2500, 0, 1, 0));
    topup(&mut j, 500, "card", t(10));
    let closed = j
        .close_shift(
            ClientRequestId::new_random(),
            &cashier(),
            Cents::new(2500),
            t(20),
        )
        .unwrap();
    assert_eq!(
        (
            closed.closeout.opened_at,
            closed.closeout.cash_cents,
            closed.closeout.card_cents
        ),
        (t(0), Cents::new(2500), Cents::new(500))
    );
    drop(j);
    assert_eq!(f.open().last_closeout().unwrap().unwrap().0, closed);
}

#[test]
fn a_journal_of_schema_version_7_pulls_the_card_feed_again_for_the_key_versions() {
    let f = Fixture::new();
    {
        // Version 7 as it shipped, with a card pulled from the feed (no key version then).
        let conn = rusqlite::Connection::open(&f.path).unwrap();
        for sql in [
            include_str!("../migrations/terminal/0001_journal.sql"),
            include_str!("../migrations/terminal/0002_declines_and_limits.sql"),
            include_str!("../migrations/terminal/0003_shift_closeouts.sql"),
            include_str!("../migrations/terminal/0004_catalog_tax_rates.sql"),
            include_str!("../migrations/terminal/0005_what_festivals_sell.sql"),
            include_str!("../migrations/terminal/0006_deposits.sql"),
            include_str!("../migrations/terminal/0007_voucher_grants.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 7).unwrap();
    }
    {
        // Written by version 7's code path: a card and the cursor after it.
        let conn = rusqlite::Connection::open(&f.path).unwrap();
        conn.execute(
            "INSERT INTO replica_cards (card_uid, balance_cents, status, version, fetched_at)
             VALUES (?1, 2000, 'active', 41, '2026-07-01T10:00:00.000000Z')",
            [CARD],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO replica_meta (key, value) VALUES ('feed_cursor', '41')",
            [],
        )
        .unwrap();
    }
    let mut journal = f.open();
    // The next pull starts from the beginning, and brings the card's key version.
    assert_eq!(journal.feed_cursor().unwrap(), "");
    assert_eq!(journal.replica_key_version(&uid(CARD)).unwrap(), None);
    let keyed = FeedRow {
        key_version: Some(1),
        ..FeedRow::new(uid(CARD), Cents::new(2000), false, 41)
    };
    journal.apply_card_feed(&[keyed], "41", t(0)).unwrap();
    assert_eq!(journal.replica_key_version(&uid(CARD)).unwrap(), Some(1));
    assert_eq!(journal.feed_cursor().unwrap(), "41");
}
