//! Stripe webhooks, the pure part: the `Stripe-Signature` check and the reading of the events
//! the ledger acts on. No IO and no clock: the caller passes `now`.
//!
//! The signature is Stripe's scheme: `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]`,
//! where each `v1` is the hex HMAC-SHA256 of `"<t>.<raw body>"` keyed with an endpoint secret.
//! Any `v1` matching any configured secret passes (secrets rotate); `v0` is ignored; the
//! comparison is constant-time (the `hmac` crate's `verify_slice`); a timestamp older than
//! the tolerance is refused (a replayed delivery). A timestamp in the future is accepted, as
//! Stripe's own libraries do: it is signed, so only Stripe could have set it, and refusing it
//! would only turn a ledger clock that runs slow into a webhook outage.

use crate::domain::{CardUid, Cents};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

/// Longest `Stripe-Signature` header read at all.
pub const SIGNATURE_HEADER_BYTES_MAX: usize = 4096;
/// `v1` signatures looked at per header, at most (a rotation has two or three).
pub const SIGNATURES_MAX: usize = 8;
/// Longest Stripe id kept (`evt_...`, `cs_...`, `pi_...`, `ch_...`).
pub const STRIPE_ID_LEN_MAX: usize = 255;
/// The largest online top-up credited, in cents (Stripe's own ceiling for one payment is
/// 999,999.99 in most currencies).
pub const STRIPE_AMOUNT_CENTS_MAX: i64 = 99_999_999;

/// Why a delivery's signature is refused. Each is a 400 with nothing written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("no Stripe-Signature header")]
    Missing,
    /// A header that is not `t=...,v1=...`.
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    /// No `v1` signature (a `v0` alone does not count).
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1,
    /// The timestamp is older than the tolerance.
    #[error("the signature's timestamp is {age_s} s old, more than the {tolerance_s} s allowed")]
    Stale {
        /// Seconds between the timestamp and now.
        age_s: i64,
        /// The configured tolerance.
        tolerance_s: i64,
    },
    /// No `v1` matches any secret.
    #[error("no v1 signature matches a configured webhook secret")]
    Mismatch,
}

/// Checks `header` (the `Stripe-Signature` value) against the raw `body`, the endpoint
/// `secrets`, and `now_unix` within `tolerance_s`.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now_unix: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(SignatureError::Malformed("too long"));
    }
    let mut timestamp: Option<i64> = None;
    let mut v1: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("an element without '='"))?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("two timestamps"));
                }
                let t = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed("a timestamp that is not a number"))?;
                timestamp = Some(t);
            }
            "v1" => {
                // A signature that is not hex cannot match; it is skipped like a wrong one.
                if v1.len() < SIGNATURES_MAX
                    && let Ok(bytes) = hex::decode(value)
                {
                    v1.push(bytes);
                }
            }
            // v0 (test mode's legacy scheme) and future schemes are ignored.
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed("no timestamp"))?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1);
    }
    let age_s = now_unix.saturating_sub(t);
    if age_s > tolerance_s {
        return Err(SignatureError::Stale { age_s, tolerance_s });
    }
    // One MAC per secret, checked against every v1 (a clone per comparison: `verify_slice`
    // consumes it).
    for mac in secrets
        .iter()
        .filter_map(|secret| signed_payload(secret, t, body))
    {
        if v1
            .iter()
            .any(|signature| mac.clone().verify_slice(signature).is_ok())
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// The HMAC-SHA256 of Stripe's signed payload `"<t>.<body>"` with `secret`, not yet finalized.
/// `None` cannot happen (HMAC takes keys of any length).
fn signed_payload(secret: &str, t: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The hex `v1` signature of `body` at `t` with `secret` (what Stripe sends; for tests and
/// tools that replay events).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    signed_payload(secret, t, body)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// An event's envelope: every Stripe event has these.
#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: EnvelopeData,
}

#[derive(Debug, Deserialize)]
struct EnvelopeData {
    object: Value,
}

/// Why an event body is refused (400, nothing written): not an event at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Stripe event: {0}")]
pub struct MalformedEvent(pub String);

/// What an event asks of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeEvent {
    /// A checkout session was paid: credit the card, once per session.
    SessionPaid(PaidSession),
    /// A charge was refunded (in part or in full): reverse up to `amount_refunded`.
    ChargeRefunded(RefundedCharge),
    /// A checkout session whose payment is not (yet) complete: nothing to do.
    Unpaid {
        /// The event.
        event_id: String,
    },
    /// An event the ledger cannot apply, recorded and logged for an operator; no money
    /// moves. A checkout session it cannot credit (wrong currency, no or bad card UID, a
    /// non-positive or huge amount), or a refund in another currency than the festival's:
    /// every credit is in the festival's currency (a session in another is refused), so such
    /// a refund cannot be a refund of a credit, whether its session came first or not.
    Refused {
        /// The event.
        event_id: String,
        /// The event's type.
        event_type: String,
        /// The checkout session (a session's own id; a refund does not name one).
        session_id: Option<String>,
        /// The payment intent (a refund's, through which the store finds its session).
        payment_intent: Option<String>,
        /// Why, for the operator.
        reason: String,
    },
    /// Another event type: acknowledged, nothing to do.
    Ignored {
        /// The event.
        event_id: String,
        /// Its type.
        event_type: String,
    },
}

/// A paid checkout session to credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidSession {
    /// `evt_...`.
    pub event_id: String,
    /// `checkout.session.completed` or `checkout.session.async_payment_succeeded`.
    pub event_type: String,
    /// `cs_...`: a session is credited once, whatever the events.
    pub session_id: String,
    /// `pi_...`, through which refunds find the session.
    pub payment_intent: Option<String>,
    /// The card to credit (`metadata.card_uid`).
    pub card_uid: CardUid,
    /// `amount_total`.
    pub amount: Cents,
    /// The event's creation time (unix seconds).
    pub created_unix: Option<i64>,
}

/// A refunded charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundedCharge {
    /// `evt_...`.
    pub event_id: String,
    /// `ch_...`.
    pub charge_id: String,
    /// `pi_...`: the session credited through it.
    pub payment_intent: Option<String>,
    /// Everything refunded on this charge so far (Stripe's `amount_refunded` is cumulative),
    /// in the festival's currency (a refund in another is [`StripeEvent::Refused`]).
    pub amount_refunded: Cents,
}

fn id_field(object: &Value, key: &str) -> Option<String> {
    object
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= STRIPE_ID_LEN_MAX)
        .map(str::to_owned)
}

/// Reads an event body. `currency` is the festival's (ISO code; Stripe writes it lowercase).
pub fn parse_event(body: &[u8], currency: &str) -> Result<StripeEvent, MalformedEvent> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| MalformedEvent(e.to_string()))?;
    if envelope.id.is_empty() || envelope.id.len() > STRIPE_ID_LEN_MAX {
        return Err(MalformedEvent("id is empty or too long".into()));
    }
    if envelope.event_type.is_empty() || envelope.event_type.len() > STRIPE_ID_LEN_MAX {
        return Err(MalformedEvent("type is empty or too long".into()));
    }
    let object = envelope.data.object;
    if !object.is_object() {
        return Err(MalformedEvent("data.object is not an object".into()));
    }
    let event_id = envelope.id;
    let event_type = envelope.event_type;
    match event_type.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let session_id = id_field(&object, "id")
                .ok_or_else(|| MalformedEvent("a checkout session without an id".into()))?;
            if object.get("payment_status").and_then(Value::as_str) != Some("paid") {
                return Ok(StripeEvent::Unpaid { event_id });
            }
            let refuse = |reason: String| StripeEvent::Refused {
                event_id: event_id.clone(),
                event_type: event_type.clone(),
                session_id: Some(session_id.clone()),
                payment_intent: None,
                reason,
            };
            let session_currency = object
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !session_currency.eq_ignore_ascii_case(currency) {
                return Ok(refuse(format!(
                    "paid in {session_currency:?}, but the festival's currency is {currency}"
                )));
            }
            let Some(uid_text) = object
                .get("metadata")
                .and_then(|m| m.get("card_uid"))
                .and_then(Value::as_str)
            else {
                return Ok(refuse("metadata.card_uid is missing".into()));
            };
            let Ok(card_uid) = CardUid::parse(uid_text) else {
                return Ok(refuse(format!(
                    "metadata.card_uid {:?} is not a card UID",
                    uid_text.chars().take(40).collect::<String>()
                )));
            };
            let amount = match object.get("amount_total").and_then(Value::as_i64) {
                Some(a) if (1..=STRIPE_AMOUNT_CENTS_MAX).contains(&a) => Cents::new(a),
                other => {
                    return Ok(refuse(format!(
                        "amount_total {other:?} is not 1 to {STRIPE_AMOUNT_CENTS_MAX} cents"
                    )));
                }
            };
            Ok(StripeEvent::SessionPaid(PaidSession {
                payment_intent: id_field(&object, "payment_intent"),
                created_unix: object.get("created").and_then(Value::as_i64),
                event_id,
                event_type,
                session_id,
                card_uid,
                amount,
            }))
        }
        "charge.refunded" => {
            let charge_id = id_field(&object, "id")
                .ok_or_else(|| MalformedEvent("a charge without an id".into()))?;
            let amount_refunded = object
                .get("amount_refunded")
                .and_then(Value::as_i64)
                .filter(|a| (0..=STRIPE_AMOUNT_CENTS_MAX).contains(a))
                .ok_or_else(|| {
                    MalformedEvent(format!(
                        "amount_refunded is not 0 to {STRIPE_AMOUNT_CENTS_MAX} cents"
                    ))
                })?;
            let payment_intent = id_field(&object, "payment_intent");
            let refund_currency = object
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !refund_currency.eq_ignore_ascii_case(currency) {
                // Refused here, before the store sees it: it never waits for its session,
                // so it can never be applied when that session arrives.
                return Ok(StripeEvent::Refused {
                    event_id,
                    event_type,
                    session_id: None,
                    payment_intent,
                    reason: format!(
                        "charge {charge_id} refunded in {refund_currency:?}, but the festival's currency (every credit's) is {currency}"
                    ),
                });
            }
            Ok(StripeEvent::ChargeRefunded(RefundedCharge {
                event_id,
                charge_id,
                payment_intent,
                amount_refunded: Cents::new(amount_refunded),
            }))
        }
        _ => Ok(StripeEvent::Ignored {
            event_id,
            event_type,
        }),
    }
}

/// How much of a credited session a refund event reverses now: Stripe reports the charge's
/// cumulative `amount_refunded`, so the reversal is what it adds to what was already reversed,
/// never more than the credit. Events in any order, or twice, reverse each cent once.
pub fn refund_delta(credited: Cents, already_reversed: Cents, amount_refunded: Cents) -> Cents {
    let target = amount_refunded.get().min(credited.get());
    Cents::new((target - already_reversed.get()).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_767_225_600;

    fn header(t: i64, sigs: &[String]) -> String {
        let mut h = format!("t={t}");
        for s in sigs {
            h.push_str(&format!(",v1={s}"));
        }
        h
    }

    #[test]
    fn a_good_signature_passes_and_everything_else_is_refused() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(SECRET, NOW, body);
        let secrets = vec![SECRET.to_owned()];
        let check = |h: Option<&str>, b: &[u8]| verify_signature(h, b, &secrets, NOW, 300);
        assert_eq!(
            check(Some(&header(NOW, std::slice::from_ref(&good))), body),
            Ok(())
        );
        // Within the tolerance, either side.
        assert_eq!(
            verify_signature(
                Some(&header(NOW - 300, &[sign(SECRET, NOW - 300, body)])),
                body,
                &secrets,
                NOW,
                300
            ),
            Ok(())
        );
        assert_eq!(check(None, body), Err(SignatureError::Missing));
        assert_eq!(
            check(
                Some(&header(NOW, std::slice::from_ref(&good))),
                br#"{"id":"evt_2"}"#
            ),
            Err(SignatureError::Mismatch)
        );
        let old = NOW - 301;
        assert!(matches!(
            check(Some(&header(old, &[sign(SECRET, old, body)])), body),
            Err(SignatureError::Stale { age_s: 301, .. })
        ));
        // The future is accepted, as Stripe's libraries do (a slow ledger clock is no outage).
        let future = NOW + 3_600;
        assert_eq!(
            check(Some(&header(future, &[sign(SECRET, future, body)])), body),
            Ok(())
        );
        // v0 alone is no signature; a bad v1 beside a good one passes.
        assert_eq!(
            check(Some(&format!("t={NOW},v0={good}")), body),
            Err(SignatureError::NoV1)
        );
        assert_eq!(
            check(
                Some(&header(NOW, &["00ff".into(), "zz".into(), good.clone()])),
                body
            ),
            Ok(())
        );
        for garbage in [
            "",
            "garbage",
            "t=abc,v1=00",
            "v1=00",
            "t=1,t=2,v1=00",
            "t=1,v1",
        ] {
            assert!(
                matches!(
                    check(Some(garbage), body),
                    Err(SignatureError::Malformed(_))
                ),
                "{garbage:?}"
            );
        }
        // The previous secret during a rotation.
        let rotated = vec!["whsec_new".to_owned(), SECRET.to_owned()];
        assert_eq!(
            verify_signature(Some(&header(NOW, &[good])), body, &rotated, NOW, 300),
            Ok(())
        );
    }

    fn session(payment_status: &str, currency: &str, uid: Option<&str>, amount: i64) -> Vec<u8> {
        let mut metadata = serde_json::Map::new();
        if let Some(uid) = uid {
            metadata.insert("card_uid".into(), uid.into());
        }
        serde_json::json!({
            "id": "evt_1", "type": "checkout.session.completed",
            "data": {"object": {"id": "cs_1", "payment_status": payment_status,
                "currency": currency, "amount_total": amount, "payment_intent": "pi_1",
                "metadata": metadata}}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn paid_sessions_are_read_and_the_others_are_told_apart() {
        let paid = parse_event(&session("paid", "eur", Some("04A1B2C3D4E5F6"), 2500), "EUR");
        let Ok(StripeEvent::SessionPaid(p)) = paid else {
            panic!("{paid:?}")
        };
        assert_eq!(
            (p.session_id.as_str(), p.payment_intent.as_deref(), p.amount),
            ("cs_1", Some("pi_1"), Cents::new(2500))
        );
        assert!(matches!(
            parse_event(
                &session("unpaid", "eur", Some("04A1B2C3D4E5F6"), 2500),
                "EUR"
            ),
            Ok(StripeEvent::Unpaid { .. })
        ));
        for (body, why) in [
            (session("paid", "usd", Some("04A1B2C3D4E5F6"), 2500), "usd"),
            (session("paid", "eur", None, 2500), "missing"),
            (session("paid", "eur", Some("nope"), 2500), "not a card UID"),
            (
                session("paid", "eur", Some("04A1B2C3D4E5F6"), 0),
                "amount_total",
            ),
            (
                session("paid", "eur", Some("04A1B2C3D4E5F6"), -5),
                "amount_total",
            ),
        ] {
            match parse_event(&body, "EUR") {
                Ok(StripeEvent::Refused { reason, .. }) => {
                    assert!(reason.contains(why), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            parse_event(
                br#"{"id":"evt_9","type":"invoice.paid","data":{"object":{}}}"#,
                "EUR"
            ),
            Ok(StripeEvent::Ignored { .. })
        ));
        for bad in [
            &b"not json"[..],
            br#"{"id":"evt_1"}"#,
            br#"{"id":"","type":"x","data":{"object":{}}}"#,
            br#"{"id":"e","type":"x","data":{"object":3}}"#,
        ] {
            assert!(parse_event(bad, "EUR").is_err());
        }
    }

    fn charge_refunded(currency: Option<&str>) -> Vec<u8> {
        let mut charge = serde_json::json!({"id": "ch_1", "amount_refunded": 1000,
            "payment_intent": "pi_1"});
        if let Some(currency) = currency {
            charge["currency"] = currency.into();
        }
        serde_json::json!({"id": "evt_2", "type": "charge.refunded", "data": {"object": charge}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_refund_in_another_currency_than_the_festivals_is_refused() {
        for currency in ["eur", "EUR"] {
            let read = parse_event(&charge_refunded(Some(currency)), "EUR");
            let Ok(StripeEvent::ChargeRefunded(r)) = read else {
                panic!("{currency}: {read:?}")
            };
            assert_eq!(
                (r.payment_intent.as_deref(), r.amount_refunded),
                (Some("pi_1"), Cents::new(1000))
            );
        }
        for (currency, why) in [(Some("usd"), "\"usd\""), (None, "\"\"")] {
            match parse_event(&charge_refunded(currency), "EUR") {
                Ok(StripeEvent::Refused {
                    event_id,
                    event_type,
                    session_id: None,
                    payment_intent,
                    reason,
                }) => {
                    assert_eq!(
                        (event_id.as_str(), event_type.as_str()),
                        ("evt_2", "charge.refunded")
                    );
                    // The store finds the session through it, for the operator.
                    assert_eq!(payment_intent.as_deref(), Some("pi_1"));
                    assert!(reason.contains(why) && reason.contains("ch_1"), "{reason}");
                    assert!(reason.contains("EUR"), "{reason}");
                }
                other => panic!("{currency:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn refunds_reverse_each_cent_once_in_any_order() {
        let c = |n| Cents::new(n);
        assert_eq!(refund_delta(c(2500), c(0), c(1000)), c(1000));
        assert_eq!(refund_delta(c(2500), c(1000), c(1000)), c(0));
        assert_eq!(refund_delta(c(2500), c(1000), c(2500)), c(1500));
        // A later event carrying the larger total came first.
        assert_eq!(refund_delta(c(2500), c(2500), c(1000)), c(0));
        // Never more than was credited.
        assert_eq!(refund_delta(c(2500), c(0), c(9000)), c(2500));
    }
}
