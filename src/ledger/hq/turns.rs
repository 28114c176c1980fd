//! Pages take turns, so that headquarters never gets in the way of payments.

use super::pages::message;
use crate::ledger::hq::auth;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

/// Pages served at once, at most (the style sheet, scripts and the login aside, which have
/// their own bounds); the rest wait their turn.
pub const PAGES_AT_ONCE: usize = 1;
/// The share of the time pages may take, in percent: after a page that took `t`, the next
/// turn comes `t * (100 / PAGE_TIME_SHARE_PCT - 1)` later. However many browsers hammer the
/// dashboard, it then takes at most this share of one core (and of one database connection)
/// from the payments; cheap pages come often, expensive ones less often.
pub const PAGE_TIME_SHARE_PCT: u32 = 10;
/// How long a page waits for its turn before it is answered 503.
pub const PAGE_WAIT_MS: u64 = 5000;
/// The pause after a page, at most: one slow page (a long report, a password hashed) does
/// not hold every other page up for long.
pub const PAGE_PAUSE_MAX_MS: u64 = 1000;

/// Serves a page when its turn comes ([`PAGES_AT_ONCE`], [`PAGE_TIME_SHARE_PCT`]); 503 after
/// [`PAGE_WAIT_MS`] of waiting.
pub(crate) async fn take_turn(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Not in the queue: the assets and the login (bounded on their own), the desk's and
    // admins' changes (a block is urgent, and rare), and requests without a session cookie
    // (they are sent to the login page at once; they must not fill the queue).
    let path = request.uri().path();
    let no_session = super::pages::cookie_of(request.headers(), auth::SESSION_COOKIE).is_none();
    if path.starts_with("/hq/assets/")
        || path == "/hq/login"
        || request.method() == axum::http::Method::POST
        || no_session
    {
        return next.run(request).await;
    }
    static TURNS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    let turns =
        TURNS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(PAGES_AT_ONCE)));
    let wait = std::time::Duration::from_millis(PAGE_WAIT_MS);
    match tokio::time::timeout(wait, std::sync::Arc::clone(turns).acquire_owned()).await {
        Ok(Ok(turn)) => {
            let started = std::time::Instant::now();
            let response = next.run(request).await;
            // The turn passes on only after the page's share of the time.
            let rest = (started.elapsed() * (100 / PAGE_TIME_SHARE_PCT - 1))
                .min(std::time::Duration::from_millis(PAGE_PAUSE_MAX_MS));
            tokio::spawn(async move {
                tokio::time::sleep(rest).await;
                drop(turn);
            });
            response
        }
        _ => {
            let mut response = message(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "Busy",
                "Headquarters' pages are busy; try again in a moment. Payments are not affected.",
                None,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}
