//! What PayPal's JSON means for berth, as pure functions (no I/O, so they run natively in
//! `cargo test`): the order request, the status of an order, errors, webhook events and the
//! body of the signature postback.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::money;

/// Where a payment stands, in berth's terms (the WIT `payment-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    RequiresAction,
    Authorized,
    Captured,
    Voided,
    Refunded,
    PartiallyRefunded,
    Failed,
}

/// Why a call failed (the WIT `payment-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Declined(String),
    Invalid(String),
    Unavailable(String),
    SignatureInvalid(String),
}

/// An amount in berth's minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    pub minor: i64,
    pub currency: String,
}

/// berth's view of a PayPal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub status: Status,
    /// The page the payer approves on, while the order waits for them.
    pub action_url: Option<String>,
    /// Held for `Authorized`, taken for `Captured`, returned so far for the refunded states,
    /// the order's amount otherwise.
    pub amount: Option<Amount>,
}

/// The longest `PayPal-Request-Id` PayPal accepts.
const MAX_REQUEST_ID_LEN: usize = 108;
/// PayPal's limits on purchase-unit fields.
const MAX_CUSTOM_ID_LEN: usize = 127;
const MAX_DESCRIPTION_CHARS: usize = 127;

/// `422` issues that are the payer's or the instrument's refusal: a decline, not a mistake of
/// ours (PayPal's Orders v2 and Payments v2 error references).
const DECLINE_ISSUES: &[&str] = &[
    "INSTRUMENT_DECLINED",
    "PAYER_ACTION_REQUIRED",
    "PAYER_CANNOT_PAY",
    "PAYER_ACCOUNT_LOCKED_OR_CLOSED",
    "PAYER_ACCOUNT_RESTRICTED",
    "PAYEE_BLOCKED_TRANSACTION",
    "TRANSACTION_REFUSED",
    "TRANSACTION_BLOCKED_BY_PAYEE",
    "TRANSACTION_LIMIT_EXCEEDED",
    "TRANSACTION_RECEIVING_LIMIT_EXCEEDED",
    "CARD_EXPIRED",
    "CARD_CLOSED",
    "COMPLIANCE_VIOLATION",
    "MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED",
    "REDIRECT_PAYER_FOR_ALTERNATE_FUNDING",
    "DECLINED_DUE_TO_RELATED_TXN",
];

/// The `PayPal-Request-Id` for berth's idempotency key (plus a step suffix). Keys over PayPal's
/// 108 characters are replaced by their SHA-256, so a long key still names one request.
pub fn request_id(key: &str, suffix: &str) -> String {
    let id = format!("{key}{suffix}");
    if id.len() <= MAX_REQUEST_ID_LEN {
        return id;
    }
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("berth-sha256-{hex}")
}

/// Checks that `id` is a PayPal resource id (upper-case letters and digits), so it can go into a
/// URL path as it is.
pub fn resource_id(what: &str, id: &str) -> Result<String, Failure> {
    let valid = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(id.to_owned())
    } else {
        Err(Failure::Invalid(format!("'{}' is not a PayPal {what} id", cut(id, 80))))
    }
}

/// The `POST /v2/checkout/orders` body: one purchase unit carrying berth's payment reference
/// (as `reference_id` and as `custom_id`, which PayPal echoes in webhooks), no shipping, and
/// the return page when there is one.
pub fn order_request(
    payment_ref: &str,
    description: &str,
    amount: &Amount,
    return_url: Option<&str>,
) -> Result<Value, Failure> {
    if amount.minor <= 0 {
        return Err(Failure::Invalid(format!("amount must be positive (got {})", amount.minor)));
    }
    let value = money::to_paypal_value(amount.minor, &amount.currency).map_err(Failure::Invalid)?;
    if payment_ref.is_empty() || payment_ref.len() > MAX_CUSTOM_ID_LEN {
        return Err(Failure::Invalid(format!("booking-ref must be 1 to {MAX_CUSTOM_ID_LEN} characters")));
    }
    let mut unit = json!({
        "reference_id": payment_ref,
        "custom_id": payment_ref,
        "amount": { "currency_code": amount.currency, "value": value },
    });
    let description: String = description.trim().chars().take(MAX_DESCRIPTION_CHARS).collect();
    if !description.is_empty() {
        unit["description"] = json!(description);
    }
    // Parking ships nothing; PAY_NOW makes the approval final, so no review page follows.
    let mut experience = json!({ "shipping_preference": "NO_SHIPPING", "user_action": "PAY_NOW" });
    if let Some(url) = return_url {
        experience["return_url"] = json!(url);
        experience["cancel_url"] = json!(url);
    }
    Ok(json!({
        "intent": "AUTHORIZE",
        "purchase_units": [unit],
        "payment_source": { "paypal": { "experience_context": experience } },
    }))
}

/// The body of `POST .../authorizations/{id}/capture` or `.../captures/{id}/refund`.
pub fn amount_body(amount: &Amount, final_capture: Option<bool>) -> Result<Value, Failure> {
    if amount.minor <= 0 {
        return Err(Failure::Invalid(format!("amount must be positive (got {})", amount.minor)));
    }
    let value = money::to_paypal_value(amount.minor, &amount.currency).map_err(Failure::Invalid)?;
    let mut body = json!({ "amount": { "currency_code": amount.currency, "value": value } });
    if let Some(final_capture) = final_capture {
        body["final_capture"] = json!(final_capture);
    }
    Ok(body)
}

/// A PayPal `{currency_code, value}` in minor units; `None` when absent or malformed.
pub fn amount_of(value: &Value) -> Option<Amount> {
    let currency = value["currency_code"].as_str()?;
    let minor = money::from_paypal_value(value["value"].as_str()?, currency).ok()?;
    Some(Amount { minor, currency: currency.to_owned() })
}

/// The `href` of the HATEOAS link `rel` of a resource.
pub fn link<'a>(resource: &'a Value, rel: &str) -> Option<&'a str> {
    resource["links"].as_array()?.iter().find(|link| link["rel"] == rel)?["href"].as_str()
}

/// The page the payer approves an order on (`payer-action` when the order was created with a
/// payment source, `approve` otherwise).
pub fn approval_url(order: &Value) -> Option<String> {
    link(order, "payer-action").or_else(|| link(order, "approve")).map(str::to_owned)
}

fn payments(order: &Value) -> &Value {
    &order["purchase_units"][0]["payments"]
}

fn non_empty(list: &Value) -> Option<&Vec<Value>> {
    list.as_array().filter(|items| !items.is_empty())
}

/// The order's current authorization (a reauthorization is appended after the first).
pub fn latest_authorization(order: &Value) -> Option<&Value> {
    non_empty(&payments(order)["authorizations"])?.last()
}

/// The capture a refund applies to: the first that still has money on it, else the first
/// refunded one (a replayed refund must reach PayPal to be answered as the first time).
pub fn refundable_capture(order: &Value) -> Option<&Value> {
    let captures = non_empty(&payments(order)["captures"])?;
    captures
        .iter()
        .find(|capture| matches!(capture["status"].as_str(), Some("COMPLETED" | "PARTIALLY_REFUNDED")))
        .or_else(|| captures.iter().find(|capture| capture["status"] == "REFUNDED"))
}

fn sum(items: &[&Value]) -> Option<Amount> {
    let mut total: Option<Amount> = None;
    for item in items {
        let amount = amount_of(&item["amount"])?;
        total = Some(match total {
            None => amount,
            Some(sum) if sum.currency == amount.currency => {
                Amount { minor: sum.minor.checked_add(amount.minor)?, currency: sum.currency }
            }
            Some(_) => return None,
        });
    }
    total
}

/// berth's view of an order, read from its full representation (`GET /v2/checkout/orders/{id}`
/// or any call made with `Prefer: return=representation`). Reading never moves money: an
/// approved order that nobody has authorized yet still requires action.
pub fn order_view(order: &Value) -> View {
    let order_amount = amount_of(&order["purchase_units"][0]["amount"]);
    let payments = payments(order);
    if let Some(captures) = non_empty(&payments["captures"]) {
        return captures_view(captures, &payments["refunds"]);
    }
    if let Some(authorization) = latest_authorization(order) {
        let amount = amount_of(&authorization["amount"]).or(order_amount);
        let status = match authorization["status"].as_str() {
            // PENDING: held subject to PayPal's review; a capture says if it fails.
            Some("CREATED" | "PENDING") => Status::Authorized,
            Some("CAPTURED" | "PARTIALLY_CAPTURED") => Status::Captured,
            // An expired hold is released like a voided one: nothing was taken.
            Some("VOIDED" | "EXPIRED") => Status::Voided,
            Some("DENIED") => Status::Failed,
            _ => Status::RequiresAction,
        };
        return View { status, action_url: None, amount };
    }
    match order["status"].as_str() {
        Some("VOIDED") => View { status: Status::Voided, action_url: None, amount: order_amount },
        Some("COMPLETED") => View { status: Status::Failed, action_url: None, amount: order_amount },
        _ => View { status: Status::RequiresAction, action_url: approval_url(order), amount: order_amount },
    }
}

fn captures_view(captures: &[Value], refunds: &Value) -> View {
    let by_status = |wanted: &[&str]| -> Vec<&Value> {
        captures.iter().filter(|capture| capture["status"].as_str().is_some_and(|s| wanted.contains(&s))).collect()
    };
    let settled = by_status(&["COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED"]);
    if settled.is_empty() {
        let pending = by_status(&["PENDING"]);
        // A pending capture has not moved the money yet: still a hold.
        let status = if pending.is_empty() { Status::Failed } else { Status::Authorized };
        return View {
            status,
            action_url: None,
            amount: sum(&pending).or_else(|| sum(&captures.iter().collect::<Vec<_>>())),
        };
    }
    let n_refunded = by_status(&["REFUNDED"]).len();
    let n_partly = by_status(&["PARTIALLY_REFUNDED"]).len();
    let refunded: Vec<&Value> = refunds
        .as_array()
        .map(|items| {
            items.iter().filter(|refund| matches!(refund["status"].as_str(), Some("COMPLETED" | "PENDING"))).collect()
        })
        .unwrap_or_default();
    let status = if n_refunded == settled.len() {
        Status::Refunded
    } else if n_refunded + n_partly > 0 {
        Status::PartiallyRefunded
    } else {
        Status::Captured
    };
    let amount = match status {
        Status::Captured => sum(&settled),
        _ => sum(&refunded).or_else(|| sum(&settled)),
    };
    View { status, action_url: None, amount }
}

/// Where a refund leaves its capture: PayPal's own `total_refunded_amount` when the answer has
/// it, else the earlier refunds of the order plus this one.
pub fn refund_status(capture: &Value, refund: &Value, order: &Value) -> Status {
    let captured = amount_of(&capture["amount"]);
    let total = amount_of(&refund["seller_payable_breakdown"]["total_refunded_amount"]).or_else(|| {
        let this_id = refund["id"].as_str();
        let earlier: Vec<&Value> = non_empty(&payments(order)["refunds"])
            .map(|refunds| {
                refunds
                    .iter()
                    .filter(|earlier| earlier["id"].as_str() != this_id)
                    .filter(|earlier| matches!(earlier["status"].as_str(), Some("COMPLETED" | "PENDING")))
                    .collect()
            })
            .unwrap_or_default();
        let mut all = earlier;
        all.push(refund);
        sum(&all)
    });
    match (captured, total) {
        (Some(captured), Some(total)) if total.currency == captured.currency && total.minor >= captured.minor => {
            Status::Refunded
        }
        _ => Status::PartiallyRefunded,
    }
}

/// A PayPal error answer: `{name, message, details: [{issue, description}], debug_id}` for the
/// REST APIs, `{error, error_description}` for OAuth, anything at all from a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub name: String,
    pub issue: Option<String>,
    pub message: String,
    pub debug_id: Option<String>,
}

impl ApiError {
    pub fn parse(status: u16, body: &[u8]) -> Self {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |value: &Value| value.as_str().map(|text| cut(text, 200));
        let detail = &value["details"][0];
        Self {
            status,
            name: text(&value["name"]).or_else(|| text(&value["error"])).unwrap_or_else(|| format!("HTTP {status}")),
            issue: text(&detail["issue"]),
            message: text(&detail["description"])
                .or_else(|| text(&value["message"]))
                .or_else(|| text(&value["error_description"]))
                .unwrap_or_default(),
            debug_id: text(&value["debug_id"]),
        }
    }

    pub fn has_issue(&self, issue: &str) -> bool {
        self.issue.as_deref() == Some(issue)
    }

    /// What berth makes of it: a temporary outage, the payer's refusal, or our mistake.
    pub fn failure(&self) -> Failure {
        let text = self.to_string();
        match self.status {
            408 | 409 | 429 | 500..=599 => Failure::Unavailable(text),
            422 if self.issue.as_deref().is_some_and(|issue| DECLINE_ISSUES.contains(&issue)) => {
                Failure::Declined(text)
            }
            400..=499 => Failure::Invalid(text),
            _ => Failure::Unavailable(text),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "paypal answered {} {}", self.status, self.name)?;
        if let Some(issue) = &self.issue {
            write!(f, " {issue}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(debug_id) = &self.debug_id {
            write!(f, " (debug_id {debug_id})")?;
        }
        Ok(())
    }
}

/// The transmission headers of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmission {
    pub id: String,
    pub time: String,
    pub signature: String,
    pub cert_url: String,
    pub auth_algo: String,
}

impl Transmission {
    /// Reads the `paypal-*` headers (names in any case); a missing one means the delivery cannot
    /// be verified.
    pub fn from_headers(headers: &[(String, String)]) -> Result<Self, Failure> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.trim().to_owned())
                .filter(|value| !value.is_empty())
                .ok_or_else(|| Failure::SignatureInvalid(format!("missing {name} header")))
        };
        Ok(Self {
            id: header("paypal-transmission-id")?,
            time: header("paypal-transmission-time")?,
            signature: header("paypal-transmission-sig")?,
            cert_url: header("paypal-cert-url")?,
            auth_algo: header("paypal-auth-algo")?,
        })
    }
}

/// The body of `POST /v1/notifications/verify-webhook-signature`. The event goes in as the
/// bytes that arrived, spliced in rather than re-serialised: PayPal checks the signature over
/// the CRC32 of exactly those bytes, and a round trip through a JSON value reorders keys.
pub fn verify_request(transmission: &Transmission, webhook_id: &str, body: &[u8]) -> Result<Vec<u8>, Failure> {
    let event = std::str::from_utf8(body).map_err(|_| Failure::Invalid("webhook body is not UTF-8".into()))?;
    match serde_json::from_str::<Value>(event) {
        Ok(Value::Object(_)) => {}
        _ => return Err(Failure::Invalid("webhook body is not a JSON object".into())),
    }
    let head = json!({
        "auth_algo": transmission.auth_algo,
        "cert_url": transmission.cert_url,
        "transmission_id": transmission.id,
        "transmission_sig": transmission.signature,
        "transmission_time": transmission.time,
        "webhook_id": webhook_id,
    })
    .to_string();
    let head = head.strip_suffix('}').expect("invariant: a serialised JSON object ends with '}'");
    Ok(format!("{head},\"webhook_event\":{event}}}").into_bytes())
}

/// The webhook events this plugin acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The payer approved an order: the plugin authorizes it.
    OrderApproved,
    AuthorizationCreated,
    AuthorizationVoided,
    CaptureCompleted,
    /// Capture requested, money not moved yet: still a hold.
    CapturePending,
    /// `PAYMENT.CAPTURE.DECLINED` or `PAYMENT.CAPTURE.DENIED`.
    CaptureFailed,
    /// The resource is the refund; its capture says whether all was returned.
    CaptureRefunded,
}

impl EventKind {
    pub fn parse(event_type: &str) -> Option<Self> {
        Some(match event_type {
            "CHECKOUT.ORDER.APPROVED" => EventKind::OrderApproved,
            "PAYMENT.AUTHORIZATION.CREATED" => EventKind::AuthorizationCreated,
            "PAYMENT.AUTHORIZATION.VOIDED" => EventKind::AuthorizationVoided,
            "PAYMENT.CAPTURE.COMPLETED" => EventKind::CaptureCompleted,
            "PAYMENT.CAPTURE.PENDING" => EventKind::CapturePending,
            "PAYMENT.CAPTURE.DECLINED" | "PAYMENT.CAPTURE.DENIED" => EventKind::CaptureFailed,
            "PAYMENT.CAPTURE.REFUNDED" => EventKind::CaptureRefunded,
            _ => return None,
        })
    }

    /// The status the event reports by itself (the order and refund events need a call first).
    pub fn status(self) -> Status {
        match self {
            EventKind::OrderApproved => Status::Authorized,
            EventKind::AuthorizationCreated | EventKind::CapturePending => Status::Authorized,
            EventKind::AuthorizationVoided => Status::Voided,
            EventKind::CaptureCompleted => Status::Captured,
            EventKind::CaptureFailed => Status::Failed,
            EventKind::CaptureRefunded => Status::PartiallyRefunded,
        }
    }
}

/// A verified event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub kind: EventKind,
    /// The resource's own id (order, authorization, capture or refund).
    pub resource_id: String,
    /// The order the resource belongs to, when the event names it.
    pub order_id: Option<String>,
    /// The authorization a capture came from, when the event names it.
    pub authorization_id: Option<String>,
    /// For a refund: the refunded capture.
    pub capture_id: Option<String>,
    pub amount: Option<Amount>,
}

impl Event {
    /// berth's provider reference for the event: the order id, or, for a resource that names no
    /// order (PayPal's simulator and older deliveries omit `related_ids`), its authorization,
    /// then its capture, then its own id.
    pub fn provider_ref(&self) -> String {
        self.order_id
            .clone()
            .or_else(|| self.authorization_id.clone())
            .or_else(|| self.capture_id.clone())
            .unwrap_or_else(|| self.resource_id.clone())
    }
}

/// The last path segment of a link under `prefix` (`/v2/checkout/orders/`).
fn linked_id(resource: &Value, rel: &str, prefix: &str) -> Option<String> {
    let href = link(resource, rel)?;
    let (_, rest) = href.split_once(prefix)?;
    let id = rest.split(['/', '?']).next()?;
    resource_id("linked", id).ok()
}

/// Reads a webhook event. An event type this plugin does not act on is an invalid request:
/// subscribe the webhook to the handled types only.
pub fn parse_event(event: &Value) -> Result<Event, Failure> {
    let id =
        event["id"].as_str().filter(|id| !id.is_empty()).ok_or_else(|| Failure::Invalid("event has no id".into()))?;
    let event_type = event["event_type"].as_str().unwrap_or_default();
    let kind = EventKind::parse(event_type).ok_or_else(|| {
        Failure::Invalid(format!("event type '{}' is not handled by this plugin", cut(event_type, 80)))
    })?;
    let resource = &event["resource"];
    let resource_id = resource["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Failure::Invalid("event resource has no id".into()))?
        .to_owned();
    let related = &resource["supplementary_data"]["related_ids"];
    let order_id = match kind {
        EventKind::OrderApproved => Some(resource_id.clone()),
        _ => related["order_id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| linked_id(resource, "up", "/v2/checkout/orders/")),
    };
    let capture_id = match kind {
        EventKind::CaptureRefunded => related["capture_id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| linked_id(resource, "up", "/v2/payments/captures/")),
        _ => None,
    };
    let amount = match kind {
        EventKind::OrderApproved => amount_of(&resource["purchase_units"][0]["amount"]),
        _ => amount_of(&resource["amount"]),
    };
    let authorization_id = related["authorization_id"].as_str().map(str::to_owned);
    Ok(Event { id: id.to_owned(), kind, resource_id, order_id, authorization_id, capture_id, amount })
}

/// The status of a capture after a refund (`REFUNDED` when all was returned).
pub fn capture_refund_status(capture: &Value) -> Status {
    if capture["status"] == "REFUNDED" { Status::Refunded } else { Status::PartiallyRefunded }
}

/// `text` cut to at most `max_chars` characters.
pub fn cut(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Amount {
        Amount { minor, currency: "EUR".into() }
    }

    fn eur_json(value: &str) -> Value {
        json!({"currency_code": "EUR", "value": value})
    }

    fn stored(name: &str) -> Vec<u8> {
        let path = format!("{}/../../../../shared/wire-formats/paypal/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_order_request_carries_the_booking_and_a_decimal_amount() {
        let body =
            order_request("pay-1", " Parking, Garage Nord ", &eur(1250), Some("https://berth.example/back")).unwrap();
        assert_eq!(body["intent"], "AUTHORIZE");
        let unit = &body["purchase_units"][0];
        assert_eq!((unit["reference_id"].as_str(), unit["custom_id"].as_str()), (Some("pay-1"), Some("pay-1")));
        assert_eq!(unit["amount"], json!({"currency_code": "EUR", "value": "12.50"}));
        assert_eq!(unit["description"], "Parking, Garage Nord");
        let experience = &body["payment_source"]["paypal"]["experience_context"];
        assert_eq!(experience["return_url"], "https://berth.example/back");
        assert_eq!(experience["shipping_preference"], "NO_SHIPPING");
        let body = order_request("pay-1", "", &Amount { minor: 1500, currency: "JPY".into() }, None).unwrap();
        assert_eq!(body["purchase_units"][0]["amount"]["value"], "1500");
        assert!(body["purchase_units"][0].get("description").is_none());
        assert!(matches!(order_request("pay-1", "x", &eur(0), None), Err(Failure::Invalid(_))));
        assert!(matches!(order_request(&"x".repeat(128), "x", &eur(1), None), Err(Failure::Invalid(_))));
    }

    #[test]
    fn long_keys_become_a_digest_within_paypals_limit() {
        assert_eq!(request_id("booking-1:capture", "-authorize"), "booking-1:capture-authorize");
        let long = request_id(&"k".repeat(200), "");
        assert!(long.len() <= MAX_REQUEST_ID_LEN && long.starts_with("berth-sha256-"));
        assert_eq!(long, request_id(&"k".repeat(200), ""));
        assert_ne!(long, request_id(&"k".repeat(201), ""));
    }

    #[test]
    fn ids_that_would_change_the_url_are_refused() {
        assert_eq!(resource_id("order", "5O190127TN364715T"), Ok("5O190127TN364715T".into()));
        for bad in ["", "../x", "A/B", "A?b=1", "A B"] {
            assert!(resource_id("order", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn orders_are_read_without_moving_money() {
        let created: Value = serde_json::from_slice(&stored("orders.create.response.json")).unwrap();
        let view = order_view(&created);
        assert_eq!(view.status, Status::RequiresAction);
        assert_eq!(view.action_url.as_deref(), Some("https://www.paypal.com/checkoutnow?token=5O190127TN364715T"));
        let approved = json!({
            "id": "O1",
            "status": "APPROVED",
            "purchase_units": [{"amount": {"currency_code": "EUR", "value": "12.50"}}],
        });
        assert_eq!(order_view(&approved).status, Status::RequiresAction);
        assert_eq!(order_view(&approved).amount, Some(eur(1250)));

        let authorized: Value = serde_json::from_slice(&stored("orders.authorize.response.json")).unwrap();
        let view = order_view(&authorized);
        assert_eq!(
            (view.status, view.amount),
            (Status::Authorized, Some(Amount { minor: 10_000, currency: "USD".into() }))
        );
        assert_eq!(latest_authorization(&authorized).unwrap()["id"], "0AW2184448108334S");

        let captured: Value = serde_json::from_slice(&stored("orders.capture.response.json")).unwrap();
        assert_eq!(order_view(&captured).status, Status::Captured);
        assert_eq!(refundable_capture(&captured).unwrap()["id"], "3C679366HH908993F");
    }

    #[test]
    fn captures_and_refunds_decide_the_refunded_states() {
        let order = |capture_status: &str, refunds: Value| {
            json!({"id": "O1", "status": "COMPLETED", "purchase_units": [{"payments": {
                "authorizations": [{"id": "A1", "status": "CAPTURED", "amount": eur_json("12.50")}],
                "captures": [{"id": "C1", "status": capture_status, "amount": eur_json("10.00")}],
                "refunds": refunds,
            }}]})
        };
        let partly = order(
            "PARTIALLY_REFUNDED",
            json!([{"id": "R1", "status": "COMPLETED", "amount": {"currency_code": "EUR", "value": "4.00"}}]),
        );
        assert_eq!(
            order_view(&partly),
            View { status: Status::PartiallyRefunded, action_url: None, amount: Some(eur(400)) }
        );
        let all = order("REFUNDED", json!([]));
        assert_eq!(order_view(&all).status, Status::Refunded);
        assert_eq!(order_view(&order("COMPLETED", Value::Null)).amount, Some(eur(1000)));
        assert_eq!(order_view(&order("PENDING", Value::Null)).status, Status::Authorized);
        assert_eq!(order_view(&order("DECLINED", Value::Null)).status, Status::Failed);

        // A refund answer with PayPal's running total, and one without (summed from the order).
        let capture = json!({"id": "C1", "amount": {"currency_code": "EUR", "value": "10.00"}});
        let refund = |value: &str, total: Option<&str>| {
            let mut refund =
                json!({"id": "R2", "status": "COMPLETED", "amount": {"currency_code": "EUR", "value": value}});
            if let Some(total) = total {
                refund["seller_payable_breakdown"] =
                    json!({"total_refunded_amount": {"currency_code": "EUR", "value": total}});
            }
            refund
        };
        assert_eq!(refund_status(&capture, &refund("6.00", Some("10.00")), &Value::Null), Status::Refunded);
        assert_eq!(refund_status(&capture, &refund("4.00", Some("4.00")), &Value::Null), Status::PartiallyRefunded);
        assert_eq!(refund_status(&capture, &refund("6.00", None), &partly), Status::Refunded);
        assert_eq!(refund_status(&capture, &refund("5.00", None), &partly), Status::PartiallyRefunded);
    }

    #[test]
    fn errors_are_declines_outages_or_mistakes() {
        let body = |status: &str, issue: &str| {
            let details = json!([{"issue": issue, "description": "d"}]);
            json!({"name": status, "message": "m", "details": details, "debug_id": "abc"}).to_string()
        };
        let declined = ApiError::parse(422, body("UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED").as_bytes());
        assert_eq!(
            declined.failure(),
            Failure::Declined("paypal answered 422 UNPROCESSABLE_ENTITY INSTRUMENT_DECLINED: d (debug_id abc)".into())
        );
        let voided = ApiError::parse(422, body("UNPROCESSABLE_ENTITY", "AUTHORIZATION_VOIDED").as_bytes());
        assert!(matches!(voided.failure(), Failure::Invalid(_)));
        assert!(voided.has_issue("AUTHORIZATION_VOIDED"));
        for status in [500, 502, 503, 409, 429] {
            assert!(matches!(ApiError::parse(status, b"<html>oops</html>").failure(), Failure::Unavailable(_)));
        }
        for status in [400, 401, 403, 404] {
            assert!(matches!(ApiError::parse(status, b"").failure(), Failure::Invalid(_)));
        }
        let oauth =
            ApiError::parse(401, br#"{"error":"invalid_client","error_description":"Client Authentication failed"}"#);
        assert_eq!(oauth.to_string(), "paypal answered 401 invalid_client: Client Authentication failed");
    }

    #[test]
    fn the_postback_embeds_the_event_bytes_as_they_arrived() {
        let headers: Vec<(String, String)> = serde_json::from_slice::<serde_json::Map<String, Value>>(&stored(
            "webhook.PAYMENT.CAPTURE.COMPLETED.headers.json",
        ))
        .unwrap()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_uppercase(), value.as_str().unwrap().to_owned()))
        .collect();
        let transmission = Transmission::from_headers(&headers).unwrap();
        assert_eq!(transmission.id, "1c6772d0-5106-11ef-9b66-89f3f924d48a");
        let body = stored("webhook.PAYMENT.CAPTURE.COMPLETED.body.json");
        let request = verify_request(&transmission, "WEBHOOK_ID", &body).unwrap();
        let text = String::from_utf8(request).unwrap();
        let embedded = format!(",\"webhook_event\":{}}}", String::from_utf8(body.clone()).unwrap());
        assert!(text.ends_with(&embedded), "{text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["webhook_id"], "WEBHOOK_ID");
        assert_eq!(parsed["auth_algo"], "SHA256withRSA");

        assert!(matches!(verify_request(&transmission, "W", b"[1]"), Err(Failure::Invalid(_))));
        assert!(matches!(verify_request(&transmission, "W", b"{\"a\":1} junk"), Err(Failure::Invalid(_))));
        let missing = &headers[..3];
        assert!(matches!(Transmission::from_headers(missing), Err(Failure::SignatureInvalid(_))));
    }

    #[test]
    fn stored_deliveries_name_their_order_or_fall_back() {
        let event = |name: &str| parse_event(&serde_json::from_slice(&stored(name)).unwrap()).unwrap();
        let completed = event("webhook.PAYMENT.CAPTURE.COMPLETED.body.json");
        assert_eq!(completed.kind, EventKind::CaptureCompleted);
        assert_eq!(completed.id, "WH-58D329510W468432D-8HN650336L201105X");
        assert_eq!(completed.order_id.as_deref(), Some("1AB234567A1234567"));
        assert_eq!(completed.amount, Some(Amount { minor: 3000, currency: "USD".into() }));
        // No related_ids: the `up` link names the order.
        let pending = event("webhook.PAYMENT.CAPTURE.PENDING.body.json");
        assert_eq!(
            (pending.kind.status(), pending.order_id.as_deref()),
            (Status::Authorized, Some("8PR65097T8571330M"))
        );
        let declined = event("webhook.PAYMENT.CAPTURE.DECLINED.body.json");
        assert_eq!((declined.kind.status(), declined.order_id.as_deref()), (Status::Failed, Some("48R416400V564864N")));
        // A refund names only its capture.
        let refunded = event("webhook.PAYMENT.CAPTURE.REFUNDED.body.json");
        assert_eq!(refunded.order_id, None);
        assert_eq!(refunded.capture_id.as_deref(), Some("0JF852973C016714D"));
        assert_eq!(refunded.provider_ref(), "0JF852973C016714D");

        let unknown = json!({"id": "WH-1", "event_type": "CUSTOMER.DISPUTE.CREATED", "resource": {"id": "D1"}});
        assert!(matches!(parse_event(&unknown), Err(Failure::Invalid(m)) if m.contains("CUSTOMER.DISPUTE.CREATED")));
        assert!(parse_event(&json!({"event_type": "PAYMENT.CAPTURE.COMPLETED"})).is_err());
    }
}
