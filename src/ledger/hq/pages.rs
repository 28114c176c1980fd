//! The handlers of the headquarters pages and the data their templates show.

use super::auth::{self, Action, LoginGate};
use crate::domain::{CardUid, Cents};
use crate::ledger::api::AppState;
use crate::ledger::caller::{Actor, OperatorRole};
use crate::ledger::fleet::{self, Attention};
use crate::ledger::report;
use crate::ledger::store::{
    LedgerStore, NewOperator, NewSession, OperatorChange, OperatorSession, StoreError,
};
use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// The style sheet, embedded in the binary.
const STYLE_SHEET: &str = include_str!("assets/hq.css");
/// The pages' icon.
const FAVICON: &str = include_str!("assets/favicon.svg");
/// htmx (0BSD), for the live updates; see `assets/vendor/README.md`.
const HTMX: &str = include_str!("assets/vendor/htmx.min.js");
/// Chart.js (MIT), for the overview's charts; see `assets/vendor/README.md`.
const CHART_JS: &str = include_str!("assets/vendor/chart.umd.min.js");
/// The pages' own script: draws the overview's charts with Chart.js from the data the page
/// carries, again after each live update.
const HQ_SCRIPT: &str = include_str!("assets/hq.js");
/// What a page may load: its own style sheet and nothing inline; forms post to the ledger
/// only; no frame may hold it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";
/// Close-outs the shifts page lists, at most (the newest).
pub const SHIFTS_SHOWN: u32 = 200;
/// Operations and scans a card page lists, at most (newest first).
pub const CARD_HISTORY_MAX: u32 = 100;
/// Fields a form may have, at most.
const FORM_FIELDS_MAX: usize = 16;

/// The logged-in operator, as the page's header shows them.
pub(super) struct Who {
    pub(super) name: String,
    pub(super) role: &'static str,
    pub(super) csrf: String,
    pub(super) admin: bool,
}

impl Who {
    pub(super) fn of(session: &OperatorSession) -> Who {
        Who {
            name: session.operator.name.clone(),
            role: session.operator.role.as_str(),
            csrf: session.csrf_token.clone(),
            admin: auth::may(session.operator.role, Action::ManageOperators),
        }
    }
}

#[derive(Template)]
#[template(path = "message.html", config = "src/ledger/hq/askama.toml")]
struct MessagePage {
    who: Option<Who>,
    heading: &'static str,
    kind: &'static str,
    text: String,
    back: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html", config = "src/ledger/hq/askama.toml")]
struct LoginPage {
    who: Option<Who>,
    csrf: String,
    name: String,
    error: Option<String>,
}

struct FleetRow {
    name: String,
    kind: &'static str,
    point_of_sale: String,
    active: bool,
    last_contact: String,
    waiting: String,
    in_doubt: String,
    rejected: String,
    missing: i64,
    reader: &'static str,
    clock: String,
    version: String,
    reasons: Vec<String>,
    tags: String,
}

#[derive(Template)]
#[template(path = "fleet.html", config = "src/ledger/hq/askama.toml")]
struct FleetPage {
    who: Option<Who>,
    terminals: Vec<FleetRow>,
    needing: usize,
    as_of: String,
    live_s: u32,
}

struct CardShown {
    uid: String,
    balance: String,
    status: String,
    /// Why it is blocked, for people; empty when it is not.
    blocked_because: &'static str,
    /// Blocked as lost and not replaced: the desk may unblock it.
    may_unblock: bool,
    replaced_by: Option<String>,
    voucher_units: i64,
    age: &'static str,
    updated_at: String,
    events: Vec<EventRow>,
    more_events: bool,
    scans: Vec<ScanRow>,
    more_scans: bool,
}

struct EventRow {
    at: String,
    actor: String,
    staff: String,
    operation: String,
    amount: String,
    outcome: String,
}

struct ScanRow {
    at: String,
    terminal: String,
    reader: String,
    result: String,
}

#[derive(Template)]
#[template(path = "card.html", config = "src/ledger/hq/askama.toml")]
struct CardPage {
    who: Option<Who>,
    csrf: String,
    query: String,
    error: Option<String>,
    card: Option<CardShown>,
    currency: String,
    may_change: bool,
}

struct SectionChoice {
    name: &'static str,
    label: String,
    selected: bool,
}

struct Shown {
    text: String,
    numeric: bool,
}

struct ReportTable {
    title: &'static str,
    headers: Vec<Shown>,
    rows: Vec<Vec<Shown>>,
    total: Vec<Shown>,
}

#[derive(Template)]
#[template(path = "reports.html", config = "src/ledger/hq/askama.toml")]
struct ReportsPage {
    who: Option<Who>,
    sections: Vec<SectionChoice>,
    from: String,
    to: String,
    error: Option<String>,
    table: Option<ReportTable>,
    currency: String,
    utc_offset: String,
}

struct ShiftRow {
    id: String,
    closed_at: String,
    terminal: String,
    staff: String,
    count: i64,
    cash: String,
    counted: String,
    difference: String,
    card: String,
    ledger_count: i64,
    ledger_cash: String,
    ledger_card: String,
    attention: bool,
}

#[derive(Template)]
#[template(path = "shifts.html", config = "src/ledger/hq/askama.toml")]
struct ShiftsPage {
    who: Option<Who>,
    shifts: Vec<ShiftRow>,
    differing: usize,
    currency: String,
    shown_max: u32,
}

struct StripeRow {
    received_at: String,
    event_id: String,
    event_type: String,
    outcome: String,
    card: String,
    amount: String,
    reason: String,
    session: String,
    attention: bool,
}

#[derive(Template)]
#[template(path = "stripe.html", config = "src/ledger/hq/askama.toml")]
struct StripePage {
    who: Option<Who>,
    attention: bool,
    events: Vec<StripeRow>,
}

struct OperatorRow {
    name: String,
    role: &'static str,
    active: &'static str,
    enabled: bool,
    failed: i64,
    locked_until: String,
}

#[derive(Template)]
#[template(path = "operators.html", config = "src/ledger/hq/askama.toml")]
struct OperatorsPage {
    who: Option<Who>,
    csrf: String,
    operators: Vec<OperatorRow>,
    error: Option<String>,
}

/// An HTML response with the pages' security headers.
pub(super) fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => with_headers(
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "a headquarters page could not be rendered");
            with_headers((StatusCode::INTERNAL_SERVER_ERROR, "page error").into_response())
        }
    }
}

fn with_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

pub(super) fn message(
    status: StatusCode,
    who: Option<Who>,
    heading: &'static str,
    text: impl Into<String>,
    back: Option<String>,
) -> Response {
    let kind = if status.is_success() { "info" } else { "error" };
    html(
        status,
        &MessagePage {
            who,
            heading,
            kind,
            text: text.into(),
            back,
        },
    )
}

/// A failed read or write: the page says so; nothing more was changed.
pub(super) fn store_failed(who: Option<Who>, e: &StoreError) -> Response {
    match e {
        StoreError::NotFound(m) => message(StatusCode::NOT_FOUND, who, "Not found", m, None),
        StoreError::Conflict(m) => message(StatusCode::CONFLICT, who, "Refused", m, None),
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %e, "a headquarters page could not reach the database");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                who,
                "Database unavailable",
                "The database did not answer. Nothing was changed; try again in a moment.",
                None,
            )
        }
        _ => {
            tracing::error!(error = %e, "a headquarters page failed");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                who,
                "Error",
                "Something went wrong; it is logged. Nothing was changed.",
                None,
            )
        }
    }
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    with_headers(response)
}

pub(super) fn cookie_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| auth::cookie(v, name))
}

/// The live session of the request's cookie, if any.
async fn session<S: LedgerStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
) -> Result<Option<OperatorSession>, StoreError> {
    match cookie_of(headers, auth::SESSION_COOKIE) {
        Some(token) if auth::is_token(token) => {
            state
                .store
                .session(auth::token_sha256(token), Utc::now())
                .await
        }
        _ => Ok(None),
    }
}

/// The session, or the response to give instead (to the login page; an error page).
pub(super) async fn require<S: LedgerStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
    action: Action,
) -> Result<OperatorSession, Response> {
    match session(state, headers).await {
        Ok(Some(s)) if auth::may(s.operator.role, action) => Ok(s),
        Ok(Some(s)) => Err(message(
            StatusCode::FORBIDDEN,
            Some(Who::of(&s)),
            "Not allowed",
            format!(
                "Your role ({}) may not do this; ask an operator with a higher role.",
                s.operator.role.as_str()
            ),
            None,
        )),
        Ok(None) if headers.contains_key("hx-request") => {
            // A live update whose session ended: htmx loads the login page as a whole.
            let mut response = StatusCode::NO_CONTENT.into_response();
            response
                .headers_mut()
                .insert("hx-redirect", HeaderValue::from_static("/hq/login"));
            Err(with_headers(response))
        }
        Ok(None) => Err(redirect("/hq/login")),
        Err(e) => Err(store_failed(None, &e)),
    }
}

/// A query string's parameters, bounded: at most [`FORM_FIELDS_MAX`], each value trimmed and
/// cut to [`REPORT_PARAM_LEN_MAX`] characters.
pub(super) fn query_params(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .take(FORM_FIELDS_MAX)
                .map(|(k, v)| {
                    (
                        k.into_owned(),
                        v.trim().chars().take(REPORT_PARAM_LEN_MAX).collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A form's fields (the first of each name), bounded.
fn form(body: Result<Bytes, BytesRejection>) -> Result<HashMap<String, String>, String> {
    let bytes = body.map_err(|e| e.body_text())?;
    let mut fields = HashMap::new();
    for (k, v) in form_urlencoded::parse(&bytes) {
        if fields.len() >= FORM_FIELDS_MAX {
            return Err("too many fields".into());
        }
        fields
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    Ok(fields)
}

/// A POST from a session: the session, allowed `action`, and the form, its CSRF token
/// checked; or the response to give instead, having changed nothing.
async fn posted<S: LedgerStore>(
    state: &AppState<S>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    action: Action,
) -> Result<(OperatorSession, HashMap<String, String>), Response> {
    let session = require(state, headers, action).await?;
    let fields = form(body).map_err(|e| {
        message(
            StatusCode::BAD_REQUEST,
            Some(Who::of(&session)),
            "Bad request",
            format!("The form could not be read: {e}. Nothing was changed."),
            None,
        )
    })?;
    let submitted = fields.get("csrf").map_or("", String::as_str);
    if !auth::same_token(submitted, &session.csrf_token) {
        return Err(message(
            StatusCode::FORBIDDEN,
            Some(Who::of(&session)),
            "Form expired",
            "This form is not from your current session (its security token is missing or \
             stale). Nothing was changed; open the page again and retry.",
            None,
        ));
    }
    Ok((session, fields))
}

pub(super) async fn home() -> Response {
    redirect("/hq/overview")
}

pub(super) async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        None,
        "Not found",
        "There is no such page.",
        Some("/hq/".into()),
    )
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "hq.css" => with_headers(
            (
                [
                    (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                    (header::CACHE_CONTROL, "public, max-age=3600"),
                ],
                STYLE_SHEET,
            )
                .into_response(),
        ),
        "htmx.min.js" => script(HTMX),
        "chart.umd.min.js" => script(CHART_JS),
        "hq.js" => script(HQ_SCRIPT),
        "favicon.svg" => with_headers(
            (
                [
                    (header::CONTENT_TYPE, "image/svg+xml"),
                    (header::CACHE_CONTROL, "public, max-age=3600"),
                ],
                FAVICON,
            )
                .into_response(),
        ),
        _ => not_found().await,
    }
}

/// One of the embedded scripts.
fn script(body: &'static str) -> Response {
    with_headers(
        (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response(),
    )
}

/// The login form with a new CSRF token, set in its cookie too (`Secure` under TLS).
fn login_form(secure: bool, name: String, error: Option<String>, status: StatusCode) -> Response {
    let csrf = auth::new_token();
    let mut response = html(
        status,
        &LoginPage {
            who: None,
            csrf: csrf.clone(),
            name,
            error,
        },
    );
    let cookie = auth::set_cookie(auth::LOGIN_COOKIE, &csrf, 3600, secure);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

pub(super) async fn login_page<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Response {
    if let Ok(Some(_)) = session(&state, &headers).await {
        return redirect("/hq/overview");
    }
    login_form(state.hq.secure_cookies, String::new(), None, StatusCode::OK)
}

pub(super) async fn login<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let secure = state.hq.secure_cookies;
    let fields = match form(body) {
        Ok(f) => f,
        Err(e) => {
            return login_form(
                secure,
                String::new(),
                Some(format!("The form could not be read: {e}.")),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let name = fields.get("name").cloned().unwrap_or_default();
    let password = fields.get("password").cloned().unwrap_or_default();
    let expected = cookie_of(&headers, auth::LOGIN_COOKIE).unwrap_or("");
    if !auth::is_token(expected)
        || !auth::same_token(fields.get("csrf").map_or("", String::as_str), expected)
    {
        return login_form(
            secure,
            name,
            Some("This login form expired; please log in again.".into()),
            StatusCode::FORBIDDEN,
        );
    }
    let refused = || {
        login_form(
            secure,
            name.clone(),
            Some(auth::LOGIN_REFUSED.into()),
            StatusCode::UNAUTHORIZED,
        )
    };
    if auth::check_operator_name(&name).is_err() || password.is_empty() || password.len() > 512 {
        return refused();
    }
    // A bounded number of password checks at once: each is tens of milliseconds of CPU and
    // some megabytes, on the blocking pool SQLite's reads share with the terminals.
    let Ok(Ok(_permit)) = tokio::time::timeout(
        std::time::Duration::from_millis(PASSWORD_CHECK_WAIT_MS),
        password_checks().acquire(),
    )
    .await
    else {
        return login_form(
            secure,
            name,
            Some("Too many logins at once; try again in a moment.".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        );
    };
    let now = Utc::now();
    let operator = match state.store.operator_login(name.clone()).await {
        Ok(o) => o,
        Err(e) => return store_failed(None, &e),
    };
    // The attempt is counted before its password is checked, in one statement that refuses
    // a locked operator: attempts made at once cannot get past the lock together.
    let counted = match &operator {
        Some(o) if auth::login_gate(Some(o), now) == LoginGate::CheckPassword => {
            match state
                .store
                .begin_login(
                    o.operator.operator_id,
                    now,
                    auth::LOCK_AFTER_FAILURES,
                    auth::LOCK_FOR_S,
                )
                .await
            {
                Ok(counted) => counted,
                Err(e) => return store_failed(None, &e),
            }
        }
        _ => None,
    };
    let hash = match (&operator, &counted) {
        (Some(o), Some(_)) => o.password_hash.clone(),
        _ => auth::decoy_hash().to_owned(),
    };
    // Argon2 off the async workers; unknown names, disabled and locked operators are
    // checked against a decoy, so that every refusal takes as long.
    let good = tokio::task::spawn_blocking(move || auth::verify_password(&hash, &password))
        .await
        .unwrap_or(false);
    match (operator, counted) {
        (Some(o), Some(_)) if good => {
            let token = auth::new_token();
            let session = NewSession {
                session_sha256: auth::token_sha256(&token),
                csrf_token: auth::new_token(),
                created_at: now,
                expires_at: now + chrono::Duration::seconds(auth::SESSION_TTL_S),
            };
            if let Err(e) = state
                .store
                .open_session(o.operator.operator_id, session)
                .await
            {
                return store_failed(None, &e);
            }
            tracing::info!(operator = %o.operator.name, "operator logged in");
            let mut response = redirect("/hq/overview");
            for cookie in [
                auth::set_cookie(auth::SESSION_COOKIE, &token, auth::SESSION_TTL_S, secure),
                auth::set_cookie(auth::LOGIN_COOKIE, "", 0, secure),
            ] {
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            response
        }
        (Some(o), Some(attempt)) => {
            tracing::warn!(operator = %o.operator.name, in_a_row = attempt.failed_logins,
                locked = attempt.locked_until.is_some(), "wrong password for an operator");
            refused()
        }
        (Some(o), None) if o.active => {
            tracing::warn!(operator = %o.operator.name, "login attempt for a locked operator");
            refused()
        }
        _ => refused(),
    }
}

/// Password checks (argon2) running at once, at most.
pub const PASSWORD_CHECKS_MAX: usize = 4;
/// How long a login waits for a password check before it is answered 503.
pub const PASSWORD_CHECK_WAIT_MS: u64 = 2000;

fn password_checks() -> &'static tokio::sync::Semaphore {
    static CHECKS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    CHECKS.get_or_init(|| tokio::sync::Semaphore::new(PASSWORD_CHECKS_MAX))
}

pub(super) async fn logout<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (session, _) = match posted(&state, &headers, body, Action::View).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    if let Some(token) = cookie_of(&headers, auth::SESSION_COOKIE)
        && let Err(e) = state.store.close_session(auth::token_sha256(token)).await
    {
        return store_failed(Some(Who::of(&session)), &e);
    }
    tracing::info!(operator = %session.operator.name, "operator logged out");
    let mut response = redirect("/hq/login");
    let cookie = auth::set_cookie(auth::SESSION_COOKIE, "", 0, state.hq.secure_cookies);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// A clock offset as people read it: `+0.8 s` within a minute, else `3 min ahead`.
fn clock(offset_ms: i64) -> String {
    let abs = offset_ms.unsigned_abs();
    if abs < 60_000 {
        let sign = if offset_ms < 0 { '-' } else { '+' };
        format!("{sign}{}.{} s", abs / 1000, abs % 1000 / 100)
    } else {
        let s = i64::try_from(abs / 1000).unwrap_or(i64::MAX);
        let way = if offset_ms < 0 { "behind" } else { "ahead" };
        format!("{} {way}", fleet::duration(s))
    }
}

fn ago(now: DateTime<Utc>, at: Option<DateTime<Utc>>) -> String {
    match at {
        None => "never".into(),
        Some(at) => format!("{} ago", fleet::duration((now - at).num_seconds())),
    }
}

pub(super) async fn fleet<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Response {
    let session = match require(&state, &headers, Action::View).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let snapshot = match state
        .store
        .fleet(crate::ledger::metrics::FLEET_TERMINALS_MAX)
        .await
    {
        Ok(s) => s,
        Err(e) => return store_failed(Some(Who::of(&session)), &e),
    };
    let now = Utc::now();
    let rules = state.hq.fleet;
    let terminals: Vec<FleetRow> = snapshot
        .terminals
        .iter()
        .map(|t| {
            let reasons = fleet::attention(t, now, rules);
            let status = t.status.as_ref();
            let count = |f: fn(&crate::ledger::store::StatusSeen) -> i64| {
                status.map_or_else(|| "-".to_owned(), |s| f(s).to_string())
            };
            FleetRow {
                name: t.name.clone(),
                kind: t.kind.as_str(),
                point_of_sale: t.point_of_sale.clone(),
                active: t.active,
                last_contact: ago(now, fleet::last_contact(t)),
                waiting: count(|s| s.waiting),
                in_doubt: count(|s| s.in_doubt),
                rejected: count(|s| s.rejected),
                missing: t.missing_seqs,
                reader: status.map_or("-", |s| s.reader_state.as_str()),
                clock: status.map_or_else(|| "-".to_owned(), |s| clock(s.clock_offset_ms())),
                version: status.map_or_else(|| "-".to_owned(), |s| s.software_version.clone()),
                tags: reasons
                    .iter()
                    .map(|r| r.tag())
                    .collect::<Vec<_>>()
                    .join(" "),
                reasons: reasons.into_iter().map(Attention::describe).collect(),
            }
        })
        .collect();
    let needing = terminals.iter().filter(|t| !t.reasons.is_empty()).count();
    html(
        StatusCode::OK,
        &FleetPage {
            who: Some(Who::of(&session)),
            terminals,
            needing,
            as_of: crate::protocol::api::format_time(now),
            live_s: super::LIVE_UPDATE_S,
        },
    )
}

fn card_page<S>(
    state: &AppState<S>,
    session: &OperatorSession,
    query: String,
    error: Option<String>,
    card: Option<CardShown>,
) -> CardPage {
    CardPage {
        who: Some(Who::of(session)),
        csrf: session.csrf_token.clone(),
        query,
        error,
        card,
        currency: state.currency.to_string(),
        may_change: auth::may(session.operator.role, Action::ChangeCards),
    }
}

pub(super) async fn card_search<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match require(&state, &headers, Action::View).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let uid = query.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "uid")
            .map(|(_, v)| v.trim().to_uppercase())
    });
    match uid {
        None => html(
            StatusCode::OK,
            &card_page(&state, &session, String::new(), None, None),
        ),
        Some(text) => match CardUid::parse(&text) {
            Ok(uid) => redirect(&format!("/hq/cards/{uid}")),
            Err(e) => {
                let query: String = text.chars().take(40).collect();
                html(
                    StatusCode::BAD_REQUEST,
                    &card_page(
                        &state,
                        &session,
                        query,
                        Some(format!("Not a card UID: {e}.")),
                        None,
                    ),
                )
            }
        },
    }
}

pub(super) async fn card<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> Response {
    let session = match require(&state, &headers, Action::View).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let shown: String = uid.chars().take(40).collect();
    let uid = match CardUid::parse(&uid) {
        Ok(uid) => uid,
        Err(e) => {
            return html(
                StatusCode::BAD_REQUEST,
                &card_page(
                    &state,
                    &session,
                    shown,
                    Some(format!("Not a card UID: {e}.")),
                    None,
                ),
            );
        }
    };
    let found = state.store.card(uid.clone()).await;
    let history = match &found {
        Ok(Some(_)) => {
            state
                .store
                .card_history(uid.clone(), CARD_HISTORY_MAX)
                .await
        }
        _ => Ok(Default::default()),
    };
    match (found, history) {
        (Ok(Some(card)), Ok(mut history)) => {
            let max = usize::try_from(CARD_HISTORY_MAX).unwrap_or(usize::MAX);
            let (more_events, more_scans) = (history.events.len() > max, history.scans.len() > max);
            history.events.truncate(max);
            history.scans.truncate(max);
            let time = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
            let shown = CardShown {
                uid: card.card_uid.to_string(),
                balance: card.balance_cents.to_string(),
                status: card.status.clone(),
                blocked_because: match (history.block_reason.as_deref(), &history.replaced_by) {
                    (_, Some(_)) => "replaced by another card (its money moved there)",
                    (Some("lost"), None) => "reported lost at the desk",
                    (Some("debt"), None) => {
                        "in debt after offline sales; it unblocks itself when a top-up covers the debt"
                    }
                    (Some(_), None) => "blocked",
                    (None, None) => "",
                },
                may_unblock: history.block_reason.as_deref() == Some("lost")
                    && history.replaced_by.is_none(),
                replaced_by: history.replaced_by.clone(),
                voucher_units: card.voucher_units,
                age: card.age_flag.map_or("adult (no flag)", |a| a.as_str()),
                updated_at: card.updated_at.clone(),
                events: history
                    .events
                    .into_iter()
                    .map(|e| EventRow {
                        at: time(e.occurred_at),
                        actor: e.actor,
                        staff: e.staff_id.unwrap_or_default(),
                        operation: e.operation,
                        amount: e.amount_cents.map(|a| a.to_string()).unwrap_or_default(),
                        outcome: match e.error_code {
                            Some(code) => format!("{} ({code})", e.outcome),
                            None => e.outcome,
                        },
                    })
                    .collect(),
                more_events,
                scans: history
                    .scans
                    .into_iter()
                    .map(|s| ScanRow {
                        at: time(s.scanned_at),
                        terminal: s.terminal,
                        reader: s.reader,
                        result: s.result,
                    })
                    .collect(),
                more_scans,
            };
            html(
                StatusCode::OK,
                &card_page(&state, &session, uid.to_string(), None, Some(shown)),
            )
        }
        (Ok(None), _) => html(
            StatusCode::NOT_FOUND,
            &card_page(
                &state,
                &session,
                uid.to_string(),
                Some(format!("No card {uid} is known to the ledger.")),
                None,
            ),
        ),
        (Err(e), _) | (_, Err(e)) => store_failed(Some(Who::of(&session)), &e),
    }
}

pub(super) async fn card_action<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path((uid, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (session, fields) = match posted(&state, &headers, body, Action::ChangeCards).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let who = || Some(Who::of(&session));
    let lost = match action.as_str() {
        "block" => Some(true),
        "unblock" => Some(false),
        "replace" => None,
        _ => return not_found().await,
    };
    let uid = match CardUid::parse(&uid) {
        Ok(uid) => uid,
        Err(e) => {
            return message(
                StatusCode::BAD_REQUEST,
                who(),
                "Bad request",
                format!("Not a card UID: {e}. Nothing was changed."),
                Some("/hq/cards".into()),
            );
        }
    };
    let actor = Actor::Operator(session.operator.name.clone());
    let Some(lost) = lost else {
        let new = fields
            .get("new_uid")
            .map_or("", |v| v.trim())
            .to_uppercase();
        let new = match CardUid::parse(&new) {
            Ok(new) if new != uid => new,
            Ok(_) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    who(),
                    "Bad request",
                    "A card cannot replace itself. Nothing was changed.",
                    Some(format!("/hq/cards/{uid}")),
                );
            }
            Err(e) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    who(),
                    "Bad request",
                    format!("The new card: not a card UID: {e}. Nothing was changed."),
                    Some(format!("/hq/cards/{uid}")),
                );
            }
        };
        let merge = fields.get("merge").is_some_and(|v| v == "yes");
        return match state
            .store
            .replace_card_by(actor, uid.clone(), new.clone(), merge)
            .await
        {
            Ok(r) => {
                tracing::info!(operator = %session.operator.name, card_uid = %uid,
                    new_card_uid = %new, amount_cents = r.amount_cents.get(),
                    "card replaced from headquarters");
                redirect(&format!("/hq/cards/{new}"))
            }
            Err(e) => store_failed(who(), &e),
        };
    };
    match state.store.set_card_lost_by(actor, uid.clone(), lost).await {
        Ok(()) => {
            tracing::info!(operator = %session.operator.name, card_uid = %uid, lost,
                "card blocked or unblocked from headquarters");
            redirect(&format!("/hq/cards/{uid}"))
        }
        Err(e) => store_failed(who(), &e),
    }
}

fn operators_page(
    session: &OperatorSession,
    listing: Vec<crate::ledger::store::OperatorListing>,
    error: Option<String>,
) -> OperatorsPage {
    OperatorsPage {
        who: Some(Who::of(session)),
        csrf: session.csrf_token.clone(),
        operators: listing
            .into_iter()
            .map(|o| OperatorRow {
                name: o.name,
                role: o.role.as_str(),
                active: if o.active { "yes" } else { "disabled" },
                enabled: o.active,
                failed: o.failed_logins,
                locked_until: o
                    .locked_until
                    .map_or_else(|| "-".to_owned(), crate::protocol::api::format_time),
            })
            .collect(),
        error,
    }
}

async fn show_operators<S: LedgerStore>(
    state: &AppState<S>,
    session: &OperatorSession,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    match state.store.operators(auth::OPERATORS_MAX).await {
        Ok(listing) => html(status, &operators_page(session, listing, error)),
        Err(e) => store_failed(Some(Who::of(session)), &e),
    }
}

pub(super) async fn operators<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Response {
    match require(&state, &headers, Action::ManageOperators).await {
        Ok(session) => show_operators(&state, &session, StatusCode::OK, None).await,
        Err(response) => response,
    }
}

pub(super) async fn add_operator<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (session, fields) = match posted(&state, &headers, body, Action::ManageOperators).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let (name, role, password) = (field("name"), field("role"), field("password"));
    let checked = auth::check_operator_name(&name)
        .map_err(|e| format!("Name: {e}."))
        .and_then(|()| {
            OperatorRole::parse(&role).ok_or_else(|| "Role: viewer, desk or admin.".to_owned())
        })
        .and_then(|role| {
            auth::check_password(&password)
                .map(|()| role)
                .map_err(|e| format!("Password: {e}."))
        });
    let role = match checked {
        Ok(role) => role,
        Err(e) => {
            return show_operators(
                &state,
                &session,
                StatusCode::BAD_REQUEST,
                Some(format!("{e} Nothing was changed.")),
            )
            .await;
        }
    };
    let hashed = tokio::task::spawn_blocking(move || auth::hash_password(&password)).await;
    let password_hash = match hashed {
        Ok(Ok(hash)) => hash,
        _ => {
            return store_failed(
                Some(Who::of(&session)),
                &StoreError::Internal("the password could not be hashed".into()),
            );
        }
    };
    let actor = Actor::Operator(session.operator.name.clone());
    let new = NewOperator {
        name,
        role,
        password_hash,
    };
    match state.store.add_operator(actor, new).await {
        Ok(_) => redirect("/hq/operators"),
        Err(StoreError::Conflict(m)) => {
            show_operators(
                &state,
                &session,
                StatusCode::CONFLICT,
                Some(format!("{m}. Nothing was changed.")),
            )
            .await
        }
        Err(e) => store_failed(Some(Who::of(&session)), &e),
    }
}

pub(super) async fn operator_action<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (session, _) = match posted(&state, &headers, body, Action::ManageOperators).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let active = match action.as_str() {
        "disable" => false,
        "enable" => true,
        _ => return not_found().await,
    };
    if !active && name == session.operator.name {
        return show_operators(
            &state,
            &session,
            StatusCode::BAD_REQUEST,
            Some("You cannot disable yourself. Nothing was changed.".into()),
        )
        .await;
    }
    let actor = Actor::Operator(session.operator.name.clone());
    match state
        .store
        .change_operator(actor, name, OperatorChange::Active(active))
        .await
    {
        Ok(()) => redirect("/hq/operators"),
        Err(e) => store_failed(Some(Who::of(&session)), &e),
    }
}

/// Stripe events a page lists, at most.
pub const STRIPE_EVENTS_MAX: u32 = 200;

/// A stored time (RFC 3339) as the pages show it, in UTC to the second.
fn stored_time(text: &str) -> String {
    DateTime::parse_from_rfc3339(text).map_or_else(
        |_| text.to_owned(),
        |t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

pub(super) async fn shifts<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Response {
    let session = match require(&state, &headers, Action::View).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let reports = match state.store.shift_reports(None, SHIFTS_SHOWN).await {
        Ok(r) => r,
        Err(e) => return store_failed(Some(Who::of(&session)), &e),
    };
    // Newest first: the shift just closed is the one a cashier asks about.
    let shifts: Vec<ShiftRow> = reports
        .into_iter()
        .rev()
        .map(|s| ShiftRow {
            id: s.shift_id.to_string(),
            closed_at: stored_time(&s.closed_at),
            terminal: s.terminal,
            staff: s.staff_id,
            count: s.count,
            cash: s.cash_cents.to_string(),
            counted: s.counted_cash_cents.to_string(),
            difference: s.difference_cents.to_string(),
            card: s.card_cents.to_string(),
            ledger_count: s.ledger_count,
            ledger_cash: s.ledger_cash_cents.to_string(),
            ledger_card: s.ledger_card_cents.to_string(),
            attention: s.difference_cents.get() != 0
                || s.ledger_count != s.count
                || s.ledger_cash_cents != s.cash_cents
                || s.ledger_card_cents != s.card_cents,
        })
        .collect();
    let differing = shifts.iter().filter(|s| s.attention).count();
    html(
        StatusCode::OK,
        &ShiftsPage {
            who: Some(Who::of(&session)),
            shifts,
            differing,
            currency: state.currency.to_string(),
            shown_max: SHIFTS_SHOWN,
        },
    )
}

pub(super) async fn stripe<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match require(&state, &headers, Action::View).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let all = match query.as_deref() {
        None | Some("") => false,
        Some("all=yes") => true,
        Some(_) => {
            return message(
                StatusCode::BAD_REQUEST,
                Some(Who::of(&session)),
                "Bad request",
                "This page takes no parameter but all=yes.",
                Some("/hq/stripe".into()),
            );
        }
    };
    let events = match state.store.stripe_events(!all, STRIPE_EVENTS_MAX).await {
        Ok(e) => e,
        Err(e) => return store_failed(Some(Who::of(&session)), &e),
    };
    let events = events
        .into_iter()
        .map(|e| StripeRow {
            received_at: stored_time(&e.received_at),
            attention: e.outcome == "refused" || e.outcome == "refund_waiting",
            event_id: e.event_id,
            event_type: e.event_type,
            outcome: e.outcome,
            card: e.card_uid.unwrap_or_default(),
            amount: e.amount_cents.map(|a| a.to_string()).unwrap_or_default(),
            reason: e.reason.unwrap_or_default(),
            session: e.checkout_session_id.unwrap_or_default(),
        })
        .collect();
    html(
        StatusCode::OK,
        &StripePage {
            who: Some(Who::of(&session)),
            attention: !all,
            events,
        },
    )
}

/// The report's query parameters, each at most this long.
const REPORT_PARAM_LEN_MAX: usize = 64;

/// A section's table as the page shows it: amounts in the currency, times in the
/// festival's offset, a total row for the summed columns.
fn report_table(section: &report::Section, offset: chrono::FixedOffset) -> ReportTable {
    use report::ColumnKind;
    let show = |kind: ColumnKind, cell: &report::Cell| {
        let text = match cell {
            report::Cell::Text(t) if t.is_empty() => "-".to_owned(),
            report::Cell::Text(t) => t.clone(),
            report::Cell::Int(n) if kind == ColumnKind::Cents => Cents::new(*n).to_string(),
            report::Cell::Int(n) => n.to_string(),
            report::Cell::Time(t) => t.map_or_else(
                || "-".to_owned(),
                |t| {
                    t.with_timezone(&offset)
                        .format("%Y-%m-%d %H:%M")
                        .to_string()
                },
            ),
        };
        Shown {
            text,
            numeric: !matches!(kind, ColumnKind::Text | ColumnKind::Time),
        }
    };
    let totals = section.totals();
    ReportTable {
        title: section.title,
        headers: section
            .columns
            .iter()
            .map(|c| Shown {
                text: c.header.to_owned(),
                numeric: !matches!(c.kind, ColumnKind::Text | ColumnKind::Time),
            })
            .collect(),
        rows: section
            .rows
            .iter()
            .map(|row| {
                section
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(c, cell)| show(c.kind, cell))
                    .collect()
            })
            .collect(),
        total: section
            .columns
            .iter()
            .zip(totals)
            .enumerate()
            .map(|(i, (c, total))| match total {
                Some(n) => show(c.kind, &report::Cell::Int(n)),
                None => Shown {
                    text: if i == 0 {
                        "Total".into()
                    } else {
                        String::new()
                    },
                    numeric: false,
                },
            })
            .collect(),
    }
}

pub(super) async fn reports<S: LedgerStore>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match require(&state, &headers, Action::View).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let params = query_params(query.as_deref());
    let param = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
    let names = report::section_names();
    let asked = param("section").unwrap_or_else(|| names[0].to_owned());
    let (from, to) = (param("from"), param("to"));
    let day = state.hq.festival_day;
    let mut page = ReportsPage {
        who: Some(Who::of(&session)),
        sections: names
            .iter()
            .map(|n| SectionChoice {
                name: n,
                label: n.replace('_', " "),
                selected: *n == asked,
            })
            .collect(),
        from: from.clone().unwrap_or_default(),
        to: to.clone().unwrap_or_default(),
        error: None,
        table: None,
        currency: state.currency.to_string(),
        utc_offset: day.utc_offset().to_string(),
    };
    let checked = report::check_section(&asked)
        .map_err(|_| format!("There is no report {asked:?}."))
        .and_then(|only| {
            report::range(from.as_deref(), to.as_deref(), &day)
                .map(|range| (only, range))
                .map_err(|e| e.replace("--from", "From").replace("--to", "To"))
        })
        .and_then(|(only, range)| match param("format").as_deref() {
            None => Ok((only, range, false)),
            Some("csv") => Ok((only, range, true)),
            Some(other) => Err(format!("No format {other:?}: leave it out, or csv.")),
        });
    let (only, range, csv) = match checked {
        Ok(c) => c,
        Err(e) => {
            page.error = Some(e);
            return html(StatusCode::BAD_REQUEST, &page);
        }
    };
    let report =
        match report::report_of_festival(&state.store, range, Some(only), &day, &state.currency)
            .await
        {
            Ok(r) => r,
            Err(e) => match e.downcast::<StoreError>() {
                Ok(e) => return store_failed(Some(Who::of(&session)), &e),
                Err(e) => {
                    page.error = Some(e.to_string());
                    return html(StatusCode::BAD_REQUEST, &page);
                }
            },
        };
    if csv {
        let mut body = Vec::new();
        if let Err(e) = report::write(&report, report::ReportFormat::Csv, &mut body) {
            return store_failed(
                Some(Who::of(&session)),
                &StoreError::Internal(e.to_string()),
            );
        }
        let disposition = format!("attachment; filename=\"cashless-{only}.csv\"");
        let mut response =
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
        if let Ok(v) = HeaderValue::from_str(&disposition) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, v);
        }
        return with_headers(response);
    }
    let offset = day.utc_offset();
    page.table = report
        .sections
        .iter()
        .find(|s| s.name == only)
        .map(|s| report_table(s, offset));
    html(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offsets_read_as_people_say_them() {
        assert_eq!(clock(0), "+0.0 s");
        assert_eq!(clock(-850), "-0.8 s");
        assert_eq!(clock(59_999), "+59.9 s");
        assert_eq!(clock(-60_000), "1 min behind");
        assert_eq!(clock(3 * 3_600_000 + 5 * 60_000), "3 h 05 min ahead");
    }
}
