//! Every code either side speaks: the ledger API's error and decline codes, and the codes of
//! the terminal's JSON-lines events (its own refusals and offline declines). Nothing outside
//! this module spells a code as a string: it names a variant.

use serde::Serialize;

/// Declares [`ErrorCode`] from one table, so that a code's variant, wire spelling and HTTP
/// status are written once and `ALL` cannot miss one.
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $text:literal, $status:expr;)+) => {
        /// Every code of the system, with the HTTP status the ledger answers it with (`None`
        /// for the terminal's own codes, which never cross HTTP).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[serde(rename = $text)] $variant,)+
        }

        impl ErrorCode {
            /// Every code, so that a wire spelling maps back to the enum (and its status and
            /// rules).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)+
                }
            }

            /// The HTTP status that goes with the code, for the codes the ledger answers.
            pub const fn http_status(self) -> Option<u16> {
                match self {
                    $(ErrorCode::$variant => $status,)+
                }
            }
        }
    };
}

codes! {
    // The ledger API's codes (the HTTP contract).
    /// A request that does not follow the contract.
    InvalidRequest = "INVALID_REQUEST", Some(400);
    /// No valid bearer token.
    Unauthorized = "UNAUTHORIZED", Some(401);
    /// The terminal may not do this (kind, staff, another terminal's operation).
    Forbidden = "FORBIDDEN", Some(403);
    /// An unknown card.
    CardNotFound = "CARD_NOT_FOUND", Some(404);
    /// An unknown route.
    NotFound = "NOT_FOUND", Some(404);
    /// A known route with another method.
    MethodNotAllowed = "METHOD_NOT_ALLOWED", Some(405);
    /// The card's balance does not cover the order.
    InsufficientFunds = "INSUFFICIENT_FUNDS", Some(402);
    /// The card is blocked (lost, or in debt).
    CardBlocked = "CARD_BLOCKED", Some(423);
    /// Over a configured limit (a top-up, a balance).
    LimitExceeded = "LIMIT_EXCEEDED", Some(422);
    /// A product not on sale at the terminal's point of sale.
    UnknownProduct = "UNKNOWN_PRODUCT", Some(422);
    /// A line's price or the total differs from the catalog's.
    PriceMismatch = "PRICE_MISMATCH", Some(422);
    /// A product the card's age flag forbids (`under_18` and a product sold from 18).
    AgeRestricted = "AGE_RESTRICTED", Some(422);
    /// The same `client_request_id` with another request.
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED", Some(422);
    /// The same request is being processed.
    DuplicateRequest = "DUPLICATE_REQUEST", Some(409);
    /// The target of a void is already voided.
    AlreadyVoided = "ALREADY_VOIDED", Some(409);
    /// The operation was voided before it arrived (a tombstone).
    OperationVoided = "OPERATION_VOIDED", Some(409);
    /// A card key registration the card's record refuses: it holds a newer key version, or
    /// the card was replaced.
    CardKeyConflict = "CARD_KEY_CONFLICT", Some(409);
    /// A body over its limit.
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", Some(413);
    /// The database is unavailable: retry later.
    DatabaseError = "DATABASE_ERROR", Some(503);
    /// A bug.
    ServerError = "SERVER_ERROR", Some(500);
    // The terminal's own codes (JSON-lines `error` events and offline declines).
    /// A command line that is not a valid command.
    InvalidCommand = "INVALID_COMMAND", None;
    /// A `tap` whose UID is not a card UID.
    InvalidUid = "INVALID_UID", None;
    /// The journal cannot record: nothing can be sold.
    JournalUnavailable = "JOURNAL_UNAVAILABLE", None;
    /// A command that needs a logged-in staff member.
    NotLoggedIn = "NOT_LOGGED_IN", None;
    /// A command for the other kind of terminal (a top-up at a bar, ...).
    WrongTerminalKind = "WRONG_TERMINAL_KIND", None;
    /// No catalog yet: the terminal has never reached the ledger.
    NoCatalog = "NO_CATALOG", None;
    /// `void_last` with nothing to void.
    NothingToVoid = "NOTHING_TO_VOID", None;
    /// Offline: over the per-order or per-card exposure limit.
    OfflineLimit = "OFFLINE_LIMIT", None;
    /// Offline: a card the replica does not know, over the unknown-card limit.
    UnknownCardOffline = "UNKNOWN_CARD_OFFLINE", None;
    /// A bug in the terminal (an adapter fed the flow an input it did not ask for).
    InternalError = "INTERNAL_ERROR", None;
}

impl ErrorCode {
    /// The code with this wire spelling.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == text)
    }

    /// Business declines: the outcome is stored with the idempotency key, like an approval.
    pub fn is_stored_decline(self) -> bool {
        matches!(
            self,
            ErrorCode::InsufficientFunds
                | ErrorCode::CardNotFound
                | ErrorCode::CardBlocked
                | ErrorCode::LimitExceeded
                | ErrorCode::UnknownProduct
                | ErrorCode::PriceMismatch
                | ErrorCode::AgeRestricted
        )
    }
}

impl ErrorCode {
    /// The codes the ledger answers over HTTP (those with a status), in table order.
    pub fn api_codes() -> impl Iterator<Item = ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .filter(|c| c.http_status().is_some())
    }
}

/// The API's schema lists exactly the codes the ledger answers: the terminal's own codes
/// never cross HTTP. The description is the table of codes and statuses.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut table = String::from("| code | HTTP |\n|---|---|\n");
        for code in ErrorCode::api_codes() {
            let status = code.http_status().unwrap_or(500);
            let note = match code {
                ErrorCode::DatabaseError | ErrorCode::ServerError | ErrorCode::DuplicateRequest => {
                    " (retryable)"
                }
                _ => "",
            };
            table.push_str(&format!("| `{}` | {status}{note} |\n", code.as_str()));
        }
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(ErrorCode::api_codes().map(ErrorCode::as_str)))
            .description(Some(table))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_code_has_a_distinct_spelling() {
        let codes = ErrorCode::ALL;
        let spelled: std::collections::HashSet<_> = codes.iter().map(|c| c.as_str()).collect();
        assert_eq!(spelled.len(), codes.len());
        for &c in codes {
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }

    #[test]
    fn the_api_schema_lists_exactly_the_codes_with_a_status() {
        let schema = serde_json::to_value(<ErrorCode as utoipa::PartialSchema>::schema()).unwrap();
        let listed: Vec<&str> = schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let answered: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| c.http_status().is_some())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(listed, answered);
        assert!(listed.contains(&"INSUFFICIENT_FUNDS"));
        assert!(!listed.contains(&"OFFLINE_LIMIT"), "a terminal-only code");
    }
}
