//! A stateful fake of the Stripe API on loopback, for tests and `berth demo`.
//!
//! It speaks Stripe's wire format as the real adapter sees it: form-encoded requests with nested
//! keys (`metadata[berth_payment]`, `line_items[0][price_data][unit_amount]`), the secret key as
//! Bearer or Basic credentials, JSON answers with a `request-id` header, the error envelope
//! `{"error":{type, code, decline_code, message, param, doc_url, payment_intent}}` with Stripe's
//! status codes, unknown parameters refused, and idempotency as Stripe documents it (the first
//! answer under a key is saved, 500s included, and replayed; the same key with other parameters
//! is an `idempotency_error`). Objects have the shape of the API version async-stripe pins
//! (a PaymentIntent has `latest_charge`, no `charges` list).
//!
//! Webhook events are signed with [`crate::stripe_signature::sign`] and posted, one at a time
//! and in order, to the configured endpoint, with a few retries. Tests steer the fake with plain
//! methods: inject failures, take it down, hold and reorder or redeliver events, and pay a
//! Checkout Session as the driver would on the hosted page (also `GET /pay/{session_id}` in a
//! browser).
//!
//! Deliberately absent: Customers, Prices, PaymentMethod objects (test tokens such as
//! `pm_card_visa` stand for cards), and any mode of Checkout but `payment`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use poem::http::{HeaderMap, Method, StatusCode, header};
use poem::web::{Data, Html, Path, Query};
use poem::{Body, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use rand::Rng as _;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::stripe_signature;

/// How many times a webhook delivery is tried before the fake gives up on it.
const WEBHOOK_ATTEMPTS: u32 = 5;
const WEBHOOK_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Stripe keeps idempotency keys up to 255 characters.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// What the fake needs to know. `Debug` prints no secret.
#[derive(Clone)]
pub struct FakeStripeConfig {
    /// The API key clients must present (Bearer, or Basic with the key as user name).
    pub secret_key: String,
    /// Where events are posted; none means events are only recorded.
    pub webhook_url: Option<String>,
    /// The endpoint secret events are signed with (`whsec_...`).
    pub webhook_secret: String,
}

impl FakeStripeConfig {
    pub fn new(secret_key: impl Into<String>, webhook_secret: impl Into<String>) -> Self {
        Self { secret_key: secret_key.into(), webhook_url: None, webhook_secret: webhook_secret.into() }
    }
}

impl fmt::Debug for FakeStripeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeStripeConfig")
            .field("secret_key", &"<redacted>")
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &"<redacted>")
            .finish()
    }
}

/// A failure to inject into the next API requests ([`FakeStripe::fail_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 500 `api_error`, without touching any state (saved under the idempotency key, as Stripe
    /// saves its 500s).
    ServerError,
    /// The request is carried out and its answer saved, but the answer is held back this long:
    /// the client times out, and a retry with the same key gets the saved answer.
    Timeout(Duration),
    /// A PaymentIntent confirmed by this request is declined (`generic_decline`) whatever its
    /// card; any other request answers 402 `card_declined` and changes nothing.
    Decline,
}

/// Why a control call on the fake could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FakeStripeError {
    #[error("no such checkout session: {0}")]
    NoSuchSession(String),
    #[error("no such payment intent: {0}")]
    NoSuchPaymentIntent(String),
    #[error("checkout session {id} is {status}, not open")]
    SessionNotOpen { id: String, status: String },
    #[error("payment intent {id} is {status}, not waiting for authentication")]
    NotAwaitingAuthentication { id: String, status: String },
    #[error("{0}")]
    Rejected(String),
}

/// A running fake; stops when dropped.
pub struct FakeStripe {
    shared: Arc<Shared>,
    base_url: String,
    server: JoinHandle<()>,
    webhook_sender: JoinHandle<()>,
}

impl fmt::Debug for FakeStripe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeStripe").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.server.abort();
        self.webhook_sender.abort();
    }
}

impl FakeStripe {
    /// Starts the fake on `127.0.0.1` on a free port.
    pub async fn start(config: FakeStripeConfig) -> std::io::Result<FakeStripe> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/", listener.local_addr()?);
        let (outbox, outbox_receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            secret_key: config.secret_key,
            webhook_secret: config.webhook_secret,
            base_url: base_url.clone(),
            state: Mutex::new(State::new(config.webhook_url, outbox)),
        });
        let app = Route::new()
            .at("/pay/:session_id", get(pay_page))
            .at("/authenticate/:intent_id", get(authenticate_page))
            .at("/*path", api)
            .data(shared.clone());
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener)?;
        let server = tokio::spawn(async move {
            if let Err(error) = poem::Server::new_with_acceptor(acceptor).run(app).await {
                tracing::warn!(error = %error, "fake stripe server stopped");
            }
        });
        let webhook_sender = tokio::spawn(send_webhooks(shared.clone(), outbox_receiver));
        Ok(FakeStripe { shared, base_url, server, webhook_sender })
    }

    /// The API root to configure the client with, such as `http://127.0.0.1:PORT/`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Where events go from now on (`None`: recorded only).
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.shared.state().webhook_url = url;
    }

    /// The next `n` API requests fail with `failure`.
    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.shared.state().failures.extend(std::iter::repeat_n(failure, n));
    }

    /// While down, every API request gets a 503 that changes nothing (not even idempotency).
    pub fn set_down(&self, down: bool) {
        self.shared.state().down = down;
    }

    /// A PaymentIntent as the API would show it now.
    pub fn payment_intent(&self, id: &str) -> Option<Value> {
        let state = self.shared.state();
        state.intent(id).map(|intent| state.intent_json(intent, false))
    }

    /// Every PaymentIntent, oldest first.
    pub fn payment_intents(&self) -> Vec<Value> {
        let state = self.shared.state();
        state.intents.iter().map(|intent| state.intent_json(intent, false)).collect()
    }

    /// A Checkout Session as the API would show it now.
    pub fn checkout_session(&self, id: &str) -> Option<Value> {
        let state = self.shared.state();
        state.session(id).map(|session| state.session_json(session, &self.base_url))
    }

    /// How many API requests arrived (any outcome, pages for the driver excluded).
    pub fn requests_count(&self) -> u64 {
        self.shared.state().requests_count
    }

    /// Every event the fake has emitted, oldest first, whether delivered, held or not sent.
    pub fn sent_events(&self) -> Vec<Value> {
        self.shared.state().events.clone()
    }

    /// While held, new events queue up instead of being posted; see [`Self::flush_webhooks`].
    pub fn hold_webhooks(&self, hold: bool) {
        self.shared.state().hold_webhooks = hold;
    }

    /// Posts the held events, in the order they happened or reversed.
    pub fn flush_webhooks(&self, reversed: bool) {
        let mut state = self.shared.state();
        let mut held = std::mem::take(&mut state.held_events);
        if reversed {
            held.reverse();
        }
        for event in held {
            state.post(event);
        }
    }

    /// Posts an event again, as Stripe does when it got no 2xx; false if there is no such event.
    pub fn redeliver(&self, event_id: &str) -> bool {
        let mut state = self.shared.state();
        let Some(event) = state.events.iter().find(|event| event["id"] == event_id).cloned() else {
            return false;
        };
        state.post(event);
        true
    }

    /// The driver pays on the hosted page with `payment_method` (`pm_card_visa`, or a declining
    /// test card): the session's PaymentIntent is created and confirmed. Returns its id.
    pub fn pay_checkout_session(&self, session_id: &str, payment_method: &str) -> Result<String, FakeStripeError> {
        let mut state = self.shared.state();
        let context = RequestContext::dashboard();
        state.pay_session(session_id, payment_method, &context, &self.base_url)
    }

    /// The driver completes 3-D Secure for a PaymentIntent in `requires_action`.
    pub fn authenticate_payment_intent(&self, intent_id: &str) -> Result<(), FakeStripeError> {
        let mut state = self.shared.state();
        state.authenticate(intent_id, &RequestContext::dashboard())
    }
}

struct Shared {
    secret_key: String,
    webhook_secret: String,
    base_url: String,
    /// A std mutex: it is never held across an await.
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock panics on purpose; if something did, the state is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one API request to completion; returns the answer and how long to hold it back.
    fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (Answer, Option<Duration>) {
        let mut state = self.state();
        state.requests_count += 1;
        if state.down {
            let error = ApiError::new(503, "api_error", "The fake Stripe API is down.");
            return (Answer::error(error), None);
        }
        if let Err(error) = self.authenticate_client(headers) {
            return (Answer::error(error), None);
        }
        let is_post = method == Method::POST;
        let raw_params = if is_post { body } else { query.unwrap_or_default().as_bytes() };
        let params = match Params::parse(raw_params) {
            Ok(params) => params,
            Err(error) => return (Answer::error(error), None),
        };
        let idempotency_key = if is_post {
            headers.get("idempotency-key").and_then(|value| value.to_str().ok()).map(str::to_owned)
        } else {
            None
        };
        let fingerprint = params.fingerprint(method, path);
        if let Some(key) = &idempotency_key {
            if key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
                let message = format!(
                    "The Idempotency-Key header is too long: keys can be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters."
                );
                return (Answer::error(ApiError::invalid(message, None, None)), None);
            }
            if let Some(saved) = state.idempotency.get(key) {
                if saved.fingerprint != fingerprint {
                    let message = format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first \
                         used with. Try using a key other than '{key}' if you meant to execute a different request."
                    );
                    let error = ApiError::new(400, "idempotency_error", message);
                    return (Answer::error(error).with_key(key), None);
                }
                let answer = Answer {
                    status: saved.status,
                    body: saved.body.clone(),
                    key: Some(key.clone()),
                    replayed: true,
                    request_id: None,
                };
                return (answer, None);
            }
        }

        let context = RequestContext { request_id: Some(new_id("req_")), idempotency_key: idempotency_key.clone() };
        let failure = state.failures.pop_front();
        let mut delay = None;
        let result = match failure {
            Some(Failure::ServerError) => Err(ApiError::new(
                500,
                "api_error",
                "An unknown error occurred while processing your request (injected by the fake).",
            )),
            Some(Failure::Timeout(hold_back)) => {
                delay = Some(hold_back);
                state.route(method, path, &params, &context, false, &self.base_url)
            }
            Some(Failure::Decline) => state.route(method, path, &params, &context, true, &self.base_url),
            None => state.route(method, path, &params, &context, false, &self.base_url),
        };
        let answer = match result {
            Ok(body) => Answer { status: 200, body, key: None, replayed: false, request_id: None },
            Err(error) => Answer::error(error),
        };
        // Events caused by this request name it; so does the answer.
        let answer = Answer { request_id: context.request_id.clone(), ..answer };
        if let Some(key) = &idempotency_key {
            let saved = SavedAnswer { fingerprint, status: answer.status, body: answer.body.clone() };
            state.idempotency.insert(key.clone(), saved);
        }
        let answer = match &idempotency_key {
            Some(key) => answer.with_key(key),
            None => answer,
        };
        (answer, delay)
    }

    fn authenticate_client(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(authorization) = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()) else {
            return Err(ApiError::new(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the Authorization header, \
                 using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            ));
        };
        let presented = if let Some(token) = authorization.strip_prefix("Bearer ") {
            token.trim().to_owned()
        } else if let Some(encoded) = authorization.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).unwrap_or_default();
            let credentials = String::from_utf8_lossy(&decoded).into_owned();
            credentials.split_once(':').map_or(credentials.clone(), |(user, _)| user.to_owned())
        } else {
            String::new()
        };
        if bool::from(presented.as_bytes().ct_eq(self.secret_key.as_bytes())) {
            return Ok(());
        }
        // Like Stripe, show only the end of the key that was presented.
        let tail: String = presented.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        Err(ApiError::new(401, "invalid_request_error", format!("Invalid API Key provided: ****{tail}")))
    }
}

/// Who caused an event: an API request, or the driver on a page (no request).
struct RequestContext {
    request_id: Option<String>,
    idempotency_key: Option<String>,
}

impl RequestContext {
    fn dashboard() -> Self {
        Self { request_id: None, idempotency_key: None }
    }
}

struct SavedAnswer {
    fingerprint: String,
    status: u16,
    body: Value,
}

/// One HTTP answer of the API.
struct Answer {
    status: u16,
    body: Value,
    key: Option<String>,
    replayed: bool,
    /// Made up when the answer is sent, unless events already name the request.
    request_id: Option<String>,
}

impl Answer {
    fn error(error: ApiError) -> Self {
        Self {
            status: error.status,
            body: json!({ "error": error.body }),
            key: None,
            replayed: false,
            request_id: None,
        }
    }

    fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = Response::builder()
            .status(status)
            .content_type("application/json")
            .header("request-id", self.request_id.unwrap_or_else(|| new_id("req_")))
            .header("stripe-version", stripe_shared::version::VERSION.as_str());
        if let Some(key) = &self.key {
            builder = builder.header("idempotency-key", key.as_str());
        }
        if self.replayed {
            builder = builder.header("idempotent-replayed", "true");
        }
        // Stripe's SDKs obey this header; without it they retry 409 and 5xx anyway.
        if self.status >= 500 || self.status == 409 {
            builder = builder.header("stripe-should-retry", "true");
        }
        builder.body(serde_json::to_vec_pretty(&self.body).unwrap_or_default())
    }
}

/// An error answer: the HTTP status and the inside of the `{"error": ...}` envelope.
#[derive(Debug)]
struct ApiError {
    status: u16,
    body: Value,
}

impl ApiError {
    fn new(status: u16, error_type: &str, message: impl Into<String>) -> Self {
        Self { status, body: json!({ "type": error_type, "message": message.into() }) }
    }

    /// 400 `invalid_request_error`.
    fn invalid(message: impl Into<String>, code: Option<&str>, param: Option<&str>) -> Self {
        let mut error = Self::new(400, "invalid_request_error", message);
        if let Some(code) = code {
            error = error.code(code);
        }
        if let Some(param) = param {
            error.body["param"] = json!(param);
        }
        error
    }

    fn code(mut self, code: &str) -> Self {
        self.body["code"] = json!(code);
        self.body["doc_url"] = json!(format!("https://docs.stripe.com/error-codes/{}", code.replace('_', "-")));
        self
    }

    fn no_such(kind: &str, id: &str, param: &str) -> Self {
        let mut error = Self::invalid(format!("No such {kind}: '{id}'"), Some("resource_missing"), Some(param));
        error.status = 404;
        error
    }

    fn missing_param(param: &str) -> Self {
        Self::invalid(format!("Missing required param: {param}."), Some("parameter_missing"), Some(param))
    }

    fn bad_value(param: &str, value: &str) -> Self {
        Self::invalid(
            format!("Invalid {param}: {value:?} is not a valid value."),
            Some("parameter_invalid_string"),
            Some(param),
        )
    }

    fn unexpected_state(message: impl Into<String>, intent: Value) -> Self {
        let mut error = Self::invalid(message, Some("payment_intent_unexpected_state"), None);
        error.body["payment_intent"] = intent;
        error
    }

    /// 402 `card_error`, as Stripe answers a declined confirmation.
    fn declined(decline: Decline, charge_id: Option<&str>, intent: Option<Value>) -> Self {
        let mut error = Self::new(402, "card_error", decline.message()).code("card_declined");
        error.body["decline_code"] = json!(decline.code());
        if let Some(charge_id) = charge_id {
            error.body["charge"] = json!(charge_id);
        }
        if let Some(intent) = intent {
            error.body["payment_intent"] = intent;
        }
        error
    }
}

/// Stripe's test cards that decline, by the decline code they produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decline {
    Generic,
    InsufficientFunds,
    LostCard,
    StolenCard,
    Fraudulent,
}

impl Decline {
    fn code(self) -> &'static str {
        match self {
            Decline::Generic => "generic_decline",
            Decline::InsufficientFunds => "insufficient_funds",
            Decline::LostCard => "lost_card",
            Decline::StolenCard => "stolen_card",
            Decline::Fraudulent => "fraudulent",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Decline::InsufficientFunds => "Your card has insufficient funds.",
            _ => "Your card was declined.",
        }
    }
}

/// What confirming with a test payment method does.
enum CardOutcome {
    Approve,
    Decline(Decline),
    /// 3-D Secure first.
    Authenticate,
}

fn card_outcome(payment_method: &str) -> CardOutcome {
    match payment_method {
        "pm_card_chargeDeclined" => CardOutcome::Decline(Decline::Generic),
        "pm_card_chargeDeclinedInsufficientFunds" => CardOutcome::Decline(Decline::InsufficientFunds),
        "pm_card_chargeDeclinedLostCard" => CardOutcome::Decline(Decline::LostCard),
        "pm_card_chargeDeclinedStolenCard" => CardOutcome::Decline(Decline::StolenCard),
        "pm_card_chargeDeclinedFraudulent" => CardOutcome::Decline(Decline::Fraudulent),
        "pm_card_authenticationRequired" | "pm_card_threeDSecure2Required" => CardOutcome::Authenticate,
        _ => CardOutcome::Approve,
    }
}

struct Intent {
    id: String,
    amount: i64,
    amount_capturable: i64,
    amount_received: i64,
    currency: String,
    capture_method: String,
    confirmation_method: String,
    client_secret: String,
    status: &'static str,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    payment_method: Option<String>,
    automatic_payment_methods: Option<Value>,
    return_url: Option<String>,
    created: i64,
    canceled_at: Option<i64>,
    cancellation_reason: Option<String>,
    latest_charge: Option<String>,
    last_payment_error: Option<Value>,
    next_action: Option<Value>,
}

struct Charge {
    id: String,
    payment_intent: String,
    amount: i64,
    amount_captured: i64,
    amount_refunded: i64,
    currency: String,
    created: i64,
    captured: bool,
    decline: Option<Decline>,
    payment_method: String,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
}

struct Refund {
    id: String,
    amount: i64,
    charge: String,
    payment_intent: String,
    currency: String,
    created: i64,
    reason: Option<String>,
    metadata: BTreeMap<String, String>,
}

struct Session {
    id: String,
    amount_total: i64,
    currency: String,
    success_url: Option<String>,
    cancel_url: Option<String>,
    client_reference_id: Option<String>,
    metadata: BTreeMap<String, String>,
    intent_capture_method: String,
    intent_metadata: BTreeMap<String, String>,
    intent_description: Option<String>,
    payment_intent: Option<String>,
    status: &'static str,
    payment_status: &'static str,
    created: i64,
    expires_at: i64,
}

struct State {
    down: bool,
    requests_count: u64,
    failures: VecDeque<Failure>,
    idempotency: BTreeMap<String, SavedAnswer>,
    intents: Vec<Intent>,
    charges: Vec<Charge>,
    refunds: Vec<Refund>,
    sessions: Vec<Session>,
    events: Vec<Value>,
    webhook_url: Option<String>,
    hold_webhooks: bool,
    held_events: Vec<Value>,
    outbox: mpsc::UnboundedSender<Value>,
}

impl State {
    fn new(webhook_url: Option<String>, outbox: mpsc::UnboundedSender<Value>) -> Self {
        Self {
            down: false,
            requests_count: 0,
            failures: VecDeque::new(),
            idempotency: BTreeMap::new(),
            intents: Vec::new(),
            charges: Vec::new(),
            refunds: Vec::new(),
            sessions: Vec::new(),
            events: Vec::new(),
            webhook_url,
            hold_webhooks: false,
            held_events: Vec::new(),
            outbox,
        }
    }

    fn route(
        &mut self,
        method: &Method,
        path: &str,
        params: &Params,
        context: &RequestContext,
        decline: bool,
        base_url: &str,
    ) -> Result<Value, ApiError> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let is_post = method == Method::POST;
        let is_get = method == Method::GET;
        let confirms = is_post
            && segments.as_slice() == ["v1", "payment_intents"]
            && params.text("confirm").as_deref() == Some("true");
        if decline && !confirms {
            return Err(ApiError::declined(Decline::Generic, None, None));
        }
        match segments.as_slice() {
            ["v1", "payment_intents"] if is_post => self.create_intent(params, context, decline, base_url),
            ["v1", "payment_intents", id] if is_get => {
                params.allow(&["expand", "client_secret"])?;
                let intent = self.intent(id).ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?;
                Ok(self.intent_json(intent, params.expands("latest_charge")))
            }
            ["v1", "payment_intents", id, "capture"] if is_post => self.capture(id, params, context),
            ["v1", "payment_intents", id, "cancel"] if is_post => self.cancel(id, params, context),
            ["v1", "refunds"] if is_post => self.create_refund(params, context),
            ["v1", "refunds", id] if is_get => {
                params.allow(&["expand"])?;
                let refund = self.refund(id).ok_or_else(|| ApiError::no_such("refund", id, "id"))?;
                Ok(self.refund_json(refund, params))
            }
            ["v1", "charges", id] if is_get => {
                params.allow(&["expand"])?;
                let charge = self.charge(id).ok_or_else(|| ApiError::no_such("charge", id, "id"))?;
                Ok(charge_json(charge))
            }
            ["v1", "checkout", "sessions"] if is_post => self.create_session(params, base_url),
            ["v1", "checkout", "sessions", id] if is_get => {
                params.allow(&["expand"])?;
                let session = self.session(id).ok_or_else(|| ApiError::no_such("checkout.session", id, "session"))?;
                Ok(self.session_json(session, base_url))
            }
            ["v1", "checkout", "sessions", id, "expire"] if is_post => self.expire_session(id, params, base_url),
            _ => {
                let mut error = ApiError::invalid(
                    format!(
                        "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
                    ),
                    None,
                    None,
                );
                error.status = 404;
                Err(error)
            }
        }
    }

    fn create_intent(
        &mut self,
        params: &Params,
        context: &RequestContext,
        force_decline: bool,
        base_url: &str,
    ) -> Result<Value, ApiError> {
        params.allow(&[
            "amount",
            "currency",
            "capture_method",
            "confirm",
            "confirmation_method",
            "payment_method",
            "description",
            "metadata",
            "automatic_payment_methods",
            "allowed_payment_method_types",
            "return_url",
            "expand",
            "receipt_email",
            "statement_descriptor_suffix",
            "error_on_requires_action",
            "use_stripe_sdk",
        ])?;
        let amount = params.required_int("amount")?;
        if amount < 1 {
            return Err(ApiError::invalid(
                "Amount must be at least 1 in the smallest currency unit.",
                Some("amount_too_small"),
                Some("amount"),
            ));
        }
        let currency = params.required_currency("currency")?;
        let capture_method =
            params.one_of("capture_method", &["automatic", "automatic_async", "manual"], "automatic")?;
        let confirmation_method = params.one_of("confirmation_method", &["automatic", "manual"], "automatic")?;
        let confirm = params.bool("confirm")?.unwrap_or(false);
        let payment_method = params.text("payment_method");
        let return_url = params.text("return_url");
        let explicit_types = params.list("allowed_payment_method_types");
        let automatic_enabled = params.bool("automatic_payment_methods[enabled]")?;
        let allow_redirects =
            params.one_of("automatic_payment_methods[allow_redirects]", &["always", "never"], "always")?;
        // Current API versions turn automatic payment methods on unless types are listed.
        let automatic = explicit_types.is_empty() && automatic_enabled != Some(false);
        let automatic_payment_methods =
            automatic.then(|| json!({ "enabled": true, "allow_redirects": allow_redirects }));

        if confirm {
            let Some(payment_method) = &payment_method else {
                return Err(ApiError::invalid(
                    "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm \
                     the PaymentIntent, either pass `payment_method` or update it with one first.",
                    Some("payment_intent_unexpected_state"),
                    Some("payment_method"),
                ));
            };
            if automatic && allow_redirects != "never" && return_url.is_none() {
                return Err(ApiError::invalid(
                    "This PaymentIntent is configured to accept payment methods enabled in your Dashboard. Because \
                     some of these payment methods might redirect your customer off of your page, you must provide \
                     a `return_url`. If you don't want to accept redirect-based payment methods, set \
                     `automatic_payment_methods[enabled]` to `true` and `automatic_payment_methods[allow_redirects]` \
                     to `never` when creating Setup Intents and Payment Intents.",
                    None,
                    Some("return_url"),
                ));
            }
            if !payment_method.starts_with("pm_") {
                return Err(ApiError::invalid(
                    format!("No such PaymentMethod: '{payment_method}'"),
                    Some("resource_missing"),
                    Some("payment_method"),
                ));
            }
        }

        let id = new_id("pi_");
        self.intents.push(Intent {
            client_secret: client_secret(&id),
            id: id.clone(),
            amount,
            amount_capturable: 0,
            amount_received: 0,
            currency,
            capture_method,
            confirmation_method,
            status: if payment_method.is_some() { "requires_confirmation" } else { "requires_payment_method" },
            description: params.text("description"),
            metadata: params.map("metadata"),
            payment_method: payment_method.clone(),
            automatic_payment_methods,
            return_url,
            created: unix_now(),
            canceled_at: None,
            cancellation_reason: None,
            latest_charge: None,
            last_payment_error: None,
            next_action: None,
        });
        if let (true, Some(payment_method)) = (confirm, payment_method) {
            self.confirm(&id, &payment_method, force_decline, context, base_url)?;
        }
        let intent = self.intent(&id).ok_or_else(|| ApiError::no_such("payment_intent", &id, "intent"))?;
        Ok(self.intent_json(intent, params.expands("latest_charge")))
    }

    /// Confirms with a test payment method: approve, decline or ask for 3-D Secure.
    fn confirm(
        &mut self,
        intent_id: &str,
        payment_method: &str,
        force_decline: bool,
        context: &RequestContext,
        base_url: &str,
    ) -> Result<(), ApiError> {
        let outcome = if force_decline { CardOutcome::Decline(Decline::Generic) } else { card_outcome(payment_method) };
        match outcome {
            CardOutcome::Approve => {
                self.approve(intent_id, context);
                Ok(())
            }
            CardOutcome::Authenticate => {
                let Some(intent) = self.intent_mut(intent_id) else { return Ok(()) };
                intent.status = "requires_action";
                intent.next_action = Some(match &intent.return_url {
                    Some(return_url) => json!({
                        "type": "redirect_to_url",
                        "redirect_to_url": {
                            "url": format!("{base_url}authenticate/{intent_id}"),
                            "return_url": return_url,
                        },
                    }),
                    None => json!({
                        "type": "use_stripe_sdk",
                        "use_stripe_sdk": { "type": "three_d_secure_redirect", "stripe_js": format!("{base_url}authenticate/{intent_id}") },
                    }),
                });
                Ok(())
            }
            CardOutcome::Decline(decline) => {
                let charge_id = self.new_charge(intent_id, Some(decline));
                let error = ApiError::declined(decline, Some(&charge_id), None);
                if let Some(intent) = self.intent_mut(intent_id) {
                    intent.status = "requires_payment_method";
                    intent.latest_charge = Some(charge_id.clone());
                    intent.last_payment_error = Some(error.body.clone());
                }
                let intent_json = match self.intent(intent_id) {
                    Some(intent) => self.intent_json(intent, false),
                    None => Value::Null,
                };
                self.emit("payment_intent.payment_failed", intent_json.clone(), context);
                Err(ApiError::declined(decline, Some(&charge_id), Some(intent_json)))
            }
        }
    }

    /// The card is approved: the money is held (manual capture) or taken at once.
    fn approve(&mut self, intent_id: &str, context: &RequestContext) {
        let charge_id = self.new_charge(intent_id, None);
        let Some(intent) = self.intent_mut(intent_id) else { return };
        intent.latest_charge = Some(charge_id);
        intent.next_action = None;
        intent.last_payment_error = None;
        let event_type = if intent.capture_method == "manual" {
            intent.status = "requires_capture";
            intent.amount_capturable = intent.amount;
            "payment_intent.amount_capturable_updated"
        } else {
            intent.status = "succeeded";
            intent.amount_received = intent.amount;
            "payment_intent.succeeded"
        };
        if let Some(intent) = self.intent(intent_id) {
            let intent_json = self.intent_json(intent, false);
            self.emit(event_type, intent_json, context);
        }
    }

    fn new_charge(&mut self, intent_id: &str, decline: Option<Decline>) -> String {
        let id = new_id("ch_");
        let Some(intent) = self.intent(intent_id) else { return id };
        let captured = decline.is_none() && intent.capture_method != "manual";
        let charge = Charge {
            id: id.clone(),
            payment_intent: intent.id.clone(),
            amount: intent.amount,
            amount_captured: if captured { intent.amount } else { 0 },
            amount_refunded: 0,
            currency: intent.currency.clone(),
            created: unix_now(),
            captured,
            decline,
            payment_method: intent.payment_method.clone().unwrap_or_default(),
            description: intent.description.clone(),
            metadata: intent.metadata.clone(),
        };
        self.charges.push(charge);
        id
    }

    fn authenticate(&mut self, intent_id: &str, context: &RequestContext) -> Result<(), FakeStripeError> {
        let intent =
            self.intent(intent_id).ok_or_else(|| FakeStripeError::NoSuchPaymentIntent(intent_id.to_owned()))?;
        if intent.status != "requires_action" {
            return Err(FakeStripeError::NotAwaitingAuthentication {
                id: intent_id.to_owned(),
                status: intent.status.to_owned(),
            });
        }
        self.approve(intent_id, context);
        Ok(())
    }

    fn capture(&mut self, id: &str, params: &Params, context: &RequestContext) -> Result<Value, ApiError> {
        params.allow(&["amount_to_capture", "final_capture", "metadata", "expand", "statement_descriptor_suffix"])?;
        let amount_to_capture = params.int("amount_to_capture")?;
        let intent = self.intent(id).ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?;
        if intent.status != "requires_capture" {
            let message = if intent.status == "succeeded" {
                "This PaymentIntent could not be captured because it has already been captured.".to_owned()
            } else {
                format!(
                    "This PaymentIntent could not be captured because it has a status of {}. Only a PaymentIntent \
                     with one of the following statuses may be captured: requires_capture.",
                    intent.status
                )
            };
            return Err(ApiError::unexpected_state(message, self.intent_json(intent, false)));
        }
        let amount = amount_to_capture.unwrap_or(intent.amount_capturable);
        if amount < 1 || amount > intent.amount_capturable {
            return Err(ApiError::invalid(
                format!(
                    "The amount to capture ({amount}) must be positive and at most the amount capturable ({}).",
                    intent.amount_capturable
                ),
                Some("amount_too_large"),
                Some("amount_to_capture"),
            ));
        }
        let charge_id = intent.latest_charge.clone();
        let extra_metadata = params.map("metadata");
        if let Some(intent) = self.intent_mut(id) {
            intent.status = "succeeded";
            intent.amount_received = amount;
            intent.amount_capturable = 0;
            intent.metadata.extend(extra_metadata);
        }
        if let Some(charge) = charge_id.as_deref().and_then(|charge_id| self.charge_mut(charge_id)) {
            charge.captured = true;
            charge.amount_captured = amount;
        }
        let intent = self.intent(id).ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?;
        let intent_json = self.intent_json(intent, false);
        self.emit("payment_intent.succeeded", intent_json, context);
        let intent = self.intent(id).ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?;
        Ok(self.intent_json(intent, params.expands("latest_charge")))
    }

    fn cancel(&mut self, id: &str, params: &Params, context: &RequestContext) -> Result<Value, ApiError> {
        params.allow(&["cancellation_reason", "expand"])?;
        let reason = match params.text("cancellation_reason") {
            Some(reason) => {
                if !["duplicate", "fraudulent", "requested_by_customer", "abandoned"].contains(&reason.as_str()) {
                    return Err(ApiError::bad_value("cancellation_reason", &reason));
                }
                Some(reason)
            }
            None => None,
        };
        let intent = self.intent(id).ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?;
        const CANCELABLE: [&str; 5] =
            ["requires_payment_method", "requires_capture", "requires_confirmation", "requires_action", "processing"];
        if !CANCELABLE.contains(&intent.status) {
            let message = format!(
                "You cannot cancel this PaymentIntent because it has a status of {}. Only a PaymentIntent with one \
                 of the following statuses may be canceled: {}.",
                intent.status,
                CANCELABLE.join(", ")
            );
            return Err(ApiError::unexpected_state(message, self.intent_json(intent, false)));
        }
        if let Some(intent) = self.intent_mut(id) {
            intent.status = "canceled";
            intent.canceled_at = Some(unix_now());
            intent.cancellation_reason = reason;
            intent.amount_capturable = 0;
            intent.next_action = None;
        }
        let intent = self.intent(id).ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?;
        let intent_json = self.intent_json(intent, false);
        self.emit("payment_intent.canceled", intent_json, context);
        let intent = self.intent(id).ok_or_else(|| ApiError::no_such("payment_intent", id, "intent"))?;
        Ok(self.intent_json(intent, params.expands("latest_charge")))
    }

    fn create_refund(&mut self, params: &Params, context: &RequestContext) -> Result<Value, ApiError> {
        params.allow(&["payment_intent", "charge", "amount", "reason", "metadata", "expand"])?;
        let charge_id = match (params.text("payment_intent"), params.text("charge")) {
            (Some(intent_id), _) => {
                let intent = self
                    .intent(&intent_id)
                    .ok_or_else(|| ApiError::no_such("payment_intent", &intent_id, "payment_intent"))?;
                if intent.status != "succeeded" {
                    return Err(ApiError::unexpected_state(
                        format!(
                            "This PaymentIntent does not have a successful charge to refund: it has a status of {}.",
                            intent.status
                        ),
                        self.intent_json(intent, false),
                    ));
                }
                intent.latest_charge.clone().unwrap_or_default()
            }
            (None, Some(charge_id)) => charge_id,
            (None, None) => {
                return Err(ApiError::invalid(
                    "One of the following params should be provided for this request: payment_intent or charge.",
                    Some("parameter_missing"),
                    None,
                ));
            }
        };
        let reason = match params.text("reason") {
            Some(reason) if ["duplicate", "fraudulent", "requested_by_customer"].contains(&reason.as_str()) => {
                Some(reason)
            }
            Some(reason) => return Err(ApiError::bad_value("reason", &reason)),
            None => None,
        };
        let amount = params.int("amount")?;
        let charge = self.charge(&charge_id).ok_or_else(|| ApiError::no_such("charge", &charge_id, "charge"))?;
        let refundable = charge.amount_captured - charge.amount_refunded;
        if refundable <= 0 {
            return Err(ApiError::invalid(
                format!("Charge {charge_id} has already been refunded."),
                Some("charge_already_refunded"),
                None,
            ));
        }
        let amount = amount.unwrap_or(refundable);
        if amount < 1 || amount > refundable {
            return Err(ApiError::invalid(
                format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({refundable})."),
                Some("amount_too_large"),
                Some("amount"),
            ));
        }
        let refund = Refund {
            id: new_id("re_"),
            amount,
            charge: charge_id.clone(),
            payment_intent: charge.payment_intent.clone(),
            currency: charge.currency.clone(),
            created: unix_now(),
            reason,
            metadata: params.map("metadata"),
        };
        let refund_id = refund.id.clone();
        self.refunds.push(refund);
        if let Some(charge) = self.charge_mut(&charge_id) {
            charge.amount_refunded += amount;
        }
        if let Some(charge) = self.charge(&charge_id) {
            let charge_json = charge_json(charge);
            self.emit("charge.refunded", charge_json, context);
        }
        let refund = self.refund(&refund_id).ok_or_else(|| ApiError::no_such("refund", &refund_id, "id"))?;
        Ok(self.refund_json(refund, params))
    }

    fn create_session(&mut self, params: &Params, base_url: &str) -> Result<Value, ApiError> {
        params.allow(&[
            "mode",
            "line_items",
            "payment_intent_data",
            "metadata",
            "success_url",
            "cancel_url",
            "client_reference_id",
            "customer_email",
            "expires_at",
            "expand",
            "locale",
            "ui_mode",
            "submit_type",
        ])?;
        let mode = params.text("mode").ok_or_else(|| ApiError::missing_param("mode"))?;
        if mode != "payment" {
            return Err(ApiError::invalid(
                format!("The fake supports mode=payment only, not {mode:?}."),
                Some("parameter_invalid_string"),
                Some("mode"),
            ));
        }
        let mut amount_total = 0_i64;
        let mut currency: Option<String> = None;
        let mut index = 0;
        while params.has_prefix(&format!("line_items[{index}]")) {
            let item = format!("line_items[{index}]");
            if params.text(&format!("{item}[price]")).is_some() {
                return Err(ApiError::invalid(
                    "The fake knows no Price objects; describe the line item with price_data.",
                    Some("resource_missing"),
                    Some(&format!("{item}[price]")),
                ));
            }
            let item_currency = params.required_currency(&format!("{item}[price_data][currency]"))?;
            let unit_amount = params.required_int(&format!("{item}[price_data][unit_amount]"))?;
            params
                .text(&format!("{item}[price_data][product_data][name]"))
                .ok_or_else(|| ApiError::missing_param(&format!("{item}[price_data][product_data][name]")))?;
            let quantity = params.int(&format!("{item}[quantity]"))?.unwrap_or(1);
            if unit_amount < 0 || quantity < 1 {
                return Err(ApiError::invalid(
                    "Line items need a non-negative unit_amount and a positive quantity.",
                    Some("parameter_invalid_integer"),
                    Some(&item),
                ));
            }
            if currency.as_ref().is_some_and(|currency| *currency != item_currency) {
                return Err(ApiError::invalid(
                    "All line items must share one currency.",
                    Some("parameter_invalid_string"),
                    Some(&format!("{item}[price_data][currency]")),
                ));
            }
            currency = Some(item_currency);
            amount_total = unit_amount
                .checked_mul(quantity)
                .and_then(|line_total| amount_total.checked_add(line_total))
                .ok_or_else(|| ApiError::invalid("The amount is too large.", Some("amount_too_large"), Some(&item)))?;
            index += 1;
        }
        let currency = currency.ok_or_else(|| ApiError::missing_param("line_items"))?;
        let intent_capture_method = params.one_of(
            "payment_intent_data[capture_method]",
            &["automatic", "automatic_async", "manual"],
            "automatic",
        )?;
        let created = unix_now();
        let expires_at = match params.int("expires_at")? {
            Some(expires_at) => expires_at,
            None => created + 24 * 3600,
        };
        let session = Session {
            id: new_id("cs_test_"),
            amount_total,
            currency,
            success_url: params.text("success_url"),
            cancel_url: params.text("cancel_url"),
            client_reference_id: params.text("client_reference_id"),
            metadata: params.map("metadata"),
            intent_capture_method,
            intent_metadata: params.map("payment_intent_data[metadata]"),
            intent_description: params.text("payment_intent_data[description]"),
            payment_intent: None,
            status: "open",
            payment_status: "unpaid",
            created,
            expires_at,
        };
        let session_json = self.session_json(&session, base_url);
        self.sessions.push(session);
        Ok(session_json)
    }

    fn expire_session(&mut self, id: &str, params: &Params, base_url: &str) -> Result<Value, ApiError> {
        params.allow(&["expand"])?;
        let session = self.session_mut(id).ok_or_else(|| ApiError::no_such("checkout.session", id, "session"))?;
        if session.status != "open" {
            return Err(ApiError::invalid(
                format!(
                    "Only Checkout Sessions with a status in [\"open\"] can be expired; this one is {}.",
                    session.status
                ),
                Some("checkout_session_unexpected_state"),
                None,
            ));
        }
        session.status = "expired";
        let session = self.session(id).ok_or_else(|| ApiError::no_such("checkout.session", id, "session"))?;
        Ok(self.session_json(session, base_url))
    }

    fn pay_session(
        &mut self,
        session_id: &str,
        payment_method: &str,
        context: &RequestContext,
        base_url: &str,
    ) -> Result<String, FakeStripeError> {
        let session = self.session(session_id).ok_or_else(|| FakeStripeError::NoSuchSession(session_id.to_owned()))?;
        if session.status != "open" {
            return Err(FakeStripeError::SessionNotOpen {
                id: session_id.to_owned(),
                status: session.status.to_owned(),
            });
        }
        if !payment_method.starts_with("pm_") {
            return Err(FakeStripeError::Rejected(format!("no such payment method: {payment_method:?}")));
        }
        // A session keeps one PaymentIntent across attempts, as Stripe's hosted page does.
        let intent_id = match &session.payment_intent {
            Some(intent_id) => intent_id.clone(),
            None => {
                let id = new_id("pi_");
                let intent = Intent {
                    client_secret: client_secret(&id),
                    id,
                    amount: session.amount_total,
                    amount_capturable: 0,
                    amount_received: 0,
                    currency: session.currency.clone(),
                    capture_method: session.intent_capture_method.clone(),
                    confirmation_method: "automatic".to_owned(),
                    status: "requires_payment_method",
                    description: session.intent_description.clone(),
                    metadata: session.intent_metadata.clone(),
                    payment_method: Some(payment_method.to_owned()),
                    automatic_payment_methods: None,
                    return_url: session.success_url.clone(),
                    created: unix_now(),
                    canceled_at: None,
                    cancellation_reason: None,
                    latest_charge: None,
                    last_payment_error: None,
                    next_action: None,
                };
                let intent_id = intent.id.clone();
                self.intents.push(intent);
                if let Some(session) = self.session_mut(session_id) {
                    session.payment_intent = Some(intent_id.clone());
                }
                intent_id
            }
        };
        if let Some(intent) = self.intent_mut(&intent_id) {
            intent.payment_method = Some(payment_method.to_owned());
        }
        // The page authenticates the driver itself, so a 3-D Secure card is simply approved.
        let result = match card_outcome(payment_method) {
            CardOutcome::Decline(decline) => {
                let charge_id = self.new_charge(&intent_id, Some(decline));
                let error = ApiError::declined(decline, Some(&charge_id), None);
                if let Some(intent) = self.intent_mut(&intent_id) {
                    intent.latest_charge = Some(charge_id);
                    intent.last_payment_error = Some(error.body);
                }
                if let Some(intent) = self.intent(&intent_id) {
                    let intent_json = self.intent_json(intent, false);
                    self.emit("payment_intent.payment_failed", intent_json, context);
                }
                return Err(FakeStripeError::Rejected(decline.message().to_owned()));
            }
            CardOutcome::Approve | CardOutcome::Authenticate => intent_id.clone(),
        };
        let manual = self.intent(&intent_id).is_some_and(|intent| intent.capture_method == "manual");
        if let Some(session) = self.session_mut(session_id) {
            session.status = "complete";
            // Funds that are only held are not paid yet.
            session.payment_status = if manual { "unpaid" } else { "paid" };
        }
        if let Some(session) = self.session(session_id) {
            let session_json = self.session_json(session, base_url);
            self.emit("checkout.session.completed", session_json, context);
        }
        self.approve(&intent_id, context);
        Ok(result)
    }

    /// Records an event and posts it (or holds it).
    fn emit(&mut self, event_type: &str, object: Value, context: &RequestContext) {
        let event = json!({
            "id": new_id("evt_"),
            "object": "event",
            "api_version": stripe_shared::version::VERSION.as_str(),
            "created": unix_now(),
            "data": { "object": object },
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": context.request_id, "idempotency_key": context.idempotency_key },
            "type": event_type,
        });
        self.events.push(event.clone());
        if self.hold_webhooks {
            self.held_events.push(event);
        } else {
            self.post(event);
        }
    }

    fn post(&mut self, event: Value) {
        // The receiver lives as long as the fake; a send error means it is shutting down.
        let _ = self.outbox.send(event);
    }

    fn intent(&self, id: &str) -> Option<&Intent> {
        self.intents.iter().find(|intent| intent.id == id)
    }

    fn intent_mut(&mut self, id: &str) -> Option<&mut Intent> {
        self.intents.iter_mut().find(|intent| intent.id == id)
    }

    fn charge(&self, id: &str) -> Option<&Charge> {
        self.charges.iter().find(|charge| charge.id == id)
    }

    fn charge_mut(&mut self, id: &str) -> Option<&mut Charge> {
        self.charges.iter_mut().find(|charge| charge.id == id)
    }

    fn refund(&self, id: &str) -> Option<&Refund> {
        self.refunds.iter().find(|refund| refund.id == id)
    }

    fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.iter().find(|session| session.id == id)
    }

    fn session_mut(&mut self, id: &str) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|session| session.id == id)
    }

    fn intent_json(&self, intent: &Intent, expand_latest_charge: bool) -> Value {
        let latest_charge = match (&intent.latest_charge, expand_latest_charge) {
            (Some(charge_id), true) => self.charge(charge_id).map_or(json!(charge_id), charge_json),
            (Some(charge_id), false) => json!(charge_id),
            (None, _) => Value::Null,
        };
        json!({
            "id": intent.id,
            "object": "payment_intent",
            "amount": intent.amount,
            "amount_capturable": intent.amount_capturable,
            "amount_received": intent.amount_received,
            "application": null,
            "application_fee_amount": null,
            "automatic_payment_methods": intent.automatic_payment_methods,
            "canceled_at": intent.canceled_at,
            "cancellation_reason": intent.cancellation_reason,
            "capture_method": intent.capture_method,
            "client_secret": intent.client_secret,
            "confirmation_method": intent.confirmation_method,
            "created": intent.created,
            "currency": intent.currency,
            "customer": null,
            "description": intent.description,
            "last_payment_error": intent.last_payment_error,
            "latest_charge": latest_charge,
            "livemode": false,
            "metadata": intent.metadata,
            "next_action": intent.next_action,
            "on_behalf_of": null,
            "payment_method": intent.payment_method,
            "payment_method_types": ["card"],
            "processing": null,
            "receipt_email": null,
            "review": null,
            "setup_future_usage": null,
            "shipping": null,
            "source": null,
            "statement_descriptor": null,
            "statement_descriptor_suffix": null,
            "status": intent.status,
            "transfer_data": null,
            "transfer_group": null,
        })
    }

    fn refund_json(&self, refund: &Refund, params: &Params) -> Value {
        let charge = match self.charge(&refund.charge) {
            Some(charge) if params.expands("charge") => charge_json(charge),
            _ => json!(refund.charge),
        };
        let payment_intent = match self.intent(&refund.payment_intent) {
            Some(intent) if params.expands("payment_intent") => self.intent_json(intent, false),
            _ => json!(refund.payment_intent),
        };
        json!({
            "id": refund.id,
            "object": "refund",
            "amount": refund.amount,
            "balance_transaction": null,
            "charge": charge,
            "created": refund.created,
            "currency": refund.currency,
            "metadata": refund.metadata,
            "payment_intent": payment_intent,
            "reason": refund.reason,
            "receipt_number": null,
            "source_transfer_reversal": null,
            "status": "succeeded",
            "transfer_reversal": null,
        })
    }

    fn session_json(&self, session: &Session, base_url: &str) -> Value {
        let open = session.status == "open";
        json!({
            "id": session.id,
            "object": "checkout.session",
            "after_expiration": null,
            "allow_promotion_codes": null,
            "amount_subtotal": session.amount_total,
            "amount_total": session.amount_total,
            "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
            "billing_address_collection": null,
            "cancel_url": session.cancel_url,
            "client_reference_id": session.client_reference_id,
            "client_secret": null,
            "consent": null,
            "consent_collection": null,
            "created": session.created,
            "currency": session.currency,
            "custom_fields": [],
            "custom_text": { "after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null },
            "customer": null,
            "customer_email": null,
            "expires_at": session.expires_at,
            "invoice": null,
            "livemode": false,
            "locale": null,
            "metadata": session.metadata,
            "mode": "payment",
            "payment_intent": session.payment_intent,
            "payment_link": null,
            "payment_method_types": ["card"],
            "payment_status": session.payment_status,
            "phone_number_collection": { "enabled": false },
            "recovered_from": null,
            "setup_intent": null,
            "shipping_address_collection": null,
            "shipping_cost": null,
            "shipping_options": [],
            "status": session.status,
            "submit_type": null,
            "subscription": null,
            "success_url": session.success_url,
            "ui_mode": "hosted_page",
            // The hosted page exists only while the session is open.
            "url": open.then(|| format!("{base_url}pay/{}", session.id)),
        })
    }
}

fn charge_json(charge: &Charge) -> Value {
    let refunded = charge.amount_captured > 0 && charge.amount_refunded >= charge.amount_captured;
    let (status, outcome, failure_code, failure_message) = match charge.decline {
        Some(decline) => (
            "failed",
            json!({ "network_status": "declined_by_network", "reason": decline.code(), "risk_level": "normal", "seller_message": "The bank did not return any further details with this decline.", "type": "issuer_declined" }),
            json!("card_declined"),
            json!(decline.message()),
        ),
        None => (
            "succeeded",
            json!({ "network_status": "approved_by_network", "reason": null, "risk_level": "normal", "seller_message": "Payment complete.", "type": "authorized" }),
            Value::Null,
            Value::Null,
        ),
    };
    json!({
        "id": charge.id,
        "object": "charge",
        "amount": charge.amount,
        "amount_captured": charge.amount_captured,
        "amount_refunded": charge.amount_refunded,
        "application": null,
        "application_fee": null,
        "application_fee_amount": null,
        "balance_transaction": null,
        "billing_details": { "address": null, "email": null, "name": null, "phone": null },
        "calculated_statement_descriptor": "BERTH",
        "captured": charge.captured,
        "created": charge.created,
        "currency": charge.currency,
        "customer": null,
        "description": charge.description,
        "disputed": false,
        "failure_code": failure_code,
        "failure_message": failure_message,
        "fraud_details": {},
        "livemode": false,
        "metadata": charge.metadata,
        "on_behalf_of": null,
        "outcome": outcome,
        "paid": charge.decline.is_none(),
        "payment_intent": charge.payment_intent,
        "payment_method": charge.payment_method,
        "receipt_email": null,
        "refunded": refunded,
        "review": null,
        "shipping": null,
        "source_transfer": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": status,
        "transfer_data": null,
        "transfer_group": null,
    })
}

/// Form (or query) parameters as sent, nested keys flat: `metadata[berth_payment]`.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
            .map(Params)
            .map_err(|error| ApiError::invalid(format!("Invalid request body: {error}"), None, None))
    }

    /// The request's identity for idempotency: where it went and what it said.
    fn fingerprint(&self, method: &Method, path: &str) -> String {
        let mut pairs = self.0.clone();
        pairs.sort();
        let encoded = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("{method} {path}?{encoded}")
    }

    /// Refuses parameters the endpoint does not know, as Stripe does.
    fn allow(&self, known: &[&str]) -> Result<(), ApiError> {
        for (key, _) in &self.0 {
            let root = key.split('[').next().unwrap_or_default();
            if !known.contains(&root) {
                return Err(ApiError::invalid(
                    format!("Received unknown parameter: {root}"),
                    Some("parameter_unknown"),
                    Some(root),
                ));
            }
        }
        Ok(())
    }

    fn text(&self, key: &str) -> Option<String> {
        self.0.iter().rev().find(|(name, _)| name == key).map(|(_, value)| value.clone())
    }

    fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.text(key) {
            None => Ok(None),
            Some(value) => value.parse::<i64>().map(Some).map_err(|_| {
                ApiError::invalid(format!("Invalid integer: {value}"), Some("parameter_invalid_integer"), Some(key))
            }),
        }
    }

    fn required_int(&self, key: &str) -> Result<i64, ApiError> {
        self.int(key)?.ok_or_else(|| ApiError::missing_param(key))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.text(key).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::invalid(
                format!("Invalid boolean: {other}"),
                Some("parameter_invalid_boolean"),
                Some(key),
            )),
        }
    }

    /// A lower-case ISO 4217 code; Stripe accepts either case.
    fn required_currency(&self, key: &str) -> Result<String, ApiError> {
        let currency = self.text(key).ok_or_else(|| ApiError::missing_param(key))?.to_ascii_lowercase();
        if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_lowercase()) {
            return Err(ApiError::invalid(
                format!("Invalid currency: {currency}"),
                Some("parameter_invalid_string"),
                Some(key),
            ));
        }
        Ok(currency)
    }

    fn one_of(&self, key: &str, allowed: &[&str], default: &str) -> Result<String, ApiError> {
        match self.text(key) {
            None => Ok(default.to_owned()),
            Some(value) if allowed.contains(&value.as_str()) => Ok(value),
            Some(value) => Err(ApiError::bad_value(key, &value)),
        }
    }

    /// `prefix[name]=value` pairs as a map (`metadata[berth_payment]` → `berth_payment`).
    fn map(&self, prefix: &str) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix(prefix)?.strip_prefix('[')?.strip_suffix(']')?;
                (!name.contains('[')).then(|| (name.to_owned(), value.clone()))
            })
            .collect()
    }

    /// `name[0]=a&name[1]=b`, `name[]=a` or a single `name=a`, in order.
    fn list(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| {
                key == name
                    || key
                        .strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('['))
                        .and_then(|rest| rest.strip_suffix(']'))
                        .is_some_and(|index| index.bytes().all(|byte| byte.is_ascii_digit()))
            })
            .map(|(_, value)| value.clone())
            .collect()
    }

    fn expands(&self, field: &str) -> bool {
        self.list("expand").iter().any(|expanded| expanded == field)
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.0.iter().any(|(key, _)| key.starts_with(prefix))
    }
}

#[handler]
async fn api(request: &Request, body: Body, shared: Data<&Arc<Shared>>) -> Response {
    let body = match body.into_bytes().await {
        Ok(body) => body,
        Err(error) => {
            let error = ApiError::invalid(format!("Could not read the request body: {error}"), None, None);
            return Answer::error(error).into_response();
        }
    };
    let (answer, delay) =
        shared.handle(request.method(), request.uri().path(), request.uri().query(), request.headers(), &body);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    answer.into_response()
}

#[derive(serde::Deserialize)]
struct PayQuery {
    payment_method: Option<String>,
}

/// The hosted payment page, reduced to "the driver paid": `GET /pay/{session_id}`, optionally
/// with `?payment_method=pm_card_chargeDeclined` to try a declining card.
#[handler]
fn pay_page(Path(session_id): Path<String>, Query(query): Query<PayQuery>, shared: Data<&Arc<Shared>>) -> Response {
    let payment_method = query.payment_method.unwrap_or_else(|| "pm_card_visa".to_owned());
    let result =
        shared.state().pay_session(&session_id, &payment_method, &RequestContext::dashboard(), &shared.base_url);
    match result {
        Ok(_) => {
            let success_url = shared.state().session(&session_id).and_then(|session| session.success_url.clone());
            let back = success_url
                .map(|url| format!(r#"<p><a href="{}">Back to the merchant</a></p>"#, escape_html(&url)))
                .unwrap_or_default();
            page(StatusCode::OK, &format!("<p>Paid. You can close this page.</p>{back}"))
        }
        Err(error) => page(StatusCode::BAD_REQUEST, &format!("<p>Not paid: {}</p>", escape_html(&error.to_string()))),
    }
}

/// The 3-D Secure page, reduced to "the driver confirmed": `GET /authenticate/{intent_id}`.
#[handler]
fn authenticate_page(Path(intent_id): Path<String>, shared: Data<&Arc<Shared>>) -> Response {
    match shared.state().authenticate(&intent_id, &RequestContext::dashboard()) {
        Ok(()) => page(StatusCode::OK, "<p>Authenticated. You can close this page.</p>"),
        Err(error) => page(StatusCode::BAD_REQUEST, &format!("<p>{}</p>", escape_html(&error.to_string()))),
    }
}

fn page(status: StatusCode, content: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Fake Stripe</title></head><body>{content}</body></html>"
    );
    Html(html).with_status(status).into_response()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Posts events one at a time, in order, signed at sending time; retries with back-off.
async fn send_webhooks(shared: Arc<Shared>, mut outbox: mpsc::UnboundedReceiver<Value>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    while let Some(event) = outbox.recv().await {
        let Some(url) = shared.state().webhook_url.clone() else { continue };
        // Stripe sends pretty-printed JSON; the signature covers exactly these bytes.
        let body = serde_json::to_vec_pretty(&event).unwrap_or_default();
        let mut backoff = WEBHOOK_FIRST_BACKOFF;
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            let signature = stripe_signature::sign(&shared.webhook_secret, unix_now(), &body);
            let sent = client
                .post(&url)
                .header("content-type", "application/json; charset=utf-8")
                .header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
                .header("stripe-signature", signature)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => {
                    tracing::warn!(event = %event["id"], attempt, status = %response.status(), "fake stripe webhook refused");
                }
                Err(error) => {
                    tracing::warn!(event = %event["id"], attempt, error = %error, "fake stripe webhook failed")
                }
            }
            if attempt < WEBHOOK_ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}

/// The secret the client-side SDK would confirm with; tests never need it, Stripe always sends it.
fn client_secret(intent_id: &str) -> String {
    format!("{intent_id}_secret_{}", random_alphanumeric(25))
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_alphanumeric(24))
}

fn random_alphanumeric(len: usize) -> String {
    rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(len).map(char::from).collect()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
}
