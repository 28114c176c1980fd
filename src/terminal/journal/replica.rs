//! The card replica: the ledger's balance and status of each card as the card feed last
//! carried it, the feed cursor and the time of the last pull; and what this terminal charged a
//! card that the replica does not reflect yet ([`Journal::local_charges`], the rule being
//! [`charges`]'s). The offline policy decides from the two.
//!
//! Invariant between them: a pull is recorded once it is complete (a page says the feed has
//! nothing more), with the time its *first* page was requested, so an entry synced strictly
//! before it is in the replica's balances, and one synced at or after it keeps counting as a
//! local charge until a later pull is recorded. A pull cut short records nothing; the pages it
//! applied still count for the cards they carried (each row's `fetched_at` is its page's
//! request time, and an entry synced strictly before it is in that row's balance).

use super::entries::EntryRow;
use super::{
    Journal, JournalError, META_FEED_CURSOR, META_LAST_FEED_AT, META_LAST_SYNC_AT, at_most,
    corrupt, get_meta, invalid, opt_time, parse_time, set_meta,
};
use crate::domain::{AgeFlag, CardUid, Cents};
use crate::protocol::api::{FEED_LIMIT_MAX, format_time};
use crate::terminal::core::charges::{self, ChargeRow};
use crate::terminal::core::policy::ReplicaCard;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

/// How often an empty card-feed page is recorded (the replica's age), at most.
const EMPTY_FEED_RECORD_MS: i64 = 60_000;
/// The most cards one [`Journal::apply_card_feed`] call takes: one page of the ledger's feed.
pub const FEED_CARDS_MAX: usize = FEED_LIMIT_MAX as usize;
/// The longest card-feed cursor accepted, in bytes.
pub const CURSOR_BYTES_MAX: usize = 1024;

/// [`Journal::local_charges`]'s candidate rows: the card's entries but those synced strictly
/// before its replica row is known to reflect (`?2`: the later of the last complete pull and
/// the row's own fetch, `NULL` before either; times sort as text). Declined and undecided
/// entries are left to the rule, which [`charge_row`] feeds.
const LOCAL_CHARGES_SQL: &str = "SELECT terminal_seq, state, decision, amount_cents, synced_at,
            COALESCE(json_extract(ledger_body, '$.vouchers_used'),
                     json_extract(request_json, '$.voucher_units'), 0),
            operation = 'void' AND decision IS NULL
     FROM journal
     WHERE card_uid = ?1 AND (state <> 'synced' OR ?2 IS NULL OR synced_at >= ?2)";

/// One card of a card-feed page, as the replica keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRow {
    /// The card.
    pub card_uid: CardUid,
    /// Its balance at the ledger.
    pub balance: Cents,
    /// Blocked (lost, or in debt).
    pub blocked: bool,
    /// Its feed version.
    pub version: i64,
    /// What staff saw on the holder's ID.
    pub age_flag: Option<AgeFlag>,
    /// Voucher units on the card at the ledger.
    pub voucher_units: i64,
    /// The master key version the card was issued with (`None`: UID only).
    pub key_version: Option<u8>,
}

impl FeedRow {
    /// A card without an age flag.
    pub fn new(card_uid: CardUid, balance: Cents, blocked: bool, version: i64) -> FeedRow {
        FeedRow {
            card_uid,
            balance,
            blocked,
            version,
            age_flag: None,
            voucher_units: 0,
            key_version: None,
        }
    }
}

impl Journal {
    /// What this terminal charged `uid` that the replica's balance does not reflect yet:
    /// the value the offline policy takes as `local_charges` (positive = charged; negative when
    /// this terminal's own top-ups and refunds outweigh its sales). Which entries count is
    /// [`charges::counts`]'s rule; this loads the card's candidate rows and applies it.
    ///
    /// The candidates are the card's entries (through the `journal_card` index) except those
    /// synced strictly before the last recorded card-feed pull, which the replica reflects
    /// and which therefore never count: what is loaded grows with what is unsettled and
    /// recent on the card, not with its history. The rule relies on
    /// [`Journal::apply_card_feed`]'s `now` being taken before the feed request was sent.
    pub fn local_charges(&self, uid: &CardUid) -> Result<Cents, JournalError> {
        let (rows, reflected_as_of) = self.charge_rows(uid)?;
        charges::local_charges(&rows, reflected_as_of)
            .ok_or_else(|| corrupt(format!("amounts of {uid} overflow")))
    }

    /// Everything the offline policy needs of this terminal's own entries on `uid`, from one
    /// read of the card's rows: [`Journal::local_charges`], [`Journal::local_voucher_use`],
    /// and what the voids of in-doubt credits count in the charges
    /// ([`charges::in_doubt_voided_credits`]).
    pub fn local_effects(&self, uid: &CardUid) -> Result<(Cents, i64, Cents), JournalError> {
        let (rows, reflected_as_of) = self.charge_rows(uid)?;
        let overflow = || corrupt(format!("amounts of {uid} overflow"));
        Ok((
            charges::local_charges(&rows, reflected_as_of).ok_or_else(overflow)?,
            charges::local_voucher_use(&rows, reflected_as_of).ok_or_else(overflow)?,
            charges::in_doubt_voided_credits(&rows, reflected_as_of).ok_or_else(overflow)?,
        ))
    }

    /// The voucher units this terminal used on `uid` that the replica does not reflect yet
    /// ([`charges::local_voucher_use`], over the same rows as [`Journal::local_charges`]).
    pub fn local_voucher_use(&self, uid: &CardUid) -> Result<i64, JournalError> {
        let (rows, reflected_as_of) = self.charge_rows(uid)?;
        charges::local_voucher_use(&rows, reflected_as_of)
            .ok_or_else(|| corrupt(format!("voucher units of {uid} overflow")))
    }

    /// The card's candidate rows of the local-charges rule, and the last pull's time.
    ///
    /// The time is the later of the last complete pull and the request of the page that last
    /// carried this card (`replica_cards.fetched_at`): the ledger read that page after every
    /// acknowledgement before its request, so the card's row reflects them even when the pull
    /// it belonged to was cut short (a pull cut after the page with the card's change would
    /// otherwise count an acknowledged void or sale twice, and show the card poorer than it
    /// is: the JSON-lines checkpoint test caught a card at 0 shown at -50.00).
    fn charge_rows(
        &self,
        uid: &CardUid,
    ) -> Result<(Vec<ChargeRow>, Option<DateTime<Utc>>), JournalError> {
        let last_feed_at = opt_time(META_LAST_FEED_AT, get_meta(&self.conn, META_LAST_FEED_AT)?)?;
        let fetched = self
            .conn
            .prepare_cached("SELECT fetched_at FROM replica_cards WHERE card_uid = ?1")?
            .query_row([uid.as_str()], |r| r.get::<_, String>(0))
            .optional()?;
        let fetched_at = opt_time("replica_cards.fetched_at", fetched)?;
        // `None` (never) sorts before any time.
        let reflected_as_of = last_feed_at.max(fetched_at);
        let mut stmt = self.conn.prepare_cached(LOCAL_CHARGES_SQL)?;
        let mut rows = stmt.query(params![uid.as_str(), reflected_as_of.map(format_time)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(charge_row(row)?);
        }
        Ok((out, reflected_as_of))
    }

    /// Applies the page of the card feed that completes a pull (the feed has nothing after
    /// it) and its `next_cursor`, in one transaction, and records the pull as of `now`.
    ///
    /// Each card row takes the feed's balance, status (`blocked`), age flag and version and
    /// `fetched_at = now`, unless the replica already holds a newer version of it (a page
    /// applied twice or out of order never moves a card backwards). `now` must be the time
    /// the pull's *first* page was requested: every acknowledgement after it is counted by
    /// [`Journal::local_charges`], and every change before it is in the pages applied since
    /// (the earlier ones with [`Journal::apply_card_feed_page`]). Refused above
    /// [`FEED_CARDS_MAX`] cards or a cursor longer than [`CURSOR_BYTES_MAX`] bytes.
    pub fn apply_card_feed(
        &mut self,
        cards: &[FeedRow],
        next_cursor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        check_feed_page(cards, next_cursor)?;
        // An empty page that moves nothing (an idle terminal, every sync round) is recorded
        // at most once a minute, each write being an fsync, unless an entry became synced
        // since (or at) the last recorded pull: `local_charges` counts such an entry until
        // a later pull is recorded.
        let meta_time = |key| -> Result<Option<DateTime<Utc>>, JournalError> {
            Ok(get_meta(&self.conn, key)?.as_deref().and_then(parse_time))
        };
        if cards.is_empty()
            && get_meta(&self.conn, META_FEED_CURSOR)?.as_deref() == Some(next_cursor)
            && let Some(last_feed) = meta_time(META_LAST_FEED_AT)?
            && last_feed <= now
            && now - last_feed < chrono::Duration::milliseconds(EMPTY_FEED_RECORD_MS)
            && meta_time(META_LAST_SYNC_AT)?.is_none_or(|synced| synced < last_feed)
        {
            return Ok(());
        }
        self.write_feed_page(cards, next_cursor, now, true)
    }

    /// Applies a page of the card feed that does not complete a pull (more may follow): its
    /// cards (`fetched_at = now`, the time this page was requested) and its `next_cursor`,
    /// but not the pull's time. A page holds the oldest changes after the cursor, not every
    /// card changed since, so until the pull is complete an acknowledged charge on a card of
    /// a later page must keep counting (found in review: a pull cut after its first page
    /// would have let an offline sale spend money the replica had not yet lost).
    pub fn apply_card_feed_page(
        &mut self,
        cards: &[FeedRow],
        next_cursor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        check_feed_page(cards, next_cursor)?;
        self.write_feed_page(cards, next_cursor, now, false)
    }

    /// Records a pull whose pages all came through [`Journal::apply_card_feed_page`] and
    /// brought cards, as of `started` (its first page's request), with the cursor of its
    /// last, empty page. Unlike [`Journal::apply_card_feed`] of an empty page, always written.
    pub fn complete_card_feed_pull(
        &mut self,
        next_cursor: &str,
        started: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        check_feed_page(&[], next_cursor)?;
        self.write_feed_page(&[], next_cursor, started, true)
    }

    /// One transaction: the cards, the cursor and, with `completes`, the pull's time.
    fn write_feed_page(
        &mut self,
        cards: &[FeedRow],
        next_cursor: &str,
        now: DateTime<Utc>,
        completes: bool,
    ) -> Result<(), JournalError> {
        let now_text = format_time(now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO replica_cards (card_uid, balance_cents, status, version, fetched_at,
                                            age_flag, voucher_units, key_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (card_uid) DO UPDATE SET
                     balance_cents = excluded.balance_cents,
                     status = excluded.status,
                     version = excluded.version,
                     fetched_at = excluded.fetched_at,
                     age_flag = excluded.age_flag,
                     voucher_units = excluded.voucher_units,
                     key_version = excluded.key_version
                 WHERE excluded.version >= replica_cards.version",
            )?;
            for card in cards {
                let status = if card.blocked { "blocked" } else { "active" };
                upsert.execute(params![
                    card.card_uid.as_str(),
                    card.balance.get(),
                    status,
                    card.version,
                    now_text,
                    card.age_flag.map(AgeFlag::as_str),
                    card.voucher_units,
                    card.key_version,
                ])?;
            }
        }
        set_meta(&tx, META_FEED_CURSOR, next_cursor)?;
        if completes {
            set_meta(&tx, META_LAST_FEED_AT, &now_text)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The replica's view of a card and when it was fetched (the `as_of` of an offline
    /// balance); `None` for a card the feed never carried.
    pub fn replica_card(
        &self,
        uid: &CardUid,
    ) -> Result<Option<(ReplicaCard, DateTime<Utc>)>, JournalError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT balance_cents, status, fetched_at, age_flag, voucher_units FROM replica_cards
             WHERE card_uid = ?1",
        )?;
        let mut rows = stmt.query([uid.as_str()])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let balance = Cents::new(row.get(0)?);
        let status: String = row.get(1)?;
        let blocked = match status.as_str() {
            "active" => false,
            "blocked" => true,
            other => return Err(corrupt(format!("card {uid}: status {other:?}"))),
        };
        let fetched_at: String = row.get(2)?;
        let fetched_at = parse_time(&fetched_at)
            .ok_or_else(|| corrupt(format!("card {uid}: fetched_at {fetched_at:?}")))?;
        let age_flag = row
            .get::<_, Option<String>>(3)?
            .map(|f| {
                AgeFlag::parse(&f).ok_or_else(|| corrupt(format!("card {uid}: age_flag {f:?}")))
            })
            .transpose()?;
        Ok(Some((
            ReplicaCard {
                balance,
                blocked,
                age_flag,
                vouchers: row.get(4)?,
            },
            fetched_at,
        )))
    }

    /// The master key version the ledger recorded for `uid` as of the last feed page that
    /// carried it; `None` for a card issued without a key or unknown to the replica.
    pub fn replica_key_version(&self, uid: &CardUid) -> Result<Option<u8>, JournalError> {
        let version: Option<i64> = self
            .conn
            .prepare_cached("SELECT key_version FROM replica_cards WHERE card_uid = ?1")?
            .query_row([uid.as_str()], |r| r.get(0))
            .optional()?
            .flatten();
        version
            .map(|v| u8::try_from(v).map_err(|_| corrupt(format!("card {uid}: key_version {v}"))))
            .transpose()
    }

    /// Where the next card-feed request starts: the last applied `next_cursor`, or `""` (the
    /// beginning) before the first page.
    pub fn feed_cursor(&self) -> Result<String, JournalError> {
        Ok(get_meta(&self.conn, META_FEED_CURSOR)?.unwrap_or_default())
    }

    /// When an entry last became `synced` (`None` before any).
    pub fn last_acknowledged_at(&self) -> Result<Option<DateTime<Utc>>, JournalError> {
        opt_time(META_LAST_SYNC_AT, get_meta(&self.conn, META_LAST_SYNC_AT)?)
    }
}

/// A feed page's bounds: at most [`FEED_CARDS_MAX`] cards, a cursor of at most
/// [`CURSOR_BYTES_MAX`] bytes.
fn check_feed_page(cards: &[FeedRow], next_cursor: &str) -> Result<(), JournalError> {
    at_most(cards.len(), FEED_CARDS_MAX, "cards in one feed page")?;
    if next_cursor.len() > CURSOR_BYTES_MAX {
        return Err(invalid(format!(
            "a feed cursor of {} bytes, at most {CURSOR_BYTES_MAX}",
            next_cursor.len()
        )));
    }
    Ok(())
}

/// Reads one of [`LOCAL_CHARGES_SQL`]'s rows.
fn charge_row(row: &Row<'_>) -> Result<ChargeRow, JournalError> {
    let r = EntryRow::new(row)?;
    Ok(ChargeRow {
        state: r.state(1)?,
        decision: r.decision(2)?,
        amount: Cents::new(row.get(3)?),
        synced_at: r.time(4, "synced_at")?,
        vouchers: row.get(5)?,
        voids_in_doubt: row.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::terminal::journal::Journal;

    #[test]
    fn local_charges_read_one_cards_rows_through_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.db")).unwrap();
        let mut plan = j
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LOCAL_CHARGES_SQL}"))
            .unwrap();
        let plan: Vec<String> = plan
            .query_map(params!["04A1B2C3", "2026-01-01T00:00:00.000Z"], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH journal USING INDEX journal_card (card_uid=?)"],
            "{plan:#?}"
        );
    }
}
