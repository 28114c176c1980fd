//! Headquarters in a browser: server-rendered pages under `/hq/`, served by the ledger
//! itself with everything they need (the style sheet is embedded in the binary; nothing
//! comes from a CDN).
//!
//! The overview and the fleet update themselves (htmx polls the page every
//! [`LIVE_UPDATE_S`] seconds and swaps its `#live` part); without script they are ordinary
//! pages. htmx and Chart.js are vendored in `assets/vendor/` and served from the binary.
//!
//! Pages take turns: at most [`PAGES_AT_ONCE`] are served at once, each followed by a pause
//! that keeps them to [`PAGE_TIME_SHARE_PCT`] of the time (the rest wait, then 503), so a dashboard hammered by many browsers cannot take the ledger's threads and
//! database connections from the payments.
//!
//! Templates are askama's: compiled into the binary and checked against their data at
//! build time (a misspelt field does not build), escaped for HTML by default.
//!
//! Every page needs a session ([`auth`]): a random cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` under TLS) whose SHA-256 the database keeps, so sessions survive a restart and
//! work across ledger processes. Every form carries the session's CSRF token (the login
//! form a token of its own, in a cookie); a POST without it changes nothing. Each response
//! carries a Content-Security-Policy that allows no inline script or style.
//!
//! Pages:
//! - `GET /hq/login`, `POST /hq/login`, `POST /hq/logout`;
//! - `GET /hq/` goes to the overview;
//! - `GET /hq/overview[?day=YYYY-MM-DD]`: a festival day's sales and top-ups per hour and
//!   per point of sale (tables, and Chart.js charts over them), online against offline, the
//!   money on cards and the cards deepest in debt ([`super::overview`]);
//! - `GET /hq/fleet`: every terminal, marked when it needs a person ([`super::fleet`]);
//! - `GET /hq/cards?uid=`, `GET /hq/cards/{uid}`; `POST .../block`, `.../unblock` (desk
//!   and admin);
//! - `GET /hq/shifts`: every shift close-out with its differences;
//! - `GET /hq/stripe[?all=yes]`: Stripe events needing a person (or the newest);
//! - `GET /hq/reports?section=&from=&to=[&format=csv]`: each section of `ledger report` as
//!   a page, or its CSV;
//! - `GET /hq/operators`, `POST /hq/operators`, `POST /hq/operators/{name}/disable|enable`
//!   (admin).

pub mod auth;
mod overview_page;
mod pages;
mod turns;

pub use turns::{PAGE_PAUSE_MAX_MS, PAGE_TIME_SHARE_PCT, PAGE_WAIT_MS, PAGES_AT_ONCE};

use super::api::AppState;
use super::fleet::FleetRules;
use super::store::LedgerStore;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

/// How often the live pages ask again, in seconds.
pub const LIVE_UPDATE_S: u32 = 10;

/// Largest form body a page takes.
pub const FORM_BODY_LIMIT_BYTES: usize = 8 * 1024;

/// What the pages need beyond the API's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HqSettings {
    /// When a terminal needs a person.
    pub fleet: FleetRules,
    /// Cookies get `Secure` (the ledger serves HTTPS).
    pub secure_cookies: bool,
    /// When a festival day starts, and the festival's offset (the reports' dates and hours).
    pub festival_day: crate::domain::FestivalDay,
}

/// The `/hq` routes.
pub fn router<S: LedgerStore>() -> Router<AppState<S>> {
    Router::new()
        .route("/hq", get(pages::home))
        .route("/hq/", get(pages::home))
        .route(
            "/hq/login",
            get(pages::login_page::<S>).post(pages::login::<S>),
        )
        .route("/hq/logout", post(pages::logout::<S>))
        .route("/hq/overview", get(overview_page::overview::<S>))
        .route("/hq/fleet", get(pages::fleet::<S>))
        .route("/hq/reports", get(pages::reports::<S>))
        .route("/hq/shifts", get(pages::shifts::<S>))
        .route("/hq/stripe", get(pages::stripe::<S>))
        .route("/hq/cards", get(pages::card_search::<S>))
        .route("/hq/cards/{uid}", get(pages::card::<S>))
        .route("/hq/cards/{uid}/{action}", post(pages::card_action::<S>))
        .route(
            "/hq/operators",
            get(pages::operators::<S>).post(pages::add_operator::<S>),
        )
        .route(
            "/hq/operators/{name}/{action}",
            post(pages::operator_action::<S>),
        )
        .route("/hq/assets/{file}", get(pages::asset))
        .route("/hq/{*rest}", get(pages::not_found).post(pages::not_found))
        .layer(axum::middleware::from_fn(turns::take_turn))
        .layer(DefaultBodyLimit::max(FORM_BODY_LIMIT_BYTES))
}
