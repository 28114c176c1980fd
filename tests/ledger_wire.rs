//! The ledger's HTTP answers, byte for byte: a golden transcript and the replay property.
//!
//! The real `cashless ledger serve`, on a fresh database (SQLite or PostgreSQL: one
//! transcript for both backends), is driven through one scripted, deterministic sequence
//! that reaches every shape of answer the API gives: approvals (orders online and offline,
//! cash and card top-ups), each stored decline, voids and tombstones,
//! refusals, batches, shift close-outs, Stripe deliveries, feeds and bad input. Every answer
//! (status, the headers that carry meaning, the body's bytes) goes into a transcript that must
//! equal `tests/golden/ledger_wire.txt` byte for byte.
//!
//! Only what differs from run to run is masked: UUIDs the ledger makes (transaction, shift and
//! terminal ids, generated request ids) become `<uuid#N>` in order of first appearance, the
//! ledger's own times (`2026-07-01T21:14:03.412Z`) become `<time>`, and the random salt and
//! hash of an argon2 PIN hash become `<salt>` and `<hash>`. Client request ids, card UIDs and
//! the requests' times are fixed by the script and kept as they are. Every request carries
//! `X-Request-Id: wire-NNN` (its step), so the transcript shows which request id each error
//! body carries (a replayed stored decline repeats its first request's).
//!
//! Asserted on raw bytes, without masking: every answer stored with its idempotency key
//! (approvals, stored declines, voids, tombstones, close-outs, the stored results inside a
//! batch) is replayed twice, while the ledger runs and after a `kill -9` and a restart on the
//! same database, and each replay returns the same status and the same bytes.
//!
//! To rewrite the golden file after an intended change of the wire (never to make a
//! refactor that must change nothing pass): `CASHLESS_GOLDEN_WRITE=1 cargo test --test
//! ledger_wire sqlite::`, then read the diff, and run both backends against it.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use T::{Bar, Bar2, Cp, Forged, Nobody};
use cashless::protocol::codes::ErrorCode;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::Sha256;

/// The golden transcript, relative to the crate's root.
const GOLDEN: &str = "tests/golden/ledger_wire.txt";
/// The Stripe webhook secret of this ledger.
const SECRET: &str = "whsec_wire_0123456789abcdef0123456789";
/// The `created_at` of every request, so that every body is the same on every run.
const CREATED_AT: &str = "2026-07-01T21:14:03Z";
/// The script's client request ids are this prefix and a 12-digit counter: fixed, so not
/// masked (a random UUIDv4 or the ledger's UUIDv7 never starts with it).
const CRID_PREFIX: &str = "00000000-0000-4000-8000-";
/// The routes that take operations and close-outs (idempotent on their `client_request_id`).
const ORDERS: &str = "/v1/orders";
const RECHARGES: &str = "/v1/recharges";
const VOIDS: &str = "/v1/voids";
const BATCH: &str = "/v1/batch";
const SHIFTS: &str = "/v1/shifts";
const RETURNS: &str = "/v1/returns";
const GRANTS: &str = "/v1/voucher-grants";
/// Headers of an answer that go into the transcript (others, like `date`, vary or say nothing).
const HEADERS: &[&str] = &[
    "content-type",
    "etag",
    "idempotent-replayed",
    "x-request-id",
];

/// An order line: product, quantity, unit price.
type Line<'a> = (&'a str, i64, i64);

/// Who sends a request.
#[derive(Clone, Copy, Debug)]
enum T {
    /// bar-1 (bar, "Main Bar").
    Bar,
    /// bar-2 (bar, "Main Bar").
    Bar2,
    /// cp-1 (checkpoint, "Entrance").
    Cp,
    /// No `Authorization` header (public routes, Stripe).
    Nobody,
    /// A bearer token the ledger never issued.
    Forged,
}

/// One request of the script.
#[derive(Clone)]
struct Req {
    path: String,
    who: T,
    /// `Some`: a POST of these bytes; `None`: a GET.
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
}

impl Req {
    fn get(path: &str, who: T) -> Req {
        Req {
            path: path.to_owned(),
            who,
            body: None,
            headers: Vec::new(),
        }
    }
    fn raw(path: &str, who: T, body: impl Into<Vec<u8>>) -> Req {
        Req {
            body: Some(body.into()),
            ..Req::get(path, who)
        }
    }
    fn post(path: &str, who: T, body: &Value) -> Req {
        Req::raw(path, who, serde_json::to_vec(body).unwrap())
    }
    fn header(mut self, name: &'static str, value: &str) -> Req {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// A request whose answer is stored with its idempotency key, and that answer.
struct Stored {
    label: String,
    req: Req,
    status: u16,
    raw: Vec<u8>,
}

/// The ledger, the transcript so far and the answers to replay.
struct Wire {
    /// The script runs on the test's thread and blocks on each request, so that a request
    /// reads as one line (`w.post(...)`) rather than an `.await` chain.
    rt: tokio::runtime::Runtime,
    l: Ledger,
    /// Unmasked; masked once at the end so that `<uuid#N>` numbers follow the whole text.
    transcript: String,
    /// Number of requests sent: names the request id of the next one.
    step: u32,
    /// Client request ids handed out so far.
    crids: u32,
    stored: Vec<Stored>,
}

impl Wire {
    /// A fresh ledger on `backend` that takes Stripe deliveries signed with [`SECRET`].
    fn start(backend: Backend) -> Wire {
        let config = format!("[stripe]\nwebhook_secrets = [\"{SECRET}\"]\n");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let l = rt.block_on(Ledger::start_with_config_on(backend, &config));
        let (transcript, step, crids, stored) = (String::new(), 0, 0, Vec::new());
        Wire {
            rt,
            l,
            transcript,
            step,
            crids,
            stored,
        }
    }

    fn token(&self, who: T) -> Option<String> {
        match who {
            Bar => Some(self.l.bar_token.clone()),
            Bar2 => Some(self.l.bar2_token.clone()),
            Cp => Some(self.l.checkpoint_token.clone()),
            Nobody => None,
            Forged => Some("not-a-token-of-this-ledger".to_owned()),
        }
    }

    fn crid(&mut self) -> String {
        self.crids += 1;
        format!("{CRID_PREFIX}{:012}", self.crids)
    }

    /// A line of the transcript saying what the script did outside HTTP.
    fn note(&mut self, text: &str) {
        writeln!(self.transcript, "# {text}\n").unwrap();
    }

    /// Sends `req`, writes it and its answer into the transcript, and keeps it for
    /// [`Wire::replay_all`] if its answer is stored with its key. The status must be `expect`
    /// (a wrong status means the script's setup is wrong, not the wire).
    fn send(&mut self, label: &str, expect: u16, req: Req) -> Resp {
        let resp = self.exchange(label, expect, &req);
        if is_stored(&req.path, resp.status, resp.error_code()) {
            let (status, raw) = (resp.status, resp.raw.clone());
            let label = label.to_owned();
            self.stored.push(Stored {
                label,
                req,
                status,
                raw,
            });
        }
        resp
    }

    /// Sends `req` and writes it and its answer into the transcript.
    fn exchange(&mut self, label: &str, expect: u16, req: &Req) -> Resp {
        self.step += 1;
        let mut headers = req.headers.clone();
        if !headers.iter().any(|(k, _)| *k == "x-request-id") {
            headers.push(("x-request-id", format!("wire-{:03}", self.step)));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (token, path) = (self.token(req.who), req.path.as_str());
        let method = if req.body.is_some() { "POST" } else { "GET" };
        let resp = self.rt.block_on(async {
            match req.body.clone() {
                Some(body) => {
                    self.l
                        .post_raw(path, token.as_deref(), body, &headers)
                        .await
                }
                None => self.l.get_with(path, token.as_deref(), &headers).await,
            }
        });
        let t = &mut self.transcript;
        writeln!(t, "== {:03} {label}", self.step).unwrap();
        writeln!(t, "{method} {path} as {:?}", req.who).unwrap();
        write!(t, "{}", resp.status).unwrap();
        for name in HEADERS {
            if let Some(value) = resp.header(name) {
                write!(t, " | {name}: {value}").unwrap();
            }
        }
        writeln!(t, "\n{}\n", String::from_utf8_lossy(&resp.raw)).unwrap();
        let body = String::from_utf8_lossy(&resp.raw);
        assert_eq!(resp.status, expect, "step {} ({label}): {body}", self.step);
        resp
    }

    fn get(&mut self, label: &str, expect: u16, who: T, path: &str) -> Resp {
        self.send(label, expect, Req::get(path, who))
    }

    fn post(&mut self, label: &str, expect: u16, who: T, path: &str, body: &Value) -> Resp {
        self.send(label, expect, Req::post(path, who, body))
    }

    /// POSTs bytes that need not be JSON.
    fn raw(&mut self, label: &str, expect: u16, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.send(label, expect, Req::raw(path, Bar, body))
    }

    /// Delivers a Stripe event signed with the configured secret.
    fn stripe(&mut self, label: &str, event: &Value) -> Resp {
        self.send(label, 200, signed(event, SECRET))
    }

    /// Replays every kept request: the same status and the same bytes as its first answer
    /// (for a batch: the same bytes for each result that is stored with its key).
    fn replay_all(&mut self, when: &str) {
        let stored = std::mem::take(&mut self.stored);
        for s in &stored {
            let label = format!("replay {when}: {}", s.label);
            let resp = self.exchange(&label, s.status, &s.req);
            if s.req.path != BATCH {
                assert!(resp.replayed(), "{label}: no Idempotent-Replayed: true");
                assert_same(&label, &s.raw, &resp.raw);
                continue;
            }
            let (first, again) = (batch_results(&s.raw), batch_results(&resp.raw));
            assert_eq!(first.len(), again.len(), "{label}: number of results");
            let mut compared = 0;
            for (i, (a, b)) in first.iter().zip(&again).enumerate() {
                let v: Value = serde_json::from_str(a.get()).unwrap();
                let code = v.pointer("/body/error/code").and_then(Value::as_str);
                let status = u16::try_from(v["status"].as_u64().unwrap()).unwrap();
                if is_stored(ORDERS, status, code) {
                    assert_same(&format!("{label}, result {i}"), a.get(), b.get());
                    compared += 1;
                }
            }
            assert!(compared > 0, "{label}: no stored result to compare");
            if compared == first.len() {
                assert_same(&label, &s.raw, &resp.raw);
            }
        }
        self.stored = stored;
    }

    /// Sells `items` on `card` from bar-1 (by s-bar); returns the body.
    fn sell(&mut self, label: &str, expect: u16, card: u32, items: &[Line], mode: &str) -> Value {
        let body = self.order(Bar, card, items, mode);
        self.post(label, expect, Bar, ORDERS, &body);
        body
    }

    /// Tops `card` up from cp-1 (by s-cash); returns the body.
    fn top_up(
        &mut self,
        label: &str,
        expect: u16,
        card: u32,
        amount_cents: i64,
        method: &str,
        mode: &str,
    ) -> Value {
        let body = self.recharge(card, amount_cents, method, mode);
        self.post(label, expect, Cp, RECHARGES, &body);
        body
    }

    /// Voids `target` from `who`; returns the body.
    fn cancel(&mut self, label: &str, expect: u16, who: T, target: &Value, staff: &str) -> Value {
        let body = self.void(who, target, staff);
        self.post(label, expect, who, VOIDS, &body);
        body
    }

    /// An order from `who` with its next `terminal_seq`, a fixed key and time.
    fn order(&mut self, who: T, card: u32, items: &[Line], mode: &str) -> Value {
        let seq = self.l.seq(&self.token(who).unwrap());
        let body = order_body(&uid(card), seq, items, mode);
        self.fixed(body)
    }

    /// A top-up from cp-1 by s-cash with its next `terminal_seq`, a fixed key and time.
    fn recharge(&mut self, card: u32, amount_cents: i64, method: &str, mode: &str) -> Value {
        let seq = self.l.seq(&self.l.checkpoint_token);
        let body = recharge_body(&uid(card), seq, amount_cents, method, mode);
        self.fixed(body)
    }

    /// A void of `target` from `who` with its next `terminal_seq`, a fixed key and time.
    fn void(&mut self, who: T, target: &Value, staff: &str) -> Value {
        let seq = self.l.seq(&self.token(who).unwrap());
        let target = target["client_request_id"].as_str().unwrap();
        let body = void_body(target, seq, "customer_refund", staff);
        self.fixed(body)
    }

    /// A close-out of a shift of `staff` from 18:00 to 02:00 (with a fixed key).
    fn shift(&mut self, staff: &str, cash_cents: i64, count: i64, counted_cents: i64) -> Value {
        json!({"client_request_id": self.crid(), "staff_id": staff,
            "opened_at": "2026-07-01T18:00:00Z", "closed_at": "2026-07-02T02:00:00Z",
            "cash_cents": cash_cents, "card_cents": 1500, "count": count,
            "counted_cash_cents": counted_cents})
    }

    /// Makes `staff` inactive, as an operator would in the database.
    fn deactivate(&mut self, staff: &str) {
        let sql = format!("UPDATE staff SET active = false WHERE staff_id = '{staff}'");
        assert_eq!(self.l.execute(&sql), 1);
        self.note(&format!("database: staff {staff} deactivated"));
    }

    fn fixed(&mut self, body: Value) -> Value {
        body.set("client_request_id", self.crid())
            .set("created_at", CREATED_AT)
    }
}

/// Edits of a request body.
trait Set {
    /// The body with one field set (or replaced).
    fn set(self, key: &str, value: impl Into<Value>) -> Value;
    /// The body with the `client_request_id` of `other`.
    fn key_of(self, other: &Value) -> Value;
}

impl Set for Value {
    fn set(mut self, key: &str, value: impl Into<Value>) -> Value {
        self[key] = value.into();
        self
    }
    fn key_of(self, other: &Value) -> Value {
        self.set("client_request_id", other["client_request_id"].clone())
    }
}

/// Whether the answer to a POST on `path` is stored with its key: an approval or a stored
/// decline of an operation or a close-out, or a batch (whose stored results are replayed).
fn is_stored(path: &str, status: u16, code: Option<&str>) -> bool {
    let decline = code
        .and_then(ErrorCode::parse)
        .is_some_and(ErrorCode::is_stored_decline);
    match path {
        BATCH => status == 200,
        ORDERS | RECHARGES | VOIDS | SHIFTS | RETURNS => status == 201 || decline,
        _ => false,
    }
}

/// Asserts that a replay's bytes are the first answer's.
#[track_caller]
fn assert_same(label: &str, first: impl AsRef<[u8]>, again: impl AsRef<[u8]>) {
    let (first, again) = (first.as_ref(), again.as_ref());
    assert!(
        first == again,
        "{label}: the replay's bytes differ\nfirst:  {}\nreplay: {}",
        String::from_utf8_lossy(first),
        String::from_utf8_lossy(again)
    );
}

/// The results of a batch's answer, each exactly as the bytes the ledger sent.
fn batch_results(raw: &[u8]) -> Vec<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct Answer {
        results: Vec<Box<RawValue>>,
    }
    serde_json::from_slice::<Answer>(raw).unwrap().results
}

/// A Stripe `checkout.session.completed` event (only the fields the ledger reads, and a few).
fn session(evt: &str, cs: &str, card: u32, amount: i64, currency: &str) -> Value {
    json!({"id": evt, "object": "event", "type": "checkout.session.completed",
        "data": {"object": {"id": cs, "object": "checkout.session", "amount_total": amount,
            "currency": currency, "metadata": {"card_uid": uid(card)},
            "payment_intent": format!("pi_{cs}"), "payment_status": "paid", "status": "complete"}}})
}

/// A Stripe `charge.refunded` event of session `cs`'s payment (cumulative `amount_refunded`).
fn refund(evt: &str, cs: &str, amount_refunded: i64) -> Value {
    json!({"id": evt, "object": "event", "type": "charge.refunded",
        "data": {"object": {"id": format!("ch_{cs}"), "object": "charge",
            "amount_refunded": amount_refunded, "currency": "eur",
            "payment_intent": format!("pi_{cs}")}}})
}

/// `event` as Stripe delivers it, signed now with `secret`.
fn signed(event: &Value, secret: &str) -> Req {
    let body = serde_json::to_vec(event).unwrap();
    let t = chrono::Utc::now().timestamp();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    Req::raw("/v1/webhooks/stripe", Nobody, body).header("stripe-signature", &signature)
}

/// Whether `s` has the shape of `pattern`: `h` a hex digit, `d` a digit, others themselves.
fn fits(s: &str, pattern: &str) -> bool {
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
            b'h' => c.is_ascii_hexdigit(),
            b'd' => c.is_ascii_digit(),
            _ => c == p,
        })
}

/// The transcript with run-dependent values masked (see the module's documentation).
fn mask(text: &str) -> String {
    const UUID: &str = "hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh";
    const TIME: &str = "dddd-dd-ddTdd:dd:dd.dddZ";
    let mut out = String::with_capacity(text.len());
    let mut uuids: HashMap<&str, usize> = HashMap::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if let Some(u) = rest.get(..UUID.len()).filter(|s| fits(s, UUID)) {
            if u.starts_with(CRID_PREFIX) {
                out.push_str(u);
            } else {
                let next = uuids.len() + 1;
                write!(out, "<uuid#{}>", uuids.entry(u).or_insert(next)).unwrap();
            }
            i += UUID.len();
        } else if rest.get(..TIME.len()).is_some_and(|s| fits(s, TIME)) {
            out.push_str("<time>");
            i += TIME.len();
        } else if rest.starts_with("$argon2") {
            // `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`: the parameters are the ledger's.
            let end = rest.find('"').unwrap_or(rest.len());
            let parts: Vec<&str> = rest[..end].split('$').collect();
            assert_eq!(parts.len(), 6, "a PHC string: {}", &rest[..end]);
            write!(out, "${}${}${}$<salt>$<hash>", parts[1], parts[2], parts[3]).unwrap();
            i += end;
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Compares `actual` with the golden file byte for byte (or rewrites it when
/// `CASHLESS_GOLDEN_WRITE=1`); a difference names its first line.
fn check_golden(actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var("CASHLESS_GOLDEN_WRITE").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("cannot read {GOLDEN} ({e}); write it with CASHLESS_GOLDEN_WRITE=1")
    });
    if expected == actual.as_bytes() {
        return;
    }
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ledger_wire.actual.txt");
    std::fs::write(&out, actual).unwrap();
    let expected = String::from_utf8_lossy(&expected);
    let (mut e, mut a) = (expected.split('\n'), actual.split('\n'));
    let mut line = 1;
    let (e, a) = loop {
        match (e.next(), a.next()) {
            (x, y) if x == y && x.is_some() => line += 1,
            (x, y) => break (x.unwrap_or("(end of file)"), y.unwrap_or("(end of file)")),
        }
    };
    panic!(
        "the wire changed: first difference at line {line} of {GOLDEN}\n\
         expected: {e}\n  actual: {a}\n\
         the whole transcript is in {} (diff it with the golden file)",
        out.display()
    );
}

/// One golden transcript for both backends: a difference is a bug in one of them.
async fn the_ledger_answers_byte_for_byte_as_the_golden_transcript(backend: Backend) {
    // The script blocks on each request (see `Wire`): it runs on a thread of its own.
    let script = std::thread::spawn(move || golden_script(backend));
    if let Err(panic) = script.join() {
        std::panic::resume_unwind(panic);
    }
}

on_both_backends! {
    the_ledger_answers_byte_for_byte_as_the_golden_transcript,
}

// The script reads as one request a line, so rustfmt is told to leave it be.
#[rustfmt::skip]
fn golden_script(backend: Backend) {
    let mut w = Wire::start(backend);
    let (o, r, v, b, s) = (ORDERS, RECHARGES, VOIDS, BATCH, SHIFTS);
    let (on, off) = ("online", "offline");
    let (beer, water, cocktail) = (("beer-05", 1, 450), ("water", 1, 200), ("cocktail", 1, 900));

    // Public routes, and what a terminal reads first.
    w.get("health", 200, Nobody, "/health");
    w.get("ready", 200, Nobody, "/ready");
    w.get("who am I", 200, Bar, "/v1/terminals/me");
    let catalog = w.get("catalog", 200, Bar, "/v1/catalog");
    let etag = catalog.header("etag").unwrap();
    w.send("catalog not modified", 304, Req::get("/v1/catalog", Bar).header("if-none-match", etag));
    w.get("staff feed", 200, Cp, "/v1/staff");

    // Top-ups.
    let t1 = w.top_up("cash top-up of a new card", 201, 1, 5000, "cash", on);
    let t2 = w.top_up("card top-up", 201, 1, 2000, "card", on);
    w.top_up("offline top-up past the limit", 201, 2, 60_000, "cash", off);
    w.top_up("above recharge_max: declined", 422, 3, 60_000, "cash", on);
    w.top_up("above balance_max: declined", 422, 2, 45_000, "cash", on);
    w.top_up("top-up of a card soon lost", 201, 4, 1000, "cash", on);
    assert_success("card block", &w.l.admin(&["card", "block", "--uid", &uid(4)]));
    w.note(&format!("admin: card block --uid {}", uid(4)));
    w.top_up("top-up of a lost card: declined", 423, 4, 500, "cash", on);
    w.top_up("offline top-up of a lost card", 201, 4, 500, "cash", off);
    let body = w.recharge(1, 500, "cash", on);
    w.post("top-up from a bar: refused", 403, Bar, r, &body);
    let body = w.recharge(1, 500, "cash", on).set("staff_id", BAR_STAFF);
    w.post("top-up by bar staff: refused", 403, Cp, r, &body);

    // Orders.
    let o1 = w.sell("online order, two lines", 201, 1, &[("beer-05", 2, 450), water], on);
    let o2 = w.sell("online order, three lines", 201, 1, &[cocktail, beer, ("water", 3, 200)], on);
    w.sell("offline order, new card in debt", 201, 5, &[beer], off);
    let other_prices = [("beer-05", 1, 400), ("mystery", 1, 300)];
    w.sell("offline order at other prices", 201, 1, &other_prices, off);
    let o5 = w.order(Bar, 1, &[("cocktail", 9, 900)], on);
    let declined = w.post("insufficient funds", 402, Bar, o, &o5);
    w.sell("unknown card", 404, 9, &[beer], on);
    w.sell("card blocked for debt", 423, 5, &[beer], on);
    w.sell("card blocked as lost", 423, 4, &[beer], on);
    w.sell("unknown product", 422, 1, &[beer, ("mystery", 1, 300)], on);
    w.sell("price mismatch", 422, 1, &[water, ("beer-05", 1, 400)], on);
    let body = w.order(Bar, 1, &[water], on);
    w.post("order from a checkpoint: refused", 403, Cp, o, &body);
    let body = w.order(Bar, 1, &[water], on).set("staff_id", "s-nobody");
    w.post("order by unknown staff: refused", 403, Bar, o, &body);
    let body = w.order(Bar, 1, &[water], off).set("staff_id", "s-nobody");
    w.post("offline, unknown staff: refused", 403, Bar, o, &body);
    let body = w.order(Bar, 1, &[water], on).set("staff_id", CASH_STAFF);
    w.post("order by a cashier: refused", 403, Bar, o, &body);
    let body = w.order(Bar, 1, &[water], on).set("staff_id", SUPER_STAFF);
    w.post("order by a supervisor", 201, Bar, o, &body);
    w.top_up("top-up that lifts a debt block", 201, 5, 1000, "cash", on);

    // Voids and tombstones.
    let v1 = w.cancel("void of an order", 201, Bar, &o1, BAR_STAFF);
    w.cancel("void of a card top-up", 201, Cp, &t2, CASH_STAFF);
    w.cancel("void of a voided order: refused", 409, Bar, &o1, BAR_STAFF);
    let late = w.order(Bar, 1, &[water], off);
    w.cancel("void before its order: tombstone", 201, Bar, &late, BAR_STAFF);
    w.cancel("void of a tombstone: refused", 409, Bar, &late, SUPER_STAFF);
    w.post("the voided order arrives: refused", 409, Bar, o, &late);
    w.post("the voided order again: refused", 409, Bar, o, &late);
    w.cancel("void of a declined order", 201, Bar, &o5, BAR_STAFF);
    let again = w.post("the declined order again", 402, Bar, o, &o5);
    assert_same("a stored decline after its tombstone", &declined.raw, &again.raw);
    w.cancel("another terminal's order: refused", 403, Bar2, &o2, BAR_STAFF);
    w.cancel("void of a void: refused", 400, Bar, &v1, BAR_STAFF);
    let mut body = w.void(Bar, &o2, BAR_STAFF);
    body["target_client_request_id"] = body["client_request_id"].clone();
    w.post("void of itself: refused", 400, Bar, v, &body);
    w.cancel("void by unknown staff: refused", 403, Bar, &o2, "s-nobody");
    let t7 = w.top_up("top-up to spend", 201, 7, 3000, "cash", on);
    w.sell("spend most of it", 201, 7, &[("cocktail", 2, 900), ("water", 3, 200)], on);
    w.cancel("void of a spent top-up: debt", 201, Cp, &t7, SUPER_STAFF);

    // Keys reused, and the Idempotency-Key header.
    let one_water = json!([{"product_id": "water", "quantity": 1, "unit_price_cents": 200}]);
    let body = o2.clone().set("items", one_water).set("total_cents", 200);
    w.post("key reused, another body", 422, Bar, o, &body);
    let body = w.order(Bar, 1, &[water], on).key_of(&t1);
    w.post("a top-up's key for an order", 422, Bar, o, &body);
    let body = w.order(Bar, 1, &[water], on);
    let other_key = o2["client_request_id"].as_str().unwrap();
    let req = Req::post(o, Bar, &body).header("idempotency-key", other_key);
    w.send("Idempotency-Key differs from the body", 400, req);

    // Batches: each result in place.
    let a = w.order(Bar, 1, &[beer], on);
    let void_a = w.void(Bar, &a, BAR_STAFF);
    let unknown = w.order(Bar, 9, &[water], on);
    let top_up = w.recharge(1, 500, "cash", on);
    let refund_op = json!({"type": "refund", "client_request_id": w.crid()});
    let mut no_mode = w.order(Bar, 1, &[water], on);
    no_mode.as_object_mut().unwrap().remove("mode");
    let reused = w.order(Bar, 1, &[water], on).key_of(&o2);
    let batch = json!({"operations": [a.set("type", "order"), unknown.set("type", "order"),
        top_up.set("type", "recharge"), void_a.set("type", "void"), refund_op,
        no_mode.set("type", "order"), reused.set("type", "order"), o1.set("type", "order")]});
    w.post("batch, mixed results", 200, Bar, b, &batch);
    let c1 = w.recharge(8, 1500, "card", on).set("type", "recharge");
    let c2 = w.recharge(8, 70_000, "cash", on).set("type", "recharge");
    w.post("batch of stored answers only", 200, Cp, b, &json!({"operations": [c1, c2]}));
    w.raw("empty batch", 400, b, r#"{"operations": []}"#);
    w.raw("batch, unknown key", 400, b, r#"{"operations": [], "x": 1}"#);
    w.raw("batch that is not JSON", 400, b, "[");

    // Shift close-outs.
    let s1 = w.shift(CASH_STAFF, 66_000, 7, 65_500).set("first_seq", 1).set("last_seq", 12);
    w.post("close-out with a seq range", 201, Cp, s, &s1);
    let body = w.shift(SUPER_STAFF, 0, 0, 0);
    w.post("close-out without a range", 201, Bar, s, &body);
    w.post("close-out key reused", 422, Cp, s, &s1.clone().set("counted_cash_cents", 66_000));
    let body = w.shift("s-nobody", 0, 0, 0);
    w.post("close-out by unknown staff", 403, Cp, s, &body);
    let body = w.shift(CASH_STAFF, 0, 0, 0).set("closed_at", "2026-07-01T17:00:00Z");
    w.post("close-out closed before it opened", 400, Cp, s, &body);
    w.cancel("void of a close-out: refused", 400, Cp, &s1, CASH_STAFF);
    let body = w.order(Bar, 1, &[water], on).key_of(&s1);
    w.post("a close-out's key for an order", 422, Bar, o, &body);

    // Stripe.
    let paid = session("evt_wire_1", "cs_wire_1", 6, 2500, "eur");
    w.stripe("Stripe: session paid", &paid);
    w.stripe("Stripe: the same event again", &paid);
    w.stripe("Stripe: the same session again", &session("evt_wire_2", "cs_wire_1", 6, 2500, "eur"));
    w.stripe("Stripe: charge refunded", &refund("evt_wire_3", "cs_wire_1", 1000));
    w.stripe("Stripe: refund before its session", &refund("evt_wire_4", "cs_wire_9", 700));
    w.stripe("Stripe: another currency", &session("evt_wire_5", "cs_wire_5", 6, 2500, "usd"));
    w.send("Stripe: bad signature", 400, signed(&paid, "whsec_other"));

    // Reads, scans and routes.
    let card1 = format!("/v1/cards/{}", uid(1));
    w.get("card", 200, Bar, &card1);
    w.get("unknown card", 404, Bar, &format!("/v1/cards/{}", uid(9)));
    w.get("bad card UID", 400, Bar, "/v1/cards/xyz");
    w.get("card feed", 200, Bar, "/v1/cards");
    w.get("card feed page", 200, Bar, "/v1/cards?since=3&limit=2");
    w.get("card feed, bad cursor", 400, Bar, "/v1/cards?since=abc");
    w.get("card feed, bad limit", 400, Bar, "/v1/cards?limit=0");
    let scans = json!({"scans": [{"card_uid": uid(1), "result": "approved_online",
        "reader": "ACS ACR122U 00 00", "scanned_at": CREATED_AT, "terminal_seq": 1}]});
    w.post("scans", 200, Bar, "/v1/scans", &scans);
    w.post("scans again", 200, Bar, "/v1/scans", &scans);
    let req = Req::get("/v1/terminals/me", Nobody).header("x-request-id", "not valid");
    w.send("no token, request id generated", 401, req);
    w.get("unknown token", 401, Forged, "/v1/terminals/me");
    w.get("no such route", 404, Bar, "/v1/no-such-route");
    w.get("wrong method", 405, Bar, o);

    // Bad input.
    let good = w.order(Bar, 1, &[water], on);
    let text = serde_json::to_string(&good).unwrap();
    let string_quantity = json!([{"product_id": "water", "quantity": "1", "unit_price_cents": 1}]);
    w.raw("not JSON", 400, o, "{\"client_request_id\"");
    w.post("unknown field", 400, Bar, o, &good.clone().set("tip_cents", 1));
    w.post("quantity as a string", 400, Bar, o, &good.clone().set("items", string_quantity));
    w.post("total that is not the sum", 400, Bar, o, &good.clone().set("total_cents", 999));
    w.post("total as a float", 400, Bar, o, &good.clone().set("total_cents", 200.0));
    w.raw("bytes after the JSON", 400, o, format!("{text} {{}}"));
    w.raw("repeated key", 400, o, text.replacen('{', "{\"mode\": \"offline\", ", 1));
    w.raw("body too large", 413, o, vec![b' '; 64 * 1024 + 1]);

    // Age restrictions and open prices.
    for args in [
        ["--id", "shot", "--price-cents", "400", "--min-age", "18"],
        ["--id", "tip", "--open-price-max-cents", "500", "--category", "extras"],
        ["--id", "lager", "--price-cents", "400", "--voucher-price", "1"],
    ] {
        let mut all = vec!["product", "add", "--name", "Extra", "--point-of-sale", BAR_POS];
        all.extend(args);
        assert_success("product add", &w.l.admin(&all));
        w.note(&format!("admin: {}", all.join(" ")));
    }
    assert_success("card flag", &w.l.admin(&["card", "flag", "--uid", &uid(1), "--under", "18"]));
    w.note(&format!("admin: card flag --uid {} --under 18", uid(1)));
    w.sell("a shot for a card under 18: declined", 422, 1, &[water, ("shot", 1, 400)], on);
    w.sell("a shot for a card under 18, offline", 201, 1, &[("shot", 1, 400)], off);
    w.sell("an open price", 201, 1, &[("tip", 2, 250)], on);
    w.sell("an open price beyond its maximum", 422, 1, &[water, ("tip", 1, 501)], on);
    w.sell("an open price beyond it, offline", 201, 1, &[("tip", 1, 501)], off);
    let body = w.recharge(2, 500, "cash", on).set("age_flag", "under_16");
    w.post("a top-up that marks the card under 16", 201, Cp, r, &body);
    let body = w.recharge(2, 500, "cash", on).set("age_flag", "under_21");
    w.post("an age flag that does not exist: refused", 400, Cp, r, &body);
    w.get("a card with its age flag", 200, Bar, &format!("/v1/cards/{}", uid(2)));
    assert_success("voucher grant", &w.l.admin(&["voucher", "grant", "--uid", &uid(2), "--units", "2"]));
    w.note(&format!("admin: voucher grant --uid {} --units 2", uid(2)));
    w.sell("vouchers pay two of three lagers", 201, 2, &[("lager", 3, 400)], on);
    let mut body = w.order(Bar, 2, &[("lager", 2, 400)], off);
    body["voucher_units"] = json!(2);
    w.post("offline, past the card's vouchers", 201, Bar, o, &body);
    let body = w.order(Bar, 2, &[("lager", 1, 400)], on).set("voucher_units", 1);
    w.post("an online order that says its vouchers: refused", 400, Bar, o, &body);
    w.get("a card with its vouchers", 200, Bar, &format!("/v1/cards/{}", uid(2)));

    // Deposits: a draft that comes in a cup, cups handed back.
    for args in [
        &["--id", "cup", "--price-cents", "200", "--returnable"][..],
        &["--id", "draft", "--price-cents", "450", "--deposit", "cup"],
    ] {
        let mut all = vec!["product", "add", "--name", "Extra", "--point-of-sale", BAR_POS];
        all.extend(args);
        assert_success("product add", &w.l.admin(&all));
        w.note(&format!("admin: {}", all.join(" ")));
    }
    w.sell("a draft and its cup", 201, 6, &[("draft", 2, 450), ("cup", 2, 200)], on);
    let cups = |w: &mut Wire, card: u32, items: Value, amount: i64, mode: &str| {
        let seq = w.l.seq(&w.l.bar_token);
        w.fixed(json!({"terminal_seq": seq, "card_uid": uid(card), "items": items,
            "amount_cents": amount, "staff_id": BAR_STAFF, "mode": mode}))
    };
    let cup = |n: i64, cents: i64| json!([{"product_id": "cup", "quantity": n, "unit_deposit_cents": cents}]);
    let back = cups(&mut w, 6, cup(2, 200), 400, on);
    w.post("two cups back", 201, Bar, RETURNS, &back);
    let body = cups(&mut w, 6, cup(1, 150), 150, on);
    w.post("a cup at another deposit: declined", 422, Bar, RETURNS, &body);
    let body = cups(&mut w, 6, json!([{"product_id": "draft", "quantity": 1, "unit_deposit_cents": 450}]), 450, on);
    w.post("a draft is not returnable: declined", 422, Bar, RETURNS, &body);
    let body = cups(&mut w, 6, cup(1, 150), 150, off);
    w.post("offline, at the terminal's deposit", 201, Bar, RETURNS, &body);
    let body = cups(&mut w, 6, cup(1, 200), 300, on);
    w.post("an amount that is not the sum: refused", 400, Bar, RETURNS, &body);
    let body = cups(&mut w, 6, cup(1, 200), 200, on);
    w.post("cups back at a checkpoint: refused", 403, Cp, RETURNS, &body);
    w.cancel("void of a return", 201, Bar, &back, BAR_STAFF);

    // Vouchers given at the checkpoint by its supervisor; a void takes them back.
    let grant = |w: &mut Wire, who: T, units: i64, staff: &str, mode: &str| {
        let seq = w.l.seq(&w.token(who).unwrap());
        w.fixed(json!({"terminal_seq": seq, "card_uid": uid(31), "units": units,
            "staff_id": staff, "mode": mode}))
    };
    let given = grant(&mut w, Cp, 3, SUPER_STAFF, on);
    w.post("three vouchers for an artist never seen", 201, Cp, GRANTS, &given);
    let body = grant(&mut w, Cp, 3, CASH_STAFF, on);
    w.post("a cashier's grant: refused", 403, Cp, GRANTS, &body);
    let body = grant(&mut w, Bar, 3, SUPER_STAFF, on);
    w.post("a grant at a bar: refused", 403, Bar, GRANTS, &body);
    let body = grant(&mut w, Cp, 0, SUPER_STAFF, on);
    w.post("no units: refused", 400, Cp, GRANTS, &body);
    let body = grant(&mut w, Cp, 2, SUPER_STAFF, off);
    w.post("offline grant", 201, Cp, GRANTS, &body);
    w.cancel("void of a grant", 201, Cp, &given, SUPER_STAFF);
    w.get("a card with granted vouchers", 200, Bar, &format!("/v1/cards/{}", uid(31)));

    // A staff member deactivated: refused online, recorded offline.
    w.deactivate(SUPER_STAFF);
    let body = w.order(Bar, 1, &[water], on).set("staff_id", SUPER_STAFF);
    w.post("inactive staff online: refused", 403, Bar, o, &body);
    let body = w.order(Bar, 1, &[water], off).set("staff_id", SUPER_STAFF);
    w.post("inactive staff offline", 201, Bar, o, &body);

    // Every stored answer, replayed while the ledger runs, then after a crash.
    w.note("replays while the ledger runs");
    w.replay_all("(running)");
    w.rt.block_on(w.l.restart()); // SIGKILL, then `serve` again on the same database
    w.note("kill -9 of the ledger, restart on the same file");
    w.replay_all("(after kill -9)");
    w.get("card after the restart", 200, Bar, &card1);
    w.l.assert_audit_ok();

    check_golden(&mask(&w.transcript));
}
