//! Bad input against the real ledger: every field of orders, top-ups, voids, shift close-outs,
//! batches, scans, the card lookup and the card feed gets the wrong type, a missing value, null, zero,
//! negative, numbers past `i64`, floats for cents, huge and non-UTF-8 strings, SQL fragments,
//! unknown fields, bodies over the limits and bad credentials.
//!
//! Every case goes through one [`check`]: the exact status and `error.code` of
//! docs/ledger-api.md, `details.field` where the contract names the
//! field, the error shape (`code`, `message`, `request_id`), and a database fingerprint that
//! must not change. A table runs to the end and reports every failing case at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, Ledger, new_id, now_rfc3339, uid};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The per-request body limit of docs/ledger-api.md.
const BODY_LIMIT: usize = 64 * 1024;
/// The body limit of `POST /v1/batch`.
const BATCH_BODY_LIMIT: usize = 1024 * 1024;
/// A string field that is far too long, yet keeps the body under [`BODY_LIMIT`]: 400.
const LONG_STRING_LEN: usize = 10 * 1024;
/// A string field that takes the body over [`BODY_LIMIT`]: 413.
const HUGE_STRING_LEN: usize = 1024 * 1024;
/// The classic.
const SQL: &str = "'; DROP TABLE cards; --";
/// Timeout of one request in these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Requests and expectations
// ---------------------------------------------------------------------------------------------

/// What `details.field` must be.
#[derive(Debug, Clone)]
enum Field {
    /// Exactly this JSON path.
    Is(String),
    /// One of these (where the contract allows more than one spelling).
    OneOf(Vec<String>),
    /// No `details.field` (unparseable JSON, or an error about no field at all).
    Absent,
    /// Not checked: the contract does not say.
    Any,
}

impl Field {
    fn is(path: &str) -> Field {
        Field::Is(path.to_owned())
    }

    /// The same expectation for an operation inside a batch: the path alone, or prefixed
    /// with `operations[i].`.
    fn in_batch(&self, index: usize) -> Field {
        let both = |p: &str| vec![p.to_owned(), format!("operations[{index}].{p}")];
        match self {
            Field::Is(p) => Field::OneOf(both(p)),
            Field::OneOf(ps) => Field::OneOf(ps.iter().flat_map(|p| both(p)).collect()),
            Field::Absent => Field::Any,
            Field::Any => Field::Any,
        }
    }
}

/// The expected answer.
#[derive(Debug, Clone)]
enum Expect {
    /// An error answer of the contract's shape.
    Error {
        status: u16,
        code: &'static str,
        field: Field,
    },
    /// `200` from `POST /v1/batch` with `count` results, result `index` being this error.
    BatchItem {
        count: usize,
        index: usize,
        status: u16,
        code: &'static str,
        field: Field,
        /// The `client_request_id` the result must carry, when the test knows it.
        client_request_id: Option<Value>,
    },
    /// `200` from `POST /v1/batch` with `count` results, each a 400 `INVALID_REQUEST`.
    BatchAllInvalid { count: usize },
}

fn invalid(field: Field) -> Expect {
    Expect::Error {
        status: 400,
        code: "INVALID_REQUEST",
        field,
    }
}

fn invalid_at(path: &str) -> Expect {
    invalid(Field::is(path))
}

fn too_large() -> Expect {
    Expect::Error {
        status: 413,
        code: "PAYLOAD_TOO_LARGE",
        field: Field::Any,
    }
}

fn unauthorized() -> Expect {
    Expect::Error {
        status: 401,
        code: "UNAUTHORIZED",
        field: Field::Any,
    }
}

fn forbidden() -> Expect {
    Expect::Error {
        status: 403,
        code: "FORBIDDEN",
        field: Field::Any,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

/// How the body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// With `Content-Length` (what reqwest does for a byte body).
    Length,
    /// `Transfer-Encoding: chunked`, so the server cannot learn the size up front.
    Chunked,
}

/// One request and what must come back.
struct Case {
    name: String,
    method: Method,
    path: String,
    /// The whole `Authorization` header value, if any.
    auth: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
    expect: Expect,
}

impl Case {
    fn post(
        name: impl Into<String>,
        path: &str,
        auth: Option<String>,
        body: Vec<u8>,
        expect: Expect,
    ) -> Case {
        Case {
            name: name.into(),
            method: Method::Post,
            path: path.to_owned(),
            auth,
            headers: Vec::new(),
            body,
            framing: Framing::Length,
            expect,
        }
    }

    fn get(name: impl Into<String>, path: &str, auth: Option<String>, expect: Expect) -> Case {
        Case {
            name: name.into(),
            method: Method::Get,
            path: path.to_owned(),
            auth,
            headers: Vec::new(),
            body: Vec::new(),
            framing: Framing::Length,
            expect,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Case {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn chunked(mut self) -> Case {
        self.framing = Framing::Chunked;
        self
    }
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// A response as these tests see it.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    raw: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.raw).ok()
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        if text.len() > 600 {
            format!(
                "{}... ({} bytes)",
                &text[..text.floor_char_boundary(600)],
                self.raw.len()
            )
        } else {
            text.into_owned()
        }
    }
}

/// Sends a case's request; a transport error (reset, timeout) is a failure of the case.
///
/// Bodies over the per-request limit and chunked bodies go over a raw TCP connection that
/// reads the answer while the body is still being written: the server answers 413 before it
/// has read everything and closes, and an HTTP client that only reads after writing would
/// report a broken pipe instead of the answer.
async fn send(client: &reqwest::Client, base_url: &str, case: &Case) -> Result<Reply, String> {
    if case.framing == Framing::Chunked || case.body.len() > BODY_LIMIT {
        send_raw(base_url, case).await
    } else {
        send_reqwest(client, base_url, case).await
    }
}

/// A client that opens a new connection per request, so that a connection the server
/// closed after one answer is never reused for the next case.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

async fn send_reqwest(
    client: &reqwest::Client,
    base_url: &str,
    case: &Case,
) -> Result<Reply, String> {
    let url = format!("{base_url}{}", case.path);
    let mut req = match case.method {
        Method::Get => client.get(url),
        Method::Post => client
            .post(url)
            .header("content-type", "application/json")
            .body(case.body.clone()),
    };
    if let Some(auth) = &case.auth {
        req = req.header("authorization", auth.as_str());
    }
    for (k, v) in &case.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("transport error: {e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let raw = resp
        .bytes()
        .await
        .map_err(|e| format!("transport error reading the body: {e:?}"))?
        .to_vec();
    Ok(Reply {
        status,
        headers,
        raw,
    })
}

/// HTTP/1.1 by hand over TCP, with `Content-Length` or chunked framing.
async fn send_raw(base_url: &str, case: &Case) -> Result<Reply, String> {
    let addr = base_url.trim_start_matches("http://").to_owned();
    let method = match case.method {
        Method::Get => "GET",
        Method::Post => "POST",
    };
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nconnection: close\r\n",
        case.path
    );
    match case.framing {
        Framing::Chunked => head.push_str("transfer-encoding: chunked\r\n"),
        Framing::Length => head.push_str(&format!("content-length: {}\r\n", case.body.len())),
    }
    if let Some(auth) = &case.auth {
        head.push_str(&format!("authorization: {auth}\r\n"));
    }
    for (k, v) in &case.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    match case.framing {
        Framing::Length => wire.extend_from_slice(&case.body),
        Framing::Chunked => {
            for chunk in case.body.chunks(16 * 1024) {
                wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                wire.extend_from_slice(chunk);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
        }
    }
    let work = async move {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut reader, mut writer) = stream.into_split();
        // A failed write is fine (the server may refuse and close early) as long as the
        // answer can be read.
        let writing = tokio::spawn(async move {
            let _ = writer.write_all(&wire).await;
            writer
        });
        let mut raw = Vec::new();
        let read = reader.read_to_end(&mut raw).await;
        let _ = writing.await;
        match parse_http_response(&raw) {
            Ok(reply) => Ok(reply),
            Err(e) => Err(format!("{e} (read: {read:?})")),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// Parses an HTTP/1.1 response read until the server closed the connection.
fn parse_http_response(raw: &[u8]) -> Result<Reply, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no complete response head in {} bytes: {:?}",
                raw.len(),
                String::from_utf8_lossy(raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let is_chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if is_chunked {
        body = dechunk(&body)?;
    }
    Ok(Reply {
        status,
        headers,
        raw: body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size line")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Checks one answer against the expectation; returns every problem found.
fn check_reply(case: &Case, reply: &Reply) -> Vec<String> {
    let mut problems = Vec::new();
    let sent_request_id = case
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
        .map(|(_, v)| v.clone());
    let header_request_id = reply.header("x-request-id").map(str::to_owned);
    match (&header_request_id, &sent_request_id) {
        (None, _) => problems.push("no X-Request-Id header".into()),
        (Some(got), Some(sent)) if got != sent => {
            problems.push(format!("X-Request-Id {got:?} is not the caller's {sent:?}"));
        }
        _ => {}
    }
    let content_type = reply.header("content-type").unwrap_or_default();
    if !content_type.starts_with("application/json") {
        problems.push(format!(
            "Content-Type {content_type:?}, expected application/json"
        ));
    }
    let Some(body) = reply.json() else {
        problems.push(format!(
            "HTTP {} with a body that is not JSON: {:?}",
            reply.status,
            reply.text()
        ));
        return problems;
    };
    match &case.expect {
        Expect::Error {
            status,
            code,
            field,
        } => {
            if reply.status != *status {
                problems.push(format!("HTTP {}, expected {status}", reply.status));
            }
            check_error_body(
                &body,
                code,
                field,
                header_request_id.as_deref(),
                "",
                &mut problems,
            );
        }
        Expect::BatchItem {
            count,
            index,
            status,
            code,
            field,
            client_request_id,
        } => {
            if reply.status != 200 {
                problems.push(format!("HTTP {}, expected 200", reply.status));
                return problems;
            }
            let Some(results) = body["results"].as_array() else {
                problems.push("no `results` array".into());
                return problems;
            };
            if results.len() != *count {
                problems.push(format!("{} results, expected {count}", results.len()));
            }
            let Some(result) = results.get(*index) else {
                return problems;
            };
            if result["status"] != json!(status) {
                problems.push(format!(
                    "results[{index}].status {}, expected {status}",
                    result["status"]
                ));
            }
            if let Some(crid) = client_request_id
                && &result["client_request_id"] != crid
            {
                problems.push(format!(
                    "results[{index}].client_request_id {}, expected {crid}",
                    result["client_request_id"]
                ));
            }
            check_error_body(
                &result["body"],
                code,
                field,
                None,
                &format!("results[{index}].body."),
                &mut problems,
            );
        }
        Expect::BatchAllInvalid { count } => {
            if reply.status != 200 {
                problems.push(format!("HTTP {}, expected 200", reply.status));
                return problems;
            }
            let results = body["results"].as_array().cloned().unwrap_or_default();
            if results.len() != *count {
                problems.push(format!("{} results, expected {count}", results.len()));
            }
            let wrong: Vec<usize> = results
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r["status"] != json!(400)
                        || r["body"]["error"]["code"] != json!("INVALID_REQUEST")
                })
                .map(|(i, _)| i)
                .collect();
            if !wrong.is_empty() {
                problems.push(format!("results not 400 INVALID_REQUEST: {wrong:?}"));
            }
        }
    }
    if !problems.is_empty() {
        problems.push(format!("body: {}", reply.text()));
    }
    problems
}

/// The error shape of the contract: `{"error": {"code", "message", "request_id", "details"?}}`.
fn check_error_body(
    body: &Value,
    code: &str,
    field: &Field,
    header_request_id: Option<&str>,
    at: &str,
    problems: &mut Vec<String>,
) {
    let Some(object) = body.as_object() else {
        problems.push(format!("{at}: not a JSON object"));
        return;
    };
    if object.keys().any(|k| k != "error") {
        problems.push(format!(
            "{at}: keys besides `error`: {:?}",
            object.keys().collect::<Vec<_>>()
        ));
    }
    let error = &body["error"];
    if error["code"] != json!(code) {
        problems.push(format!(
            "{at}error.code {}, expected {code:?}",
            error["code"]
        ));
    }
    if error["message"]
        .as_str()
        .is_none_or(|m| m.trim().is_empty())
    {
        problems.push(format!("{at}error.message missing or empty"));
    }
    match error["request_id"].as_str() {
        Some(id) if !id.is_empty() => {
            if let Some(header) = header_request_id
                && header != id
            {
                problems.push(format!(
                    "{at}error.request_id {id:?} differs from X-Request-Id {header:?}"
                ));
            }
        }
        _ => problems.push(format!("{at}error.request_id missing or empty")),
    }
    let details = &error["details"];
    if !details.is_null() && !details.is_object() {
        problems.push(format!("{at}error.details is not an object: {details}"));
    }
    let got = details["field"].as_str();
    match field {
        Field::Is(want) if got != Some(want.as_str()) => {
            problems.push(format!(
                "{at}error.details.field {got:?}, expected {want:?}"
            ));
        }
        Field::OneOf(wants) if !wants.iter().any(|w| got == Some(w.as_str())) => {
            problems.push(format!(
                "{at}error.details.field {got:?}, expected one of {wants:?}"
            ));
        }
        Field::Absent if got.is_some() => {
            problems.push(format!(
                "{at}error.details.field {got:?}, expected none (unparseable body)"
            ));
        }
        _ => {}
    }
}

/// Lines of `after` that are not in `before` and the other way round, for a readable report.
fn fingerprint_diff(before: &str, after: &str) -> String {
    let old: std::collections::HashSet<&str> = before.lines().collect();
    let new: std::collections::HashSet<&str> = after.lines().collect();
    let mut out: Vec<String> = Vec::new();
    out.extend(
        before
            .lines()
            .filter(|l| !new.contains(l))
            .take(8)
            .map(|l| format!("    - {l}")),
    );
    out.extend(
        after
            .lines()
            .filter(|l| !old.contains(l))
            .take(8)
            .map(|l| format!("    + {l}")),
    );
    out.join("\n")
}

/// Runs every case, collecting failures; panics at the end with all of them.
async fn run_table(ledger: &Ledger, table: &str, cases: Vec<Case>) {
    assert!(!cases.is_empty(), "table {table} is empty");
    let mut failures = Vec::new();
    let client = fresh_client();
    let mut fingerprint = ledger.db_fingerprint();
    for case in &cases {
        let mut problems = match send(&client, &ledger.base_url, case).await {
            Ok(reply) => check_reply(case, &reply),
            Err(e) => vec![e],
        };
        let after = ledger.db_fingerprint();
        if after != fingerprint {
            problems.push(format!(
                "the database changed:\n{}",
                fingerprint_diff(&fingerprint, &after)
            ));
            fingerprint = after;
        }
        if !problems.is_empty() {
            let method = match case.method {
                Method::Get => "GET",
                Method::Post => "POST",
            };
            let path: String = case.path.chars().take(120).collect();
            failures.push(format!(
                "[{}] {method} {path}:\n  {}",
                case.name,
                problems.join("\n  ")
            ));
        }
    }
    // A new connection: the shared client's may have idled past the server's
    // header_read_timeout during the table, and the server closes such a connection just as
    // it may be reused (hyper's IncompleteMessage), which says nothing about the server.
    let health = fresh_client()
        .get(format!("{}/health", ledger.base_url))
        .send()
        .await;
    if !matches!(&health, Ok(r) if r.status().as_u16() == 200) {
        failures.push(format!("GET /health after the table: {health:?}"));
    }
    assert!(
        failures.is_empty(),
        "table {table}: {} of {} cases failed:\n{}\n--- server log (tail) ---\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        tail(&ledger.server_log(), 4000)
    );
    eprintln!("table {table}: {} cases passed", cases.len());
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        text
    } else {
        &text[text.ceil_char_boundary(text.len() - max)..]
    }
}

// ---------------------------------------------------------------------------------------------
// Valid bodies and mutations
// ---------------------------------------------------------------------------------------------

/// The card the valid bodies use; funded in every ledger of this file.
fn card() -> String {
    uid(1)
}

fn valid_order() -> Value {
    json!({
        "client_request_id": new_id(),
        "terminal_seq": 1000,
        "card_uid": card(),
        "items": [{"product_id": "beer-05", "quantity": 2, "unit_price_cents": 450}],
        "total_cents": 900,
        "staff_id": "s-bar",
        "created_at": now_rfc3339(),
        "mode": "online",
    })
}

fn valid_recharge() -> Value {
    json!({
        "client_request_id": new_id(),
        "terminal_seq": 1000,
        "card_uid": card(),
        "amount_cents": 1000,
        "payment_method": "cash",
        "staff_id": "s-cash",
        "created_at": now_rfc3339(),
        "mode": "online",
    })
}

fn valid_void() -> Value {
    json!({
        "client_request_id": new_id(),
        "terminal_seq": 1000,
        "target_client_request_id": new_id(),
        "staff_id": "s-bar",
        "reason": "customer_refund",
        "created_at": now_rfc3339(),
    })
}

fn valid_shift() -> Value {
    json!({
        "client_request_id": new_id(),
        "staff_id": "s-cash",
        "opened_at": "2026-07-01T18:00:00Z",
        "closed_at": "2026-07-02T02:00:00Z",
        "cash_cents": 42_000,
        "card_cents": 15_000,
        "count": 37,
        "counted_cash_cents": 41_500,
        "first_seq": 1204,
        "last_seq": 1262,
    })
}

fn valid_scan() -> Value {
    json!({
        "card_uid": card(),
        "result": "read_ok",
        "reader": "ACS ACR122U PICC Interface 00 00",
        "scanned_at": now_rfc3339(),
        "terminal_seq": 5,
    })
}

fn valid_scans() -> Value {
    json!({ "scans": [valid_scan()] })
}

/// A change to a valid body.
#[derive(Debug, Clone)]
enum Mutation {
    /// Set the value at the path (creating the key).
    Set(Value),
    /// Remove the key at the path.
    Remove,
    /// Put this literal JSON text at the path (numbers `serde_json::Value` cannot hold).
    Raw(&'static str),
    /// Put these raw bytes inside a JSON string at the path (invalid UTF-8).
    RawBytesInString(&'static [u8]),
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_owned()));
        }
        for index in rest.split('[').filter(|s| !s.is_empty()) {
            segs.push(Seg::Index(index.trim_end_matches(']').parse().unwrap()));
        }
    }
    segs
}

/// Sets (`Some`) or removes (`None`) the value at `segs`.
fn edit(value: &mut Value, segs: &[Seg], new: Option<Value>) {
    match segs {
        [] => {
            if let Some(v) = new {
                *value = v;
            }
        }
        [Seg::Key(k)] => {
            let map = value.as_object_mut().unwrap();
            match new {
                Some(v) => {
                    map.insert(k.clone(), v);
                }
                None => {
                    map.remove(k);
                }
            }
        }
        [Seg::Index(i)] => {
            let list = value.as_array_mut().unwrap();
            match new {
                Some(v) => list[*i] = v,
                None => {
                    list.remove(*i);
                }
            }
        }
        [Seg::Key(k), rest @ ..] => edit(value.get_mut(k.as_str()).unwrap(), rest, new),
        [Seg::Index(i), rest @ ..] => edit(value.get_mut(*i).unwrap(), rest, new),
    }
}

const RAW_MARKER: &str = "@@raw-literal@@";

/// The bytes of `base` with `mutation` applied at `path`.
fn mutate(base: &Value, path: &str, mutation: &Mutation) -> Vec<u8> {
    let mut value = base.clone();
    let segs = parse_path(path);
    match mutation {
        Mutation::Set(v) => edit(&mut value, &segs, Some(v.clone())),
        Mutation::Remove => edit(&mut value, &segs, None),
        Mutation::Raw(_) | Mutation::RawBytesInString(_) => {
            edit(&mut value, &segs, Some(json!(RAW_MARKER)));
        }
    }
    let text = serde_json::to_string(&value).unwrap();
    let quoted = format!("\"{RAW_MARKER}\"");
    match mutation {
        Mutation::Raw(literal) => text.replacen(&quoted, literal, 1).into_bytes(),
        Mutation::RawBytesInString(bytes) => {
            let at = text.find(&quoted).unwrap();
            let mut out = text.as_bytes()[..at + 1].to_vec();
            out.extend_from_slice(bytes);
            out.extend_from_slice(&text.as_bytes()[at + quoted.len() - 1..]);
            out
        }
        _ => text.into_bytes(),
    }
}

/// What a JSON field holds, which decides its bad values.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A UUID string.
    Uuid,
    /// A card UID.
    CardUid,
    /// A staff or product id: 1 to 64 of `[A-Za-z0-9_.-]`.
    Ident,
    /// An RFC 3339 time.
    Time,
    /// One of these strings.
    Enum(&'static [&'static str]),
}

/// A bad value and what it must give.
struct Bad {
    label: String,
    mutation: Mutation,
    expect: Expect,
}

fn bad(label: impl Into<String>, mutation: Mutation, expect: Expect) -> Bad {
    Bad {
        label: label.into(),
        mutation,
        expect,
    }
}

/// The bad values of every field of a kind, each refused with 400 naming `path`
/// (or 413 for a string over the body limit).
fn bad_values(path: &str, kind: Kind, required: bool) -> Vec<Bad> {
    use Mutation::{Raw, RawBytesInString, Remove, Set};
    let here = || invalid_at(path);
    let mut out = Vec::new();
    if required {
        out.push(bad("missing", Remove, here()));
        out.push(bad("null", Set(Value::Null), here()));
    }
    out.push(bad("array", Set(json!([1])), here()));
    out.push(bad("object", Set(json!({"value": 1})), here()));
    out.push(bad("bool", Set(json!(true)), here()));
    match kind {
        Kind::Int { min, max } => {
            out.push(bad("string digits", Set(json!("450")), here()));
            out.push(bad("empty string", Set(json!("")), here()));
            out.push(bad("float 450.0", Raw("450.0"), here()));
            out.push(bad("float 4.5", Raw("4.5"), here()));
            out.push(bad("exponent 4.5e2", Raw("4.5e2"), here()));
            out.push(bad("exponent 1E2", Raw("1E2"), here()));
            out.push(bad("2^63 (past i64)", Raw("9223372036854775808"), here()));
            out.push(bad("2^64 (past u64)", Raw("18446744073709551616"), here()));
            out.push(bad("1e23 digits", Raw("99999999999999999999999"), here()));
            out.push(bad("-2^63-1", Raw("-9223372036854775809"), here()));
            out.push(bad("1e400", Raw("1e400"), invalid(Field::Any)));
            out.push(bad("i64::MIN", Set(json!(i64::MIN)), here()));
            if min > 0 {
                out.push(bad("zero", Set(json!(0)), here()));
            }
            if min > -1 {
                out.push(bad("negative", Set(json!(-1)), here()));
            }
            out.push(bad(
                format!("below min ({})", min - 1),
                Set(json!(min - 1)),
                here(),
            ));
            if max < i64::MAX {
                out.push(bad(
                    format!("above max ({})", max + 1),
                    Set(json!(max + 1)),
                    here(),
                ));
                out.push(bad("i64::MAX", Set(json!(i64::MAX)), here()));
            }
        }
        Kind::Uuid => {
            out.push(bad("number", Set(json!(12345)), here()));
            out.push(bad("empty", Set(json!("")), here()));
            out.push(bad("not a uuid", Set(json!("not-a-uuid")), here()));
            out.push(bad(
                "one digit short",
                Set(json!("550e8400-e29b-41d4-a716-44665544000")),
                here(),
            ));
            out.push(bad(
                "non-hex",
                Set(json!("550e8400-e29b-41d4-a716-44665544zzzz")),
                here(),
            ));
            out.push(bad("SQL", Set(json!(SQL)), here()));
            out.push(bad(
                "10 KB",
                Set(json!("a".repeat(LONG_STRING_LEN))),
                here(),
            ));
        }
        Kind::CardUid => {
            out.push(bad("number", Set(json!(4_161_178_339_u64)), here()));
            out.push(bad("empty", Set(json!("")), here()));
            out.push(bad("lowercase", Set(json!("04a1b2c3d4e5f6")), here()));
            out.push(bad("odd length 7", Set(json!("04A1B2C")), here()));
            out.push(bad("odd length 13", Set(json!("04A1B2C3D4E5F")), here()));
            out.push(bad(
                "length 12 (6 bytes)",
                Set(json!("04A1B2C3D4E5")),
                here(),
            ));
            out.push(bad(
                "length 16 (8 bytes)",
                Set(json!("04A1B2C3D4E5F607")),
                here(),
            ));
            out.push(bad(
                "length 22",
                Set(json!("04A1B2C3D4E5F60718AB0C")),
                here(),
            ));
            out.push(bad("non-hex G", Set(json!("04A1B2C3D4E5FG")), here()));
            out.push(bad("0x prefix", Set(json!("0x04A1B2C3")), here()));
            out.push(bad("leading space", Set(json!(" 04A1B2C3D4E5F")), here()));
            out.push(bad("colons", Set(json!("04:A1:B2:C3")), here()));
            out.push(bad(
                "fullwidth digit",
                Set(json!("04A1B2C\u{FF13}")),
                here(),
            ));
            out.push(bad("SQL", Set(json!(SQL)), here()));
            out.push(bad(
                "10 KB",
                Set(json!("A".repeat(LONG_STRING_LEN))),
                here(),
            ));
            out.push(bad(
                "invalid UTF-8",
                RawBytesInString(b"04A1\xff\xfeC3"),
                invalid(Field::Any),
            ));
        }
        Kind::Ident => {
            out.push(bad("number", Set(json!(17)), here()));
            out.push(bad("empty", Set(json!("")), here()));
            out.push(bad("65 chars", Set(json!("x".repeat(65))), here()));
            out.push(bad("space", Set(json!("s bar")), here()));
            out.push(bad("slash", Set(json!("s/bar")), here()));
            out.push(bad("non-ASCII", Set(json!("bière")), here()));
            out.push(bad("newline", Set(json!("s-bar\n")), here()));
            out.push(bad("NUL", Set(json!("s-bar\u{0}")), here()));
            out.push(bad("SQL", Set(json!(SQL)), here()));
            out.push(bad("SQL quote", Set(json!("s-bar' OR '1'='1")), here()));
            out.push(bad(
                "10 KB",
                Set(json!("x".repeat(LONG_STRING_LEN))),
                here(),
            ));
            out.push(bad(
                "invalid UTF-8",
                RawBytesInString(b"s-\xc3\x28bar"),
                invalid(Field::Any),
            ));
        }
        Kind::Time => {
            out.push(bad("unix seconds", Set(json!(1_782_940_443)), here()));
            out.push(bad("empty", Set(json!("")), here()));
            out.push(bad("words", Set(json!("yesterday")), here()));
            out.push(bad("date only", Set(json!("2026-07-01")), here()));
            out.push(bad("no offset", Set(json!("2026-07-01T21:14:03")), here()));
            out.push(bad("month 13", Set(json!("2026-13-01T21:14:03Z")), here()));
            out.push(bad(
                "February 30",
                Set(json!("2026-02-30T21:14:03Z")),
                here(),
            ));
            out.push(bad("hour 25", Set(json!("2026-07-01T25:14:03Z")), here()));
            out.push(bad(
                "offset +25:00",
                Set(json!("2026-07-01T21:14:03+25:00")),
                here(),
            ));
            out.push(bad("US format", Set(json!("07/01/2026 21:14")), here()));
            out.push(bad("SQL", Set(json!(SQL)), here()));
            out.push(bad(
                "10 KB",
                Set(json!("2".repeat(LONG_STRING_LEN))),
                here(),
            ));
        }
        Kind::Enum(values) => {
            out.push(bad("number", Set(json!(1)), here()));
            out.push(bad("empty", Set(json!("")), here()));
            out.push(bad(
                "uppercase",
                Set(json!(values[0].to_uppercase())),
                here(),
            ));
            out.push(bad("padded", Set(json!(format!(" {}", values[0]))), here()));
            out.push(bad("unknown", Set(json!("bogus")), here()));
            out.push(bad("in an array", Set(json!([values[0]])), here()));
            out.push(bad("SQL", Set(json!(SQL)), here()));
            out.push(bad(
                "10 KB",
                Set(json!("o".repeat(LONG_STRING_LEN))),
                here(),
            ));
        }
    }
    if !matches!(kind, Kind::Int { .. }) {
        out.push(bad(
            "1 MB string",
            Set(json!("A".repeat(HUGE_STRING_LEN))),
            too_large(),
        ));
    }
    out
}

/// Bad values for each `(path, kind, required)` of an endpoint, as cases on the endpoint and
/// (for money operations) the same bodies as the only operation of a batch.
struct Endpoint<'a> {
    /// `order`, `recharge`, `void`, `scans`.
    name: &'static str,
    path: &'static str,
    auth: Option<String>,
    /// A fresh valid body.
    valid: &'a dyn Fn() -> Value,
}

impl Endpoint<'_> {
    fn field_cases(&self, fields: &[(&str, Kind, bool)]) -> Vec<Case> {
        let mut cases = Vec::new();
        for (path, kind, required) in fields {
            for b in bad_values(path, *kind, *required) {
                let body = mutate(&(self.valid)(), path, &b.mutation);
                cases.push(Case::post(
                    format!("{} {path}: {}", self.name, b.label),
                    self.path,
                    self.auth.clone(),
                    body,
                    b.expect,
                ));
            }
        }
        cases
    }

    /// Mutations at `path` with hand-written expectations.
    fn case(&self, label: &str, path: &str, mutation: Mutation, expect: Expect) -> Case {
        Case::post(
            format!("{} {path}: {label}", self.name),
            self.path,
            self.auth.clone(),
            mutate(&(self.valid)(), path, &mutation),
            expect,
        )
    }

    /// Whole bodies that are not the endpoint's JSON at all.
    fn shape_cases(&self) -> Vec<Case> {
        let valid = serde_json::to_vec(&(self.valid)()).unwrap();
        let mut two = valid.clone();
        two.extend_from_slice(&valid);
        let mut trailing = valid.clone();
        trailing.extend_from_slice(b" x");
        let mut bad_utf8_prefix = b"\xff\xfe".to_vec();
        bad_utf8_prefix.extend_from_slice(&valid);
        let truncated = valid[..valid.len() / 2].to_vec();
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes();
        let mut deep_in_field = (self.valid)();
        deep_in_field
            .as_object_mut()
            .unwrap()
            .insert("deep".into(), json!(RAW_MARKER));
        let deep_in_field = serde_json::to_string(&deep_in_field)
            .unwrap()
            .replacen(
                &format!("\"{RAW_MARKER}\""),
                &format!("{}{}", "[".repeat(3000), "]".repeat(3000)),
                1,
            )
            .into_bytes();
        let bodies: Vec<(&str, Vec<u8>, Field)> = vec![
            ("empty body", Vec::new(), Field::Absent),
            ("not JSON", b"not json".to_vec(), Field::Absent),
            ("truncated JSON", truncated, Field::Absent),
            ("JSON null", b"null".to_vec(), Field::Any),
            ("JSON array", b"[]".to_vec(), Field::Any),
            ("JSON number", b"42".to_vec(), Field::Any),
            ("JSON string", b"\"order\"".to_vec(), Field::Any),
            ("empty object", b"{}".to_vec(), Field::Any),
            ("two objects", two, Field::Any),
            ("trailing garbage", trailing, Field::Any),
            (
                "invalid UTF-8 before the JSON",
                bad_utf8_prefix,
                Field::Absent,
            ),
            ("5000 nested arrays", deep, Field::Any),
            (
                "3000 nested arrays in an unknown field",
                deep_in_field,
                Field::Any,
            ),
        ];
        bodies
            .into_iter()
            .map(|(label, body, field)| {
                Case::post(
                    format!("{}: {label}", self.name),
                    self.path,
                    self.auth.clone(),
                    body,
                    invalid(field),
                )
            })
            .collect()
    }

    /// Unknown and duplicated fields.
    fn unknown_field_cases(&self, nested: Option<&str>) -> Vec<Case> {
        let mut cases = vec![
            self.case(
                "unknown field",
                "foo",
                Mutation::Set(json!(1)),
                invalid_at("foo"),
            ),
            self.case(
                "unknown field (SQL name)",
                SQL,
                Mutation::Set(json!(1)),
                invalid(Field::Any),
            ),
        ];
        if let Some(prefix) = nested {
            cases.push(self.case(
                "unknown nested field",
                &format!("{prefix}.foo"),
                Mutation::Set(json!(1)),
                invalid_at(&format!("{prefix}.foo")),
            ));
        }
        // A duplicated key: which spelling wins must not be left to chance.
        let text = serde_json::to_string(&(self.valid)()).unwrap();
        let (key, value) = if self.name == "scans" {
            ("scans", "[]")
        } else {
            ("staff_id", "\"s-super\"")
        };
        cases.push(Case::post(
            format!("{}: duplicated key {key}", self.name),
            self.path,
            self.auth.clone(),
            format!("{{\"{key}\":{value},{}", &text[1..]).into_bytes(),
            invalid(Field::Any),
        ));
        cases
    }

    /// The authentication cases of an endpoint.
    fn auth_cases(&self, ledger: &Ledger, wrong_kind: Option<&str>) -> Vec<Case> {
        let body = serde_json::to_vec(&(self.valid)()).unwrap();
        let token = &ledger.bar_token;
        let headers: Vec<(&str, Option<String>)> = vec![
            ("no Authorization", None),
            ("garbage token", Some("Bearer garbage".into())),
            ("Bearer with empty token", Some("Bearer ".into())),
            ("Bearer alone", Some("Bearer".into())),
            ("Basic scheme", Some("Basic Zm9vOmJhcg==".into())),
            ("token without scheme", Some(token.clone())),
            ("token plus a character", Some(format!("Bearer {token}x"))),
            (
                "token minus a character",
                Some(format!("Bearer {}", &token[..token.len() - 1])),
            ),
            (
                "well-formed unknown token",
                Some(format!("Bearer clt_{}", "0".repeat(64))),
            ),
            ("SQL token", Some(format!("Bearer {SQL}"))),
            ("SQL always-true token", Some("Bearer ' OR '1'='1".into())),
            (
                "10 KB token",
                Some(format!("Bearer {}", "a".repeat(LONG_STRING_LEN))),
            ),
        ];
        let mut cases: Vec<Case> = headers
            .into_iter()
            .map(|(label, auth)| {
                Case::post(
                    format!("{} auth: {label}", self.name),
                    self.path,
                    auth,
                    body.clone(),
                    unauthorized(),
                )
            })
            .collect();
        cases.push(Case::post(
            format!("{} auth: none, with an invalid body", self.name),
            self.path,
            None,
            b"not json".to_vec(),
            unauthorized(),
        ));
        if let Some(other) = wrong_kind {
            cases.push(Case::post(
                format!("{} auth: valid token of the wrong terminal kind", self.name),
                self.path,
                bearer(other),
                body.clone(),
                forbidden(),
            ));
            cases.push(Case::post(
                format!(
                    "{} auth: wrong terminal kind, with an invalid body",
                    self.name
                ),
                self.path,
                bearer(other),
                b"not json".to_vec(),
                forbidden(),
            ));
        }
        cases
    }

    /// Bodies over the limit: padded with whitespace, a huge field, chunked.
    fn size_cases(&self, limit: usize) -> Vec<Case> {
        let valid = serde_json::to_vec(&(self.valid)()).unwrap();
        vec![
            Case::post(
                format!("{}: body of limit + 1 bytes (whitespace)", self.name),
                self.path,
                self.auth.clone(),
                pad_to(&valid, limit + 1),
                too_large(),
            ),
            Case::post(
                format!("{}: 4 MiB body", self.name),
                self.path,
                self.auth.clone(),
                pad_to(&valid, 4 * 1024 * 1024),
                too_large(),
            ),
            Case::post(
                format!(
                    "{}: limit + 1 bytes, chunked (no Content-Length)",
                    self.name
                ),
                self.path,
                self.auth.clone(),
                pad_to(&valid, limit + 1),
                too_large(),
            )
            .chunked(),
        ]
    }

    /// Idempotency-Key header that differs from the body's key.
    fn idempotency_header_cases(&self) -> Vec<Case> {
        let body = serde_json::to_vec(&(self.valid)()).unwrap();
        vec![
            Case::post(
                format!(
                    "{}: Idempotency-Key differs from client_request_id",
                    self.name
                ),
                self.path,
                self.auth.clone(),
                body.clone(),
                invalid_at("Idempotency-Key"),
            )
            .header("idempotency-key", &new_id()),
            Case::post(
                format!("{}: Idempotency-Key is not a UUID", self.name),
                self.path,
                self.auth.clone(),
                body,
                invalid_at("Idempotency-Key"),
            )
            .header("idempotency-key", "garbage"),
        ]
    }
}

/// `json` with spaces inserted before its last byte (`}`) up to exactly `len` bytes.
fn pad_to(json: &[u8], len: usize) -> Vec<u8> {
    assert!(json.len() <= len && json.last() == Some(&b'}'));
    let mut out = json[..json.len() - 1].to_vec();
    out.resize(len - 1, b' ');
    out.push(b'}');
    out
}

/// Every operation of `cases` (JSON object bodies sent alone to a money endpoint) again as
/// the only operation of a batch: the result must be the same error as posted alone.
fn as_batch_cases(cases: &[Case], op_type: &str) -> Vec<Case> {
    let mut out = Vec::new();
    for case in cases {
        let Expect::Error {
            status,
            code,
            field,
        } = &case.expect
        else {
            continue;
        };
        if matches!(*status, 401 | 413)
            || !case.headers.is_empty()
            || case.framing != Framing::Length
        {
            continue;
        }
        // Only bodies that are JSON objects can carry a `type`.
        let Some(text) = std::str::from_utf8(&case.body).ok().map(str::trim) else {
            continue;
        };
        if !text.starts_with('{')
            || serde_json::from_str::<Value>(text)
                .map(|v| !v.is_object())
                .unwrap_or(true)
        {
            continue;
        }
        let original: Value = serde_json::from_str(text).unwrap();
        // The result names the operation when its client_request_id is a readable UUID.
        let crid = original
            .get("client_request_id")
            .and_then(Value::as_str)
            .filter(|s| uuid::Uuid::parse_str(s).is_ok() && s.len() == 36)
            .map(|s| json!(s));
        let rest = text[1..].trim_start();
        let separator = if rest.starts_with('}') { "" } else { "," };
        let body = format!("{{\"operations\":[{{\"type\":\"{op_type}\"{separator}{rest}]}}");
        out.push(Case::post(
            format!("batch of one: {}", case.name),
            "/v1/batch",
            case.auth.clone(),
            body.into_bytes(),
            Expect::BatchItem {
                count: 1,
                index: 0,
                status: *status,
                code,
                field: field.in_batch(0),
                client_request_id: crid,
            },
        ));
    }
    out
}

/// Funds the card of the valid bodies, and returns the ledger.
async fn ledger(backend: Backend) -> Ledger {
    let ledger = Ledger::start_on(backend).await;
    ledger.fund(&card(), 20_000).await;
    ledger
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

const ORDER_FIELDS: &[(&str, Kind, bool)] = &[
    ("client_request_id", Kind::Uuid, true),
    (
        "terminal_seq",
        Kind::Int {
            min: 1,
            max: i64::MAX,
        },
        true,
    ),
    ("card_uid", Kind::CardUid, true),
    ("items[0].product_id", Kind::Ident, true),
    ("items[0].quantity", Kind::Int { min: 1, max: 99 }, true),
    (
        "items[0].unit_price_cents",
        Kind::Int {
            min: 0,
            max: 1_000_000,
        },
        true,
    ),
    (
        "total_cents",
        Kind::Int {
            min: 1,
            max: 100_000_000,
        },
        true,
    ),
    ("staff_id", Kind::Ident, true),
    ("created_at", Kind::Time, true),
    ("mode", Kind::Enum(&["online", "offline"]), true),
];

fn order_endpoint(ledger: &Ledger) -> Endpoint<'static> {
    Endpoint {
        name: "order",
        path: "/v1/orders",
        auth: bearer(&ledger.bar_token),
        valid: &valid_order,
    }
}

/// Order bodies with hand-written expectations: items, totals, overflow.
fn order_special_cases(ledger: &Ledger) -> Vec<Case> {
    let ep = order_endpoint(ledger);
    let line =
        |q: i64, p: i64| json!({"product_id": "beer-05", "quantity": q, "unit_price_cents": p});
    let with = |items: Value, total: Value| {
        let mut body = valid_order();
        body["items"] = items;
        body["total_cents"] = total;
        serde_json::to_vec(&body).unwrap()
    };
    let post = |label: &str, body: Vec<u8>, expect: Expect| {
        Case::post(
            format!("order: {label}"),
            "/v1/orders",
            ep.auth.clone(),
            body,
            expect,
        )
    };
    let half_past_max = i64::MAX / 2 + 1;
    let cases = vec![
        post(
            "items empty",
            with(json!([]), json!(900)),
            invalid_at("items"),
        ),
        post(
            "51 items",
            with(
                Value::Array((0..51).map(|_| line(1, 450)).collect()),
                json!(51 * 450),
            ),
            invalid_at("items"),
        ),
        post(
            "items is an object",
            with(line(2, 450), json!(900)),
            invalid_at("items"),
        ),
        post(
            "items is a string",
            with(json!("beer-05"), json!(900)),
            invalid_at("items"),
        ),
        post(
            "items[0] is a string",
            with(json!(["beer-05"]), json!(900)),
            invalid_at("items[0]"),
        ),
        post(
            "items[0] is null",
            with(json!([null]), json!(900)),
            invalid_at("items[0]"),
        ),
        post(
            "items[1] quantity 100",
            with(json!([line(1, 450), line(100, 450)]), json!(45_450)),
            invalid_at("items[1].quantity"),
        ),
        post(
            "quantity 100",
            with(json!([line(100, 1)]), json!(100)),
            invalid_at("items[0].quantity"),
        ),
        post(
            "total one cent short",
            with(json!([line(2, 450)]), json!(899)),
            invalid_at("total_cents"),
        ),
        post(
            "total one cent over",
            with(json!([line(2, 450)]), json!(901)),
            invalid_at("total_cents"),
        ),
        post(
            "total of one line only",
            with(json!([line(2, 450), line(1, 200)]), json!(900)),
            invalid_at("total_cents"),
        ),
        post(
            "total negative of the sum",
            with(json!([line(2, 450)]), json!(-900)),
            invalid_at("total_cents"),
        ),
        post(
            "free items, total 0",
            with(
                json!([{"product_id": "water", "quantity": 1, "unit_price_cents": 0}]),
                json!(0),
            ),
            invalid_at("total_cents"),
        ),
        post(
            "line overflow: quantity 99 x i64::MAX price",
            with(json!([line(99, i64::MAX)]), json!(i64::MAX)),
            invalid(Field::OneOf(vec![
                "items[0].unit_price_cents".into(),
                "total_cents".into(),
            ])),
        ),
        post(
            "total overflow: two lines of i64::MAX/2+1",
            with(
                json!([line(1, half_past_max), line(1, half_past_max)]),
                json!(i64::MAX),
            ),
            invalid(Field::OneOf(vec![
                "items[0].unit_price_cents".into(),
                "total_cents".into(),
            ])),
        ),
        post(
            "largest lines: 50 x 99 x 1,000,000 exceeds the total range",
            with(
                Value::Array((0..50).map(|_| line(99, 1_000_000)).collect()),
                json!(4_950_000_000_i64),
            ),
            invalid_at("total_cents"),
        ),
        post(
            "negative price compensated by another line",
            with(json!([line(1, 1000), line(1, -100)]), json!(900)),
            invalid_at("items[1].unit_price_cents"),
        ),
        post(
            "negative quantity compensated by another line",
            with(json!([line(3, 450), line(-1, 450)]), json!(900)),
            invalid_at("items[1].quantity"),
        ),
    ];
    cases
}

async fn orders_refuse_bad_input_and_change_nothing(backend: Backend) {
    let ledger = ledger(backend).await;
    let ep = order_endpoint(&ledger);
    let mut cases = ep.field_cases(ORDER_FIELDS);
    cases.extend(order_special_cases(&ledger));
    cases.extend(ep.shape_cases());
    cases.extend(ep.unknown_field_cases(Some("items[0]")));
    cases.extend(ep.idempotency_header_cases());
    // Staff who may not sell: not stored, nothing changes.
    for (label, staff, mode) in [
        ("unknown staff", "nobody", "online"),
        ("unknown staff, offline", "nobody", "offline"),
        ("cashier may not sell", "s-cash", "online"),
    ] {
        let mut body = valid_order();
        body["staff_id"] = json!(staff);
        body["mode"] = json!(mode);
        cases.push(Case::post(
            format!("order: {label}"),
            "/v1/orders",
            ep.auth.clone(),
            serde_json::to_vec(&body).unwrap(),
            forbidden(),
        ));
    }
    let batch = as_batch_cases(&cases, "order");
    cases.extend(batch);
    run_table(&ledger, "orders", cases).await;
}

const RECHARGE_FIELDS: &[(&str, Kind, bool)] = &[
    ("client_request_id", Kind::Uuid, true),
    (
        "terminal_seq",
        Kind::Int {
            min: 1,
            max: i64::MAX,
        },
        true,
    ),
    ("card_uid", Kind::CardUid, true),
    (
        "amount_cents",
        Kind::Int {
            min: 1,
            max: 10_000_000,
        },
        true,
    ),
    ("payment_method", Kind::Enum(&["cash", "card"]), true),
    ("staff_id", Kind::Ident, true),
    ("created_at", Kind::Time, true),
    ("mode", Kind::Enum(&["online", "offline"]), true),
];

async fn recharges_refuse_bad_input_and_change_nothing(backend: Backend) {
    let ledger = ledger(backend).await;
    let ep = Endpoint {
        name: "recharge",
        path: "/v1/recharges",
        auth: bearer(&ledger.checkpoint_token),
        valid: &valid_recharge,
    };
    let mut cases = ep.field_cases(RECHARGE_FIELDS);
    cases.extend(ep.shape_cases());
    cases.extend(ep.unknown_field_cases(None));
    cases.extend(ep.idempotency_header_cases());
    for (label, staff) in [
        ("unknown staff", "nobody"),
        ("bar staff may not top up", "s-bar"),
    ] {
        let mut body = valid_recharge();
        body["staff_id"] = json!(staff);
        cases.push(Case::post(
            format!("recharge: {label}"),
            ep.path,
            ep.auth.clone(),
            serde_json::to_vec(&body).unwrap(),
            forbidden(),
        ));
    }
    let batch = as_batch_cases(&cases, "recharge");
    cases.extend(batch);
    run_table(&ledger, "recharges", cases).await;
}

const VOID_FIELDS: &[(&str, Kind, bool)] = &[
    ("client_request_id", Kind::Uuid, true),
    (
        "terminal_seq",
        Kind::Int {
            min: 1,
            max: i64::MAX,
        },
        true,
    ),
    ("target_client_request_id", Kind::Uuid, true),
    ("staff_id", Kind::Ident, true),
    (
        "reason",
        Kind::Enum(&["in_doubt", "customer_refund", "staff_error"]),
        true,
    ),
    ("created_at", Kind::Time, true),
];

async fn voids_refuse_bad_input_and_change_nothing(backend: Backend) {
    let ledger = ledger(backend).await;
    // Setup, before the fingerprint: an order of bar-1 and a void (a tombstone).
    let order = common::order_body(
        &card(),
        ledger.seq(&ledger.bar_token),
        &[("beer-05", 1, 450)],
        "online",
    );
    ledger
        .post("/v1/orders", &ledger.bar_token, &order)
        .await
        .assert_status(201);
    let tombstone = common::void_body(
        &new_id(),
        ledger.seq(&ledger.bar_token),
        "in_doubt",
        "s-bar",
    );
    ledger
        .post("/v1/voids", &ledger.bar_token, &tombstone)
        .await
        .assert_status(201);

    let ep = Endpoint {
        name: "void",
        path: "/v1/voids",
        auth: bearer(&ledger.bar_token),
        valid: &valid_void,
    };
    let mut cases = ep.field_cases(VOID_FIELDS);
    cases.extend(ep.shape_cases());
    cases.extend(ep.unknown_field_cases(None));
    cases.extend(ep.idempotency_header_cases());
    let post_void = |label: &str, auth: Option<String>, body: Value, expect: Expect| {
        Case::post(
            format!("void: {label}"),
            "/v1/voids",
            auth,
            serde_json::to_vec(&body).unwrap(),
            expect,
        )
    };
    let mut own_target = valid_void();
    own_target["target_client_request_id"] = own_target["client_request_id"].clone();
    cases.push(post_void(
        "targets itself",
        ep.auth.clone(),
        own_target,
        invalid_at("target_client_request_id"),
    ));
    let mut void_of_void = valid_void();
    void_of_void["target_client_request_id"] = tombstone["client_request_id"].clone();
    cases.push(post_void(
        "void of a void",
        ep.auth.clone(),
        void_of_void,
        invalid_at("target_client_request_id"),
    ));
    let mut foreign = valid_void();
    foreign["target_client_request_id"] = order["client_request_id"].clone();
    cases.push(post_void(
        "another terminal's operation (bar-2)",
        bearer(&ledger.bar2_token),
        foreign.clone(),
        forbidden(),
    ));
    cases.push(post_void(
        "another terminal's operation (cp-1)",
        bearer(&ledger.checkpoint_token),
        foreign,
        forbidden(),
    ));
    let mut unknown_staff = valid_void();
    unknown_staff["staff_id"] = json!("nobody");
    cases.push(post_void(
        "unknown staff",
        ep.auth.clone(),
        unknown_staff,
        forbidden(),
    ));
    let batch = as_batch_cases(&cases, "void");
    cases.extend(batch);
    run_table(&ledger, "voids", cases).await;
}

/// The sanity bounds of a shift close-out (`SHIFT_TOTAL_CENTS_MAX`, `SHIFT_COUNT_MAX`).
const SHIFT_CENTS_MAX: i64 = 1_000_000_000;
const SHIFT_COUNT_MAX: i64 = 1_000_000;

const SHIFT_FIELDS: &[(&str, Kind, bool)] = &[
    ("client_request_id", Kind::Uuid, true),
    ("staff_id", Kind::Ident, true),
    ("opened_at", Kind::Time, true),
    ("closed_at", Kind::Time, true),
    (
        "cash_cents",
        Kind::Int {
            min: 0,
            max: SHIFT_CENTS_MAX,
        },
        true,
    ),
    (
        "card_cents",
        Kind::Int {
            min: 0,
            max: SHIFT_CENTS_MAX,
        },
        true,
    ),
    (
        "count",
        Kind::Int {
            min: 0,
            max: SHIFT_COUNT_MAX,
        },
        true,
    ),
    (
        "counted_cash_cents",
        Kind::Int {
            min: 0,
            max: SHIFT_CENTS_MAX,
        },
        true,
    ),
    // Optional, but only together (cases in `shifts_refuse_bad_input_and_change_nothing`).
    (
        "first_seq",
        Kind::Int {
            min: 1,
            max: i64::MAX,
        },
        false,
    ),
    (
        "last_seq",
        Kind::Int {
            min: 1,
            max: i64::MAX,
        },
        false,
    ),
];

fn shift_endpoint(ledger: &Ledger) -> Endpoint<'static> {
    Endpoint {
        name: "shift",
        path: "/v1/shifts",
        auth: bearer(&ledger.checkpoint_token),
        valid: &valid_shift,
    }
}

async fn shifts_refuse_bad_input_and_change_nothing(backend: Backend) {
    let ledger = ledger(backend).await;
    let ep = shift_endpoint(&ledger);
    let mut cases = ep.field_cases(SHIFT_FIELDS);
    cases.extend(ep.shape_cases());
    cases.extend(ep.unknown_field_cases(None));
    cases.extend(ep.idempotency_header_cases());
    cases.extend(ep.auth_cases(&ledger, None));
    cases.extend(ep.size_cases(BODY_LIMIT));
    for (label, opened, closed) in [
        (
            "closed a second before it opened",
            "2026-07-02T02:00:00Z",
            "2026-07-02T01:59:59Z",
        ),
        (
            "closed a millisecond before it opened",
            "2026-07-01T18:00:00.001Z",
            "2026-07-01T18:00:00Z",
        ),
        (
            "closed before it opened, other offsets",
            "2026-07-01T20:00:00+02:00",
            "2026-07-01T17:59:59Z",
        ),
    ] {
        let mut body = valid_shift();
        body["opened_at"] = json!(opened);
        body["closed_at"] = json!(closed);
        cases.push(Case::post(
            format!("shift: {label}"),
            ep.path,
            ep.auth.clone(),
            serde_json::to_vec(&body).unwrap(),
            invalid_at("closed_at"),
        ));
    }
    for (label, field) in [
        ("terminal_seq (orders only)", "terminal_seq"),
        (
            "difference_cents (the ledger computes it)",
            "difference_cents",
        ),
        ("mode (orders only)", "mode"),
    ] {
        cases.push(ep.case(
            &format!("unknown field {label}"),
            field,
            Mutation::Set(json!(1)),
            invalid_at(field),
        ));
    }
    // first_seq and last_seq: both or neither, in order.
    for (label, path, mutation, field) in [
        (
            "without first_seq",
            "first_seq",
            Mutation::Remove,
            "first_seq",
        ),
        (
            "first_seq null",
            "first_seq",
            Mutation::Set(Value::Null),
            "first_seq",
        ),
        ("without last_seq", "last_seq", Mutation::Remove, "last_seq"),
        (
            "last_seq null",
            "last_seq",
            Mutation::Set(Value::Null),
            "last_seq",
        ),
        (
            "above last_seq",
            "first_seq",
            Mutation::Set(json!(1263)),
            "last_seq",
        ),
        (
            "below first_seq",
            "last_seq",
            Mutation::Set(json!(1203)),
            "last_seq",
        ),
        (
            "i64::MAX above last_seq",
            "first_seq",
            Mutation::Set(json!(i64::MAX)),
            "last_seq",
        ),
    ] {
        cases.push(ep.case(label, path, mutation, invalid_at(field)));
    }
    let mut unknown_staff = valid_shift();
    unknown_staff["staff_id"] = json!("nobody");
    cases.push(Case::post(
        "shift: unknown staff",
        ep.path,
        ep.auth.clone(),
        serde_json::to_vec(&unknown_staff).unwrap(),
        forbidden(),
    ));
    // A close-out is not a batch operation.
    let mut in_batch = valid_shift();
    in_batch["type"] = json!("shift");
    let in_batch_crid = in_batch["client_request_id"].clone();
    cases.push(Case::post(
        "shift: inside a batch",
        "/v1/batch",
        ep.auth.clone(),
        serde_json::to_vec(&json!({ "operations": [in_batch] })).unwrap(),
        Expect::BatchItem {
            count: 1,
            index: 0,
            status: 400,
            code: "INVALID_REQUEST",
            field: Field::OneOf(vec!["type".into(), "operations[0].type".into()]),
            client_request_id: Some(in_batch_crid),
        },
    ));
    run_table(&ledger, "shifts", cases).await;
}

async fn batches_refuse_bad_input_and_change_nothing(backend: Backend) {
    let ledger = ledger(backend).await;
    let auth = bearer(&ledger.bar_token);
    let op = |t: &str, body: Value| {
        let mut op = body;
        op.as_object_mut().unwrap().insert("type".into(), json!(t));
        op
    };
    let post = |label: &str, body: Value, expect: Expect| {
        Case::post(
            format!("batch: {label}"),
            "/v1/batch",
            auth.clone(),
            serde_json::to_vec(&body).unwrap(),
            expect,
        )
    };
    let item =
        |status: u16, code: &'static str, field: Field, crid: Option<Value>| Expect::BatchItem {
            count: 1,
            index: 0,
            status,
            code,
            field,
            client_request_id: crid,
        };
    let bad_uid_op = || {
        let mut o = op("order", valid_order());
        o["card_uid"] = json!("04a1b2c3");
        o
    };
    let order_op = op("order", valid_order());
    let no_type = valid_order();
    let recharge_op = op("recharge", valid_recharge());
    let mut cases = vec![
        post("operations missing", json!({}), invalid_at("operations")),
        post(
            "operations null",
            json!({"operations": null}),
            invalid_at("operations"),
        ),
        post(
            "operations a string",
            json!({"operations": "order"}),
            invalid_at("operations"),
        ),
        post(
            "operations an object",
            json!({"operations": order_op.clone()}),
            invalid_at("operations"),
        ),
        post(
            "operations empty",
            json!({"operations": []}),
            invalid_at("operations"),
        ),
        post(
            "501 operations",
            json!({"operations": (0..501).map(|_| bad_uid_op()).collect::<Vec<_>>()}),
            invalid_at("operations"),
        ),
        post(
            "unknown top-level field",
            json!({"operations": [bad_uid_op()], "foo": 1}),
            invalid_at("foo"),
        ),
        post(
            "top level is an array",
            json!([order_op.clone()]),
            invalid(Field::Any),
        ),
        post(
            "operation is a number",
            json!({"operations": [42]}),
            item(400, "INVALID_REQUEST", Field::Any, Some(Value::Null)),
        ),
        post(
            "operation is null",
            json!({"operations": [null]}),
            item(400, "INVALID_REQUEST", Field::Any, Some(Value::Null)),
        ),
        post(
            "operation without type",
            json!({"operations": [no_type.clone()]}),
            item(
                400,
                "INVALID_REQUEST",
                Field::OneOf(vec!["type".into(), "operations[0].type".into()]),
                None,
            ),
        ),
        post(
            "operation type unknown",
            json!({"operations": [op("refund", valid_order())]}),
            item(
                400,
                "INVALID_REQUEST",
                Field::OneOf(vec!["type".into(), "operations[0].type".into()]),
                None,
            ),
        ),
        post(
            "operation type uppercase",
            json!({"operations": [op("ORDER", valid_order())]}),
            item(
                400,
                "INVALID_REQUEST",
                Field::OneOf(vec!["type".into(), "operations[0].type".into()]),
                None,
            ),
        ),
        post(
            "operation type a number",
            json!({"operations": [{"type": 1}]}),
            item(400, "INVALID_REQUEST", Field::Any, Some(Value::Null)),
        ),
        post(
            "order fields under type recharge",
            json!({"operations": [op("recharge", valid_order())]}),
            item(400, "INVALID_REQUEST", Field::Any, None),
        ),
        post(
            "top-up from a bar terminal",
            json!({"operations": [recharge_op.clone()]}),
            item(
                403,
                "FORBIDDEN",
                Field::Any,
                Some(recharge_op["client_request_id"].clone()),
            ),
        ),
        Case::post(
            "batch: order from a checkpoint terminal",
            "/v1/batch",
            bearer(&ledger.checkpoint_token),
            serde_json::to_vec(&json!({"operations": [order_op.clone()]})).unwrap(),
            item(
                403,
                "FORBIDDEN",
                Field::Any,
                Some(order_op["client_request_id"].clone()),
            ),
        ),
        post(
            "three bad operations",
            json!({"operations": [bad_uid_op(), bad_uid_op(), bad_uid_op()]}),
            Expect::BatchAllInvalid { count: 3 },
        ),
    ];
    // 500 invalid operations: over 64 KiB, under 1 MiB, so the batch limit applies, not the
    // per-request one.
    let five_hundred = json!({"operations": (0..500).map(|_| bad_uid_op()).collect::<Vec<_>>()});
    let bytes = serde_json::to_vec(&five_hundred).unwrap();
    assert!(bytes.len() > BODY_LIMIT && bytes.len() < BATCH_BODY_LIMIT);
    cases.push(Case::post(
        "batch: 500 invalid operations (> 64 KiB)",
        "/v1/batch",
        auth.clone(),
        bytes,
        Expect::BatchAllInvalid { count: 500 },
    ));
    // Exactly 1 MiB of invalid operations and whitespace is still read.
    let one = json!({"operations": [bad_uid_op()]});
    cases.push(Case::post(
        "batch: exactly 1 MiB (whitespace padding)",
        "/v1/batch",
        auth.clone(),
        pad_to(&serde_json::to_vec(&one).unwrap(), BATCH_BODY_LIMIT),
        Expect::BatchAllInvalid { count: 1 },
    ));
    let ep = Endpoint {
        name: "batch",
        path: "/v1/batch",
        auth: auth.clone(),
        valid: &|| json!({"operations": [op("order", valid_order())]}),
    };
    cases.extend(ep.size_cases(BATCH_BODY_LIMIT));
    cases.extend(ep.auth_cases(&ledger, None));
    for (label, body) in [
        ("empty body", Vec::new()),
        ("not JSON", b"not json".to_vec()),
        ("invalid UTF-8", b"{\"operations\": [\"\xff\"]}".to_vec()),
    ] {
        cases.push(Case::post(
            format!("batch: {label}"),
            "/v1/batch",
            auth.clone(),
            body,
            invalid(Field::Any),
        ));
    }
    run_table(&ledger, "batch", cases).await;
}

async fn scans_refuse_bad_input_and_change_nothing(backend: Backend) {
    let ledger = ledger(backend).await;
    let ep = Endpoint {
        name: "scans",
        path: "/v1/scans",
        auth: bearer(&ledger.bar_token),
        valid: &valid_scans,
    };
    let mut cases = ep.field_cases(&[
        ("scans[0].card_uid", Kind::CardUid, true),
        ("scans[0].scanned_at", Kind::Time, true),
    ]);
    let text_field = |path: &str| -> Vec<(String, Mutation)> {
        vec![
            ("missing".into(), Mutation::Remove),
            ("null".into(), Mutation::Set(Value::Null)),
            ("number".into(), Mutation::Set(json!(1))),
            ("empty".into(), Mutation::Set(json!(""))),
            ("array".into(), Mutation::Set(json!(["ok"]))),
            (
                "10 KB".into(),
                Mutation::Set(json!("a".repeat(LONG_STRING_LEN))),
            ),
            (
                format!("{path} invalid UTF-8"),
                Mutation::RawBytesInString(b"ok\xff"),
            ),
        ]
    };
    for path in ["scans[0].result", "scans[0].reader"] {
        for (label, m) in text_field(path) {
            let field = if matches!(m, Mutation::RawBytesInString(_)) {
                Field::Any
            } else {
                Field::is(path)
            };
            cases.push(ep.case(&label, path, m, invalid(field)));
        }
    }
    let result = "scans[0].result";
    for (label, v) in [
        ("uppercase", json!("OK")),
        ("33 chars", json!("a".repeat(33))),
        ("punctuation", json!("ok!")),
        ("digit", json!("ok1")),
        ("space", json!("read ok")),
        ("SQL", json!(SQL)),
    ] {
        cases.push(ep.case(label, result, Mutation::Set(v), invalid_at(result)));
    }
    let reader = "scans[0].reader";
    cases.push(ep.case(
        "129 chars",
        reader,
        Mutation::Set(json!("r".repeat(129))),
        invalid_at(reader),
    ));
    cases.push(ep.case(
        "control character",
        reader,
        Mutation::Set(json!("ACR122U\u{7}")),
        invalid_at(reader),
    ));
    let seq = "scans[0].terminal_seq";
    for (label, m) in [
        ("zero", Mutation::Set(json!(0))),
        ("negative", Mutation::Set(json!(-1))),
        ("string", Mutation::Set(json!("5"))),
        ("float", Mutation::Raw("5.5")),
        ("2^63", Mutation::Raw("9223372036854775808")),
        ("object", Mutation::Set(json!({}))),
    ] {
        cases.push(ep.case(label, seq, m, invalid_at(seq)));
    }
    let many = |n: usize| {
        let scan = json!({"card_uid": "04A1B2C3", "result": "a", "reader": "r", "scanned_at": "2026-07-01T21:14:03Z"});
        serde_json::to_vec(&json!({"scans": vec![scan; n]})).unwrap()
    };
    cases.extend([
        ep.case("missing", "scans", Mutation::Remove, invalid_at("scans")),
        ep.case(
            "null",
            "scans",
            Mutation::Set(Value::Null),
            invalid_at("scans"),
        ),
        ep.case(
            "empty",
            "scans",
            Mutation::Set(json!([])),
            invalid_at("scans"),
        ),
        ep.case(
            "a string",
            "scans",
            Mutation::Set(json!("scan")),
            invalid_at("scans"),
        ),
        ep.case(
            "an object",
            "scans",
            Mutation::Set(valid_scan()),
            invalid_at("scans"),
        ),
        ep.case(
            "scans[0] a number",
            "scans[0]",
            Mutation::Set(json!(42)),
            invalid_at("scans[0]"),
        ),
        ep.case(
            "scans[1] null",
            "scans",
            Mutation::Set(json!([valid_scan(), null])),
            invalid_at("scans[1]"),
        ),
        Case::post(
            "scans: 1001 scans",
            "/v1/scans",
            ep.auth.clone(),
            many(1001),
            invalid_at("scans"),
        ),
    ]);
    cases.extend(ep.shape_cases());
    cases.extend(ep.unknown_field_cases(Some("scans[0]")));
    cases.extend(ep.auth_cases(&ledger, None));
    // The spec allows 1000 scans in one upload, so the upload limit must let 1000 through.
    cases.extend(ep.size_cases(BATCH_BODY_LIMIT));
    run_table(&ledger, "scans", cases).await;
}

async fn card_lookup_and_feed_refuse_bad_input_and_change_nothing(backend: Backend) {
    let ledger = ledger(backend).await;
    let auth = bearer(&ledger.bar_token);
    let uid_field = || Field::OneOf(vec!["card_uid".into(), "uid".into()]);
    let mut cases = Vec::new();
    for (label, uid) in [
        ("lowercase", "04a1b2c3d4e5f6".to_owned()),
        ("odd length 7", "04A1B2C".to_owned()),
        ("length 12", "04A1B2C3D4E5".to_owned()),
        ("length 16", "04A1B2C3D4E5F607".to_owned()),
        ("length 22", "04A1B2C3D4E5F60718AB0C".to_owned()),
        ("non-hex", "04A1B2C3D4E5FG".to_owned()),
        (
            "SQL, percent-encoded",
            "%27%3B%20DROP%20TABLE%20cards%3B%20--".to_owned(),
        ),
        ("SQL always-true", "%27%20OR%20%271%27%3D%271".to_owned()),
        (
            "invalid UTF-8, percent-encoded",
            "04A1B2C3%FF%FE".to_owned(),
        ),
        ("percent-encoded NUL", "04A1B2C3%00".to_owned()),
        ("10 KB", "A".repeat(LONG_STRING_LEN)),
    ] {
        cases.push(Case::get(
            format!("card lookup: {label}"),
            &format!("/v1/cards/{uid}"),
            auth.clone(),
            invalid(uid_field()),
        ));
    }
    // Authentication comes before the path is looked at.
    cases.push(Case::get(
        "card lookup: invalid UTF-8 without credentials",
        "/v1/cards/04A1B2C3%FF%FE",
        None,
        unauthorized(),
    ));
    cases.push(Case::get(
        "card lookup: unknown card",
        &format!("/v1/cards/{}", uid(999)),
        auth.clone(),
        Expect::Error {
            status: 404,
            code: "CARD_NOT_FOUND",
            field: Field::Any,
        },
    ));
    let card_path = format!("/v1/cards/{}", card());
    for (label, path) in [
        ("limit 0", "/v1/cards?since=&limit=0"),
        ("limit 10001", "/v1/cards?since=&limit=10001"),
        ("limit negative", "/v1/cards?since=&limit=-1"),
        ("limit not a number", "/v1/cards?since=&limit=abc"),
        ("limit float", "/v1/cards?since=&limit=1.5"),
        ("limit empty", "/v1/cards?since=&limit="),
        (
            "limit past u64",
            "/v1/cards?since=&limit=99999999999999999999999",
        ),
        (
            "limit SQL",
            "/v1/cards?since=&limit=1%3B%20DROP%20TABLE%20cards",
        ),
    ] {
        cases.push(Case::get(
            format!("card feed: {label}"),
            path,
            auth.clone(),
            invalid_at("limit"),
        ));
    }
    for (label, path) in [
        ("since not a number", "/v1/cards?since=abc"),
        ("since negative", "/v1/cards?since=-1"),
        ("since float", "/v1/cards?since=1.5"),
        ("since past i64", "/v1/cards?since=99999999999999999999999"),
        ("since SQL", "/v1/cards?since=0%20OR%201%3D1"),
        (
            "since SQL drop",
            "/v1/cards?since=%27%3B%20DROP%20TABLE%20cards%3B%20--",
        ),
        ("since invalid UTF-8", "/v1/cards?since=%FF%FE"),
    ] {
        cases.push(Case::get(
            format!("card feed: {label}"),
            path,
            auth.clone(),
            invalid_at("since"),
        ));
    }
    for (path, what) in [
        (card_path.as_str(), "card lookup"),
        ("/v1/cards?since=", "card feed"),
    ] {
        let token = &ledger.bar_token;
        for (label, header) in [
            ("no Authorization", None),
            ("garbage token", Some("Bearer garbage".to_owned())),
            ("Bearer with empty token", Some("Bearer ".to_owned())),
            ("Basic scheme", Some("Basic Zm9vOmJhcg==".to_owned())),
            ("token without scheme", Some(token.clone())),
            ("SQL token", Some(format!("Bearer {SQL}"))),
        ] {
            cases.push(Case::get(
                format!("{what} auth: {label}"),
                path,
                header,
                unauthorized(),
            ));
        }
    }
    run_table(&ledger, "cards", cases).await;
}

/// Credentials, body limits and the error envelope of the money endpoints.
async fn auth_and_body_limits_refuse_and_change_nothing(backend: Backend) {
    let ledger = ledger(backend).await;
    let order = order_endpoint(&ledger);
    let recharge = Endpoint {
        name: "recharge",
        path: "/v1/recharges",
        auth: bearer(&ledger.checkpoint_token),
        valid: &valid_recharge,
    };
    let void = Endpoint {
        name: "void",
        path: "/v1/voids",
        auth: bearer(&ledger.bar_token),
        valid: &valid_void,
    };
    let mut cases = Vec::new();
    cases.extend(order.auth_cases(&ledger, Some(&ledger.checkpoint_token)));
    cases.extend(recharge.auth_cases(&ledger, Some(&ledger.bar_token)));
    cases.extend(void.auth_cases(&ledger, None));
    cases.extend(order.size_cases(BODY_LIMIT));
    cases.extend(recharge.size_cases(BODY_LIMIT));
    cases.extend(void.size_cases(BODY_LIMIT));
    // Size before content: a huge body without credentials is refused as unauthorized
    // (auth comes first in the decisions' check order).
    cases.push(Case::post(
        "order: 4 MiB body without credentials",
        "/v1/orders",
        None,
        pad_to(
            &serde_json::to_vec(&valid_order()).unwrap(),
            4 * 1024 * 1024,
        ),
        unauthorized(),
    ));
    // The caller's request id is echoed in the header and the error body.
    cases.push(
        Case::post(
            "order: caller's X-Request-Id echoed",
            "/v1/orders",
            order.auth.clone(),
            b"{}".to_vec(),
            invalid(Field::Any),
        )
        .header("x-request-id", "bad-input-test-42"),
    );
    cases.push(Case::post(
        "unknown route",
        "/v1/nope",
        order.auth.clone(),
        b"{}".to_vec(),
        Expect::Error {
            status: 404,
            code: "NOT_FOUND",
            field: Field::Any,
        },
    ));
    cases.push(Case::get(
        "GET on POST-only route",
        "/v1/orders",
        order.auth.clone(),
        Expect::Error {
            status: 405,
            code: "METHOD_NOT_ALLOWED",
            field: Field::Any,
        },
    ));
    run_table(&ledger, "auth and limits", cases).await;
}

/// The valid bodies the tables start from are accepted, and the limits are exactly where the
/// contract puts them: without this, every refusal above could be for the wrong reason.
async fn the_valid_baselines_are_accepted(backend: Backend) {
    let ledger = ledger(backend).await;
    let bar = &ledger.bar_token;
    let cp = &ledger.checkpoint_token;
    let failures = std::cell::RefCell::new(Vec::new());
    let expect = |what: &str, status: u16, resp: &common::Resp| {
        if resp.status != status {
            failures.borrow_mut().push(format!(
                "{what}: HTTP {}, expected {status}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.raw)
            ));
        }
    };
    let with_seq = |mut body: Value, seq: i64| {
        body["terminal_seq"] = json!(seq);
        body
    };
    expect(
        "order",
        201,
        &ledger
            .post("/v1/orders", bar, &with_seq(valid_order(), 1))
            .await,
    );
    expect(
        "recharge",
        201,
        &ledger
            .post("/v1/recharges", cp, &with_seq(valid_recharge(), 1000))
            .await,
    );
    expect(
        "void (tombstone)",
        201,
        &ledger
            .post("/v1/voids", bar, &with_seq(valid_void(), 2))
            .await,
    );
    let mut op = with_seq(valid_order(), 3);
    op["type"] = json!("order");
    let resp = ledger
        .post("/v1/batch", bar, &json!({"operations": [op]}))
        .await;
    expect("batch", 200, &resp);
    if resp.body["results"][0]["status"] != json!(201) {
        failures.borrow_mut().push(format!(
            "batch: the operation was not approved: {}",
            resp.body
        ));
    }
    expect(
        "shift close-out",
        201,
        &ledger.post("/v1/shifts", cp, &valid_shift()).await,
    );
    let mut bounds = valid_shift();
    bounds["cash_cents"] = json!(SHIFT_CENTS_MAX);
    bounds["card_cents"] = json!(SHIFT_CENTS_MAX);
    bounds["count"] = json!(SHIFT_COUNT_MAX);
    bounds["counted_cash_cents"] = json!(0);
    bounds["closed_at"] = bounds["opened_at"].clone();
    bounds["first_seq"] = json!(1);
    bounds["last_seq"] = json!(i64::MAX);
    let resp = ledger.post("/v1/shifts", bar, &bounds).await;
    expect(
        "shift close-out at the bounds, opened = closed, from a bar",
        201,
        &resp,
    );
    if resp.body["difference_cents"] != json!(-SHIFT_CENTS_MAX) {
        failures.borrow_mut().push(format!(
            "shift close-out at the bounds: difference_cents: {}",
            resp.body
        ));
    }
    // An empty shift sends no range; a one-entry shift, first_seq = last_seq.
    let mut empty = valid_shift();
    for key in ["first_seq", "last_seq"] {
        empty.as_object_mut().unwrap().remove(key);
    }
    expect(
        "shift close-out without first_seq and last_seq",
        201,
        &ledger.post("/v1/shifts", cp, &empty).await,
    );
    let mut one_entry = valid_shift();
    one_entry["first_seq"] = json!(7);
    one_entry["last_seq"] = json!(7);
    expect(
        "shift close-out with first_seq = last_seq",
        201,
        &ledger.post("/v1/shifts", cp, &one_entry).await,
    );
    expect(
        "scans",
        200,
        &ledger.post("/v1/scans", bar, &valid_scans()).await,
    );
    // 1000 scans are allowed by the contract.
    let thousand: Vec<Value> = (0..1000)
        .map(|i| {
            let mut s = valid_scan();
            s["scanned_at"] = json!(format!("2026-07-01T21:{:02}:{:02}Z", i / 60 % 60, i % 60));
            s["reader"] = json!(format!("reader-{i}"));
            s
        })
        .collect();
    expect(
        "1000 scans",
        200,
        &ledger
            .post("/v1/scans", bar, &json!({"scans": thousand}))
            .await,
    );
    let order = with_seq(valid_order(), 4);
    let resp = ledger
        .post_raw(
            "/v1/orders",
            Some(bar),
            pad_to(&serde_json::to_vec(&order).unwrap(), BODY_LIMIT),
            &[],
        )
        .await;
    expect("order of exactly 64 KiB", 201, &resp);
    let order = with_seq(valid_order(), 5);
    let crid = order["client_request_id"].as_str().unwrap().to_owned();
    let resp = ledger
        .post_raw(
            "/v1/orders",
            Some(bar),
            serde_json::to_vec(&order).unwrap(),
            &[("idempotency-key", &crid)],
        )
        .await;
    expect("order with a matching Idempotency-Key", 201, &resp);
    let mut offline = with_seq(valid_order(), 6);
    offline["mode"] = json!("offline");
    offline["card_uid"] = json!("04A1B2C3D4E5F60718AB");
    offline["items"][0]["unit_price_cents"] = json!(0);
    offline["items"][0]["quantity"] = json!(99);
    offline["items"]
        .as_array_mut()
        .unwrap()
        .push(json!({"product_id": "water", "quantity": 1, "unit_price_cents": 1}));
    offline["total_cents"] = json!(1);
    expect(
        "offline order, 20-char UID, free line",
        201,
        &ledger.post("/v1/orders", bar, &offline).await,
    );
    let mut fifty = with_seq(valid_order(), 7);
    fifty["items"] = Value::Array(
        (0..50)
            .map(|_| json!({"product_id": "water", "quantity": 1, "unit_price_cents": 200}))
            .collect(),
    );
    fifty["total_cents"] = json!(50 * 200);
    expect(
        "order of 50 lines",
        201,
        &ledger.post("/v1/orders", bar, &fifty).await,
    );
    expect(
        "card lookup",
        200,
        &ledger
            .get(&format!("/v1/cards/{}", card()), Some(bar))
            .await,
    );
    expect(
        "card feed",
        200,
        &ledger.get("/v1/cards?since=&limit=10", Some(bar)).await,
    );
    expect(
        "card feed, limit 10000",
        200,
        &ledger.get("/v1/cards?limit=10000", Some(bar)).await,
    );
    // RFC 3986 2.3: a percent-encoded digit is the same digit.
    expect(
        "card feed, percent-encoded limit (%31%30 = 10)",
        200,
        &ledger.get("/v1/cards?since=&limit=%31%30", Some(bar)).await,
    );
    let failures = failures.into_inner();
    assert!(
        failures.is_empty(),
        "valid requests refused:\n{}",
        failures.join("\n")
    );
    ledger.assert_audit_ok();
}

// ---------------------------------------------------------------------------------------------
// Property: random JSON and garbage to POST /v1/orders
// ---------------------------------------------------------------------------------------------

/// Random JSON values.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::from),
        "[0-9A-Fa-f]{0,22}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One request body for the property.
#[derive(Debug, Clone)]
enum Garbage {
    /// Any JSON value as the whole body.
    Whole(Value),
    /// A valid order with the field at this path replaced.
    Replace(&'static str, Value),
    /// A valid order without this field.
    Remove(&'static str),
    /// A valid order with an extra unknown field.
    Extra(String, Value),
    /// Random bytes.
    Bytes(Vec<u8>),
}

const ORDER_PATHS: &[&str] = &[
    "client_request_id",
    "terminal_seq",
    "card_uid",
    "items",
    "items[0]",
    "items[0].product_id",
    "items[0].quantity",
    "items[0].unit_price_cents",
    "total_cents",
    "staff_id",
    "created_at",
    "mode",
];

/// A replacement that might make the order valid again (then it would be applied and the
/// property would be wrong, not the ledger). Staff ids are not here: a valid but unknown one
/// is refused with 403 and changes nothing.
fn could_be_valid(path: &str, value: &Value, base: &Value) -> bool {
    let original = base
        .pointer(&json_pointer(path))
        .cloned()
        .unwrap_or(Value::Null);
    if *value == original {
        return true;
    }
    match path {
        "terminal_seq" => value.as_i64().is_some_and(|n| n >= 1),
        "items[0].product_id" => value.as_str().is_some_and(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        }),
        "client_request_id" => value
            .as_str()
            .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
        "created_at" => value
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        "mode" => value.as_str().is_some_and(|s| s == "offline"),
        "card_uid" => value.as_str().is_some_and(|s| {
            matches!(s.len(), 8 | 14 | 20)
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        }),
        "staff_id" => value.as_str().is_some_and(|s| s == "s-super"),
        _ => false,
    }
}

fn json_pointer(path: &str) -> String {
    parse_path(path)
        .iter()
        .map(|s| match s {
            Seg::Key(k) => format!("/{k}"),
            Seg::Index(i) => format!("/{i}"),
        })
        .collect()
}

fn arb_garbage() -> impl Strategy<Value = Garbage> {
    prop_oneof![
        arb_json().prop_map(Garbage::Whole),
        (prop::sample::select(ORDER_PATHS), arb_json()).prop_map(|(p, v)| Garbage::Replace(p, v)),
        prop::sample::select(ORDER_PATHS).prop_map(Garbage::Remove),
        ("x_[a-z]{1,8}", arb_json()).prop_map(|(k, v)| Garbage::Extra(k, v)),
        prop::collection::vec(any::<u8>(), 0..256).prop_map(Garbage::Bytes),
    ]
}

fn garbage_body(g: &Garbage, base: &Value) -> Option<Vec<u8>> {
    Some(match g {
        Garbage::Whole(v) => serde_json::to_vec(v).unwrap(),
        Garbage::Replace(path, v) => {
            if could_be_valid(path, v, base) {
                return None;
            }
            mutate(base, path, &Mutation::Set(v.clone()))
        }
        Garbage::Remove(path) => mutate(base, path, &Mutation::Remove),
        Garbage::Extra(key, v) => mutate(base, key, &Mutation::Set(v.clone())),
        Garbage::Bytes(b) => b.clone(),
    })
}

async fn random_garbage_to_orders_is_refused_and_changes_nothing(backend: Backend) {
    // The property runner blocks on each case: it runs on a thread of its own.
    let garbage = std::thread::spawn(move || random_garbage_to_orders(backend));
    if let Err(panic) = garbage.join() {
        std::panic::resume_unwind(panic);
    }
}

fn random_garbage_to_orders(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger = rt.block_on(ledger(backend));
    let base = valid_order();
    let client = fresh_client();
    let fingerprint = ledger.db_fingerprint();
    let config = ProptestConfig {
        cases: 64,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&arb_garbage(), |garbage| {
        let Some(body) = garbage_body(&garbage, &base) else {
            return Ok(());
        };
        let case = Case::post(
            "garbage",
            "/v1/orders",
            bearer(&ledger.bar_token),
            body,
            invalid(Field::Any),
        );
        let reply = rt
            .block_on(send(&client, &ledger.base_url, &case))
            .map_err(TestCaseError::fail)?;
        let code = reply
            .json()
            .and_then(|b| b["error"]["code"].as_str().map(str::to_owned));
        if !matches!(reply.status, 400 | 403 | 413) || code.is_none() {
            return Err(TestCaseError::fail(format!(
                "expected a 400/403/413 error, got HTTP {}: {}",
                reply.status,
                reply.text()
            )));
        }
        let after = ledger.db_fingerprint();
        if after != fingerprint {
            return Err(TestCaseError::fail(format!(
                "the database changed:\n{}",
                fingerprint_diff(&fingerprint, &after)
            )));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!(
            "{e}\n--- server log (tail) ---\n{}",
            tail(&ledger.server_log(), 4000)
        );
    }
    let health = rt.block_on(ledger.get("/health", None));
    assert_eq!(health.status, 200, "the ledger must still be up");
}

// Every test above that takes a `Backend` runs on both: `sqlite::NAME`, `postgres::NAME`.
on_both_backends! {
    orders_refuse_bad_input_and_change_nothing,
    recharges_refuse_bad_input_and_change_nothing,
    voids_refuse_bad_input_and_change_nothing,
    shifts_refuse_bad_input_and_change_nothing,
    batches_refuse_bad_input_and_change_nothing,
    scans_refuse_bad_input_and_change_nothing,
    card_lookup_and_feed_refuse_bad_input_and_change_nothing,
    auth_and_body_limits_refuse_and_change_nothing,
    the_valid_baselines_are_accepted,
    random_garbage_to_orders_is_refused_and_changes_nothing,
}
