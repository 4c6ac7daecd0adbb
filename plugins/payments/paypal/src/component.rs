//! The component: the WIT exports, PayPal's REST calls through the host's HTTP import, and the
//! OAuth token cache. What the answers mean is decided in [`crate::model`].

// The generated export glue is `unsafe` (raw ABI functions); it is wit-bindgen's, not ours.
#![allow(unsafe_code)]

use std::sync::Mutex;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::model::{self, Amount, ApiError, Event, EventKind, Failure, Status, Transmission, View};

wit_bindgen::generate!({ path: "../../wit", world: "payment-provider" });

use berth::plugin::{clock, config, http, log};
use exports::berth::plugin::payment::{
    AuthorizeRequest, Guest, Money, PaymentError, PaymentEvent, PaymentState, PaymentStatus, Webhook,
};

struct Plugin;

export!(Plugin);

/// A token is renewed this long before PayPal says it expires.
const TOKEN_MARGIN_MS: u64 = 60_000;

/// The OAuth access token, kept between calls on this instance (PayPal issues it for hours).
static TOKEN: Mutex<Option<Token>> = Mutex::new(None);

struct Token {
    access_token: String,
    expires_at_ms: u64,
}

/// Why a PayPal call failed: PayPal's own answer (flows look at its `issue`), or anything else.
enum CallError {
    Api(ApiError),
    Failed(Failure),
}

impl From<Failure> for CallError {
    fn from(failure: Failure) -> Self {
        CallError::Failed(failure)
    }
}

impl From<CallError> for Failure {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Api(error) => error.failure(),
            CallError::Failed(failure) => failure,
        }
    }
}

impl From<Failure> for PaymentError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Declined(reason) => PaymentError::Declined(reason),
            Failure::Invalid(reason) => PaymentError::InvalidRequest(reason),
            Failure::Unavailable(reason) => PaymentError::Unavailable(reason),
            Failure::SignatureInvalid(reason) => PaymentError::SignatureInvalid(reason),
        }
    }
}

impl From<CallError> for PaymentError {
    fn from(error: CallError) -> Self {
        Failure::from(error).into()
    }
}

fn status(status: Status) -> PaymentStatus {
    match status {
        Status::RequiresAction => PaymentStatus::RequiresAction,
        Status::Authorized => PaymentStatus::Authorized,
        Status::Captured => PaymentStatus::Captured,
        Status::Voided => PaymentStatus::Voided,
        Status::Refunded => PaymentStatus::Refunded,
        Status::PartiallyRefunded => PaymentStatus::PartiallyRefunded,
        Status::Failed => PaymentStatus::Failed,
    }
}

fn amount(money: &Money) -> Amount {
    Amount { minor: money.amount_minor, currency: money.currency.clone() }
}

fn money(amount: Amount) -> Money {
    Money { amount_minor: amount.minor, currency: amount.currency }
}

/// The answer for `order_id` in the state `view`; `fallback` when PayPal's answer has no amount.
fn state(order_id: &str, view: View, fallback: &Money) -> PaymentState {
    PaymentState {
        provider_ref: order_id.to_owned(),
        status: status(view.status),
        action_url: view.action_url,
        amount: view.amount.map(money).unwrap_or_else(|| fallback.clone()),
    }
}

fn no_amount() -> Money {
    Money { amount_minor: 0, currency: String::new() }
}

fn header(name: &str, value: impl Into<String>) -> http::Header {
    http::Header { name: name.into(), value: value.into() }
}

fn send(request: &http::Request) -> Result<http::Response, CallError> {
    http::send(request).map_err(|error| {
        let reason = match error {
            http::HttpError::Denied(reason) => format!("the host refused the request to paypal: {reason}"),
            http::HttpError::Timeout => "paypal did not answer in time".into(),
            http::HttpError::TooLarge => "paypal's answer is over the response-size cap".into(),
            http::HttpError::Failed(reason) => format!("request to paypal failed: {reason}"),
        };
        CallError::Failed(Failure::Unavailable(reason))
    })
}

fn config_value(key: &str) -> Result<String, Failure> {
    config::get(key)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| Failure::Invalid(format!("the plugin's configuration has no {key}")))
}

/// PayPal's REST API for one call. The secret stays in here: it is sent, never logged or put
/// in an error.
struct Client {
    base_url: String,
    client_id: String,
    client_secret: String,
}

impl Client {
    fn from_config() -> Result<Self, Failure> {
        Ok(Self {
            base_url: config_value("base_url")?.trim_end_matches('/').to_owned(),
            client_id: config_value("client_id")?,
            client_secret: config_value("client_secret")?,
        })
    }

    /// A cached token, or a new one (`POST /v1/oauth2/token`, client credentials) when there is
    /// none, it is about to expire, or PayPal just refused it (`renew`).
    fn token(&self, renew: bool) -> Result<String, CallError> {
        let now_ms = clock::now_ms();
        let mut cached = TOKEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(token) = cached.as_ref().filter(|token| !renew && token.expires_at_ms > now_ms + TOKEN_MARGIN_MS) {
            return Ok(token.access_token.clone());
        }
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.client_id, self.client_secret));
        let request = http::Request {
            method: "POST".into(),
            url: format!("{}/v1/oauth2/token", self.base_url),
            headers: vec![
                header("Authorization", format!("Basic {credentials}")),
                header("Content-Type", "application/x-www-form-urlencoded"),
                header("Accept", "application/json"),
            ],
            body: b"grant_type=client_credentials".to_vec(),
        };
        let response = send(&request)?;
        if !(200..300).contains(&response.status) {
            let error = ApiError::parse(response.status, &response.body);
            log::log(log::Level::Warn, &format!("oauth token: {error}"));
            return Err(CallError::Api(error));
        }
        let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let access_token = answer["access_token"]
            .as_str()
            .filter(|token| !token.is_empty())
            .ok_or_else(|| Failure::Unavailable("paypal's token answer has no access_token".into()))?
            .to_owned();
        let expires_in_secs = answer["expires_in"].as_u64().unwrap_or(300);
        *cached = Some(Token { access_token: access_token.clone(), expires_at_ms: now_ms + expires_in_secs * 1000 });
        Ok(access_token)
    }

    /// A JSON call with the bearer token; a `401` renews the token and retries once. A `2xx`
    /// answer is its JSON body (`null` when empty, as for a `204`); anything else is PayPal's
    /// error.
    fn call(
        &self,
        method: &str,
        path: &str,
        request_id: Option<&str>,
        representation: bool,
        body: Option<Vec<u8>>,
    ) -> Result<Value, CallError> {
        let mut renew = false;
        loop {
            let token = self.token(renew)?;
            let mut headers = vec![
                header("Authorization", format!("Bearer {token}")),
                header("Content-Type", "application/json"),
                header("Accept", "application/json"),
            ];
            if let Some(request_id) = request_id {
                headers.push(header("PayPal-Request-Id", request_id));
            }
            if representation {
                headers.push(header("Prefer", "return=representation"));
            }
            let request = http::Request {
                method: method.into(),
                url: format!("{}{path}", self.base_url),
                headers,
                body: body.clone().unwrap_or_default(),
            };
            let response = send(&request)?;
            if response.status == 401 && !renew {
                renew = true;
                continue;
            }
            if (200..300).contains(&response.status) {
                if response.body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Value::Null);
                }
                return serde_json::from_slice(&response.body).map_err(|_| {
                    CallError::Failed(Failure::Unavailable(format!(
                        "paypal answered {method} {path} with {} and a body that is not JSON",
                        response.status
                    )))
                });
            }
            let error = ApiError::parse(response.status, &response.body);
            log::log(log::Level::Warn, &format!("{method} {path}: {error}"));
            return Err(CallError::Api(error));
        }
    }

    fn json(
        &self,
        method: &str,
        path: &str,
        request_id: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        self.call(method, path, request_id, true, body.map(|body| body.to_string().into_bytes()))
    }

    fn order(&self, order_id: &str) -> Result<Value, CallError> {
        self.json("GET", &format!("/v2/checkout/orders/{order_id}"), None, None)
    }

    /// Authorizes an approved order and returns it. The request id is derived from the order,
    /// so the approval webhook and a capture that gets there first make one authorization; an
    /// order authorized earlier (beyond PayPal's idempotency window) is read instead.
    fn authorize_order(&self, order_id: &str) -> Result<Value, CallError> {
        let path = format!("/v2/checkout/orders/{order_id}/authorize");
        match self.json("POST", &path, Some(&model::request_id(order_id, "-authorize")), Some(&json!({}))) {
            Err(CallError::Api(error)) if error.has_issue("ORDER_ALREADY_AUTHORIZED") => self.order(order_id),
            answer => answer,
        }
    }
}

fn order_id_of(order: &Value) -> Result<String, Failure> {
    model::resource_id("order", order["id"].as_str().unwrap_or_default())
        .map_err(|_| Failure::Unavailable("paypal's answer has no order id".into()))
}

impl Guest for Plugin {
    fn authorize(request: AuthorizeRequest) -> Result<PaymentState, PaymentError> {
        let body = model::order_request(
            &request.booking_ref,
            &request.description,
            &amount(&request.amount),
            request.return_url.as_deref(),
        )?;
        let client = Client::from_config()?;
        let request_id = model::request_id(&request.idempotency_key, "");
        let order = client.json("POST", "/v2/checkout/orders", Some(&request_id), Some(&body))?;
        Ok(state(&order_id_of(&order)?, model::order_view(&order), &request.amount))
    }

    fn capture(provider_ref: String, amount: Money, idempotency_key: String) -> Result<PaymentState, PaymentError> {
        let order_id = model::resource_id("order", &provider_ref)?;
        let body = model::amount_body(&self::amount(&amount), Some(true))?;
        let client = Client::from_config()?;
        let mut order = client.order(&order_id)?;
        if model::latest_authorization(&order).is_none() {
            match order["status"].as_str() {
                Some("APPROVED") => order = client.authorize_order(&order_id)?,
                status => {
                    return Err(Failure::Invalid(format!(
                        "order {order_id} is {}: nothing is authorized to capture",
                        status.unwrap_or("in an unknown state")
                    ))
                    .into());
                }
            }
        }
        let authorization_id = model::latest_authorization(&order)
            .and_then(|authorization| authorization["id"].as_str())
            .ok_or_else(|| Failure::Unavailable(format!("paypal shows no authorization on order {order_id}")))?;
        let authorization_id = model::resource_id("authorization", authorization_id)?;
        let path = format!("/v2/payments/authorizations/{authorization_id}/capture");
        match client.json("POST", &path, Some(&model::request_id(&idempotency_key, "")), Some(&body)) {
            Ok(capture) => {
                let status = match capture["status"].as_str() {
                    Some("COMPLETED") => Status::Captured,
                    // Requested but not settled: the money has not moved yet.
                    Some("PENDING") => Status::Authorized,
                    other => {
                        return Err(Failure::Declined(format!(
                            "paypal did not complete the capture (status {})",
                            other.unwrap_or("missing")
                        ))
                        .into());
                    }
                };
                let view = View { status, action_url: None, amount: model::amount_of(&capture["amount"]) };
                Ok(state(&order_id, view, &amount))
            }
            // An earlier capture went through and its answer was lost: report what it did.
            Err(CallError::Api(error)) if error.has_issue("AUTHORIZATION_ALREADY_CAPTURED") => {
                let view = model::order_view(&client.order(&order_id)?);
                match view.status {
                    Status::Captured | Status::PartiallyRefunded | Status::Refunded => {
                        Ok(state(&order_id, view, &amount))
                    }
                    _ => Err(CallError::Api(error).into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    fn cancel(provider_ref: String, idempotency_key: String) -> Result<PaymentState, PaymentError> {
        let order_id = model::resource_id("order", &provider_ref)?;
        let client = Client::from_config()?;
        let order = client.order(&order_id)?;
        let view = model::order_view(&order);
        let voided = |amount: Option<Amount>| {
            state(&order_id, View { status: Status::Voided, action_url: None, amount }, &no_amount())
        };
        let captured = || Failure::Invalid(format!("order {order_id} is captured: refund it instead"));
        let Some(authorization) = model::latest_authorization(&order) else {
            if model::refundable_capture(&order).is_some() {
                return Err(captured().into());
            }
            // Created or approved but never authorized: nothing is held, the order just lapses.
            return Ok(voided(view.amount));
        };
        match authorization["status"].as_str() {
            Some("CREATED" | "PENDING") => {
                let authorization_id =
                    model::resource_id("authorization", authorization["id"].as_str().unwrap_or_default())?;
                let path = format!("/v2/payments/authorizations/{authorization_id}/void");
                let request_id = model::request_id(&idempotency_key, "");
                match client.call("POST", &path, Some(&request_id), false, None) {
                    Ok(_) => Ok(voided(view.amount)),
                    // Voided meanwhile (by another call, or PayPal on expiry): that is the goal.
                    Err(CallError::Api(error)) if error.status == 422 => {
                        let now = model::order_view(&client.order(&order_id)?);
                        if now.status == Status::Voided {
                            Ok(state(&order_id, now, &no_amount()))
                        } else {
                            Err(CallError::Api(error).into())
                        }
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Some("VOIDED" | "EXPIRED") => Ok(voided(view.amount)),
            Some("CAPTURED" | "PARTIALLY_CAPTURED") => Err(captured().into()),
            // Denied: nothing held, the payment failed; say so.
            _ => Ok(state(&order_id, view, &no_amount())),
        }
    }

    fn refund(provider_ref: String, amount: Money, idempotency_key: String) -> Result<PaymentState, PaymentError> {
        let order_id = model::resource_id("order", &provider_ref)?;
        let body = model::amount_body(&self::amount(&amount), None)?;
        let client = Client::from_config()?;
        let order = client.order(&order_id)?;
        let capture = model::refundable_capture(&order)
            .ok_or_else(|| Failure::Invalid(format!("order {order_id} has no captured payment to refund")))?;
        let capture_id = model::resource_id("capture", capture["id"].as_str().unwrap_or_default())?;
        let path = format!("/v2/payments/captures/{capture_id}/refund");
        let refund = client.json("POST", &path, Some(&model::request_id(&idempotency_key, "")), Some(&body))?;
        if !matches!(refund["status"].as_str(), Some("COMPLETED" | "PENDING")) {
            return Err(Failure::Declined(format!(
                "paypal did not refund (status {})",
                refund["status"].as_str().unwrap_or("missing")
            ))
            .into());
        }
        let view = View {
            status: model::refund_status(capture, &refund, &order),
            action_url: None,
            amount: model::amount_of(&refund["amount"]),
        };
        Ok(state(&order_id, view, &amount))
    }

    fn retrieve(provider_ref: String) -> Result<PaymentState, PaymentError> {
        let order_id = model::resource_id("order", &provider_ref)?;
        let order = Client::from_config()?.order(&order_id)?;
        Ok(state(&order_id, model::order_view(&order), &no_amount()))
    }

    fn verify_webhook(webhook: Webhook) -> Result<PaymentEvent, PaymentError> {
        let transmission = Transmission::from_headers(&webhook.headers)?;
        let webhook_id = config_value("webhook_id")?;
        let postback = model::verify_request(&transmission, &webhook_id, &webhook.body)?;
        let client = Client::from_config()?;
        let verdict = client.call("POST", "/v1/notifications/verify-webhook-signature", None, false, Some(postback))?;
        match verdict["verification_status"].as_str() {
            Some("SUCCESS") => {}
            other => {
                return Err(Failure::SignatureInvalid(format!(
                    "paypal did not verify the delivery (verification_status {})",
                    other.unwrap_or("missing")
                ))
                .into());
            }
        }
        let body: Value = serde_json::from_slice(&webhook.body)
            .map_err(|_| Failure::Invalid("webhook body is not a JSON object".into()))?;
        let event = model::parse_event(&body)?;
        let (status, provider_ref, amount) = match event.kind {
            EventKind::OrderApproved => approved(&client, &event)?,
            EventKind::CaptureRefunded => refunded(&client, &event)?,
            kind => (kind.status(), event.provider_ref(), event.amount.clone()),
        };
        Ok(PaymentEvent { event_id: event.id, provider_ref, status: self::status(status), amount: amount.map(money) })
    }
}

/// `CHECKOUT.ORDER.APPROVED`: the payer approved, so the order is authorized now (intent
/// `AUTHORIZE` holds nothing before that). A refused funding source fails the payment: there is
/// no payer present to pick another.
fn approved(client: &Client, event: &Event) -> Result<(Status, String, Option<Amount>), CallError> {
    let order_id = model::resource_id("order", &event.resource_id)?;
    match client.authorize_order(&order_id) {
        Ok(order) => {
            let view = model::order_view(&order);
            Ok((view.status, order_id, view.amount.or_else(|| event.amount.clone())))
        }
        Err(CallError::Api(error)) if matches!(error.failure(), Failure::Declined(_)) => {
            Ok((Status::Failed, order_id, event.amount.clone()))
        }
        Err(error) => Err(error),
    }
}

/// `PAYMENT.CAPTURE.REFUNDED`: the resource is the refund; its capture says whether everything
/// was returned, and names the order when the refund does not.
fn refunded(client: &Client, event: &Event) -> Result<(Status, String, Option<Amount>), CallError> {
    let Some(capture_id) = &event.capture_id else {
        return Ok((Status::PartiallyRefunded, event.provider_ref(), event.amount.clone()));
    };
    let capture_id = model::resource_id("capture", capture_id)?;
    match client.json("GET", &format!("/v2/payments/captures/{capture_id}"), None, None) {
        Ok(capture) => {
            let order_id = event
                .order_id
                .clone()
                .or_else(|| capture["supplementary_data"]["related_ids"]["order_id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| event.provider_ref());
            Ok((model::capture_refund_status(&capture), order_id, event.amount.clone()))
        }
        // Not a capture of this account (PayPal's simulator sends such events): only the event is
        // known, and "partially refunded" is the claim that cannot overstate it.
        Err(CallError::Api(error)) if error.status == 404 => {
            Ok((Status::PartiallyRefunded, event.provider_ref(), event.amount.clone()))
        }
        Err(error) => Err(error),
    }
}
