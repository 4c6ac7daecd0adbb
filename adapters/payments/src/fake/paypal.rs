//! A stateful fake of PayPal's REST API on loopback, for tests and the demo: OAuth client
//! credentials, Orders v2 (create, approve, authorize, capture), Payments v2 (authorization
//! capture and void, capture refund), webhooks signed like PayPal's and the signature postback.
//!
//! Faithful to what berth relies on (`shared/wire-formats/README.md`, "paypal/"): status codes
//! (create `201`; order authorize/capture `201`, `200` when a `PayPal-Request-Id` replays; void
//! `204` without a body unless `Prefer: return=representation`), PayPal's error bodies, minimal
//! versus full representations, decimal-string amounts, idempotency by `PayPal-Request-Id` (a
//! repeat replays the saved answer; only successes are saved, so a failed call can be retried
//! with its key), bearer tokens (`401 invalid_token` otherwise).
//!
//! Webhooks carry `paypal-transmission-*` headers and a signature over
//! `"<transmission id>|<transmission time>|<webhook id>|<crc32 of the body>"`, RSA-SHA256
//! PKCS#1 v1.5, made with the fake's own key (one 2048-bit key per process: generating it is
//! the slow part). Its self-signed certificate is served at the `paypal-cert-url`, under
//! PayPal's own path (`/v1/notifications/certs/{id}`). `POST /v1/notifications/verify-webhook-signature`
//! checks the signature over the `webhook_event` bytes exactly as they appear in the postback,
//! with the fake's key or a certificate registered by [`FakePaypal::trust_certificate`] (PayPal's
//! real one, to check real deliveries); it does not check that the webhook id is the app's.
//!
//! Deliberately absent: payment sources other than the PayPal wallet, PATCH, reauthorization,
//! the `409` for concurrent calls, and idempotency-key expiry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use poem::http::{Method, StatusCode};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Request, Response, Server};
use rand::Rng;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// How the fake is set up.
#[derive(Clone)]
pub struct FakePaypalConfig {
    /// The credentials the token endpoint accepts.
    pub client_id: String,
    pub client_secret: String,
    /// Where webhooks are posted; `None` records them without sending.
    pub webhook_url: Option<String>,
    /// The webhook id the deliveries are signed for.
    pub webhook_id: String,
}

impl Default for FakePaypalConfig {
    fn default() -> Self {
        Self {
            client_id: "fake-paypal-client".into(),
            client_secret: "fake-paypal-secret".into(),
            webhook_url: None,
            webhook_id: "1JE4291016473214C".into(),
        }
    }
}

impl std::fmt::Debug for FakePaypalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakePaypalConfig")
            .field("client_id", &self.client_id)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_id", &self.webhook_id)
            .finish_non_exhaustive()
    }
}

/// A failure to inject into the next API calls (the token endpoint is never failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `500 INTERNAL_SERVER_ERROR`.
    ServerError,
    /// The call goes through, but its answer comes only after this long: the client gives up,
    /// the money moved.
    Timeout(Duration),
    /// `422 UNPROCESSABLE_ENTITY` with issue `INSTRUMENT_DECLINED`. Waits for the next call that
    /// moves money (create order, authorize, capture, refund); other calls pass.
    Decline,
}

/// One webhook transmission: every delivery attempt of it carries these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentWebhook {
    pub event_id: String,
    pub event_type: String,
    pub transmission_id: String,
    /// Header names lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the webhook endpoint answered `2xx`.
    pub delivered: bool,
}

/// A request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub request_id: Option<String>,
    pub body: Option<Value>,
    pub status: u16,
}

/// The running fake. Dropping it stops the server.
pub struct FakePaypal {
    base_url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakePaypal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakePaypal").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

impl Drop for FakePaypal {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The process's signing key and its self-signed certificate.
struct Keys {
    signing: SigningKey<Sha256>,
    verifying: RsaPublicKey,
    cert_pem: String,
}

static KEYS: OnceLock<Result<Keys, String>> = OnceLock::new();

fn generate_keys() -> Result<Keys, String> {
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::EncodePem;
    use x509_cert::der::pem::LineEnding;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| e.to_string())?;
    let public = private.to_public_key();
    let signing = SigningKey::<Sha256>::new(private);
    let subject: x509_cert::name::Name =
        "CN=messageverificationcerts.fake-paypal.invalid,O=berth fake PayPal".parse().map_err(|e| format!("{e}"))?;
    let validity =
        x509_cert::time::Validity::from_now(Duration::from_secs(10 * 365 * 24 * 3600)).map_err(|e| e.to_string())?;
    let spki = SubjectPublicKeyInfoOwned::from_key(public.clone()).map_err(|e| e.to_string())?;
    let serial = x509_cert::serial_number::SerialNumber::from(rand::thread_rng().r#gen::<u32>());
    let builder =
        CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signing).map_err(|e| e.to_string())?;
    let cert = builder.build::<Signature>().map_err(|e| e.to_string())?;
    let cert_pem = cert.to_pem(LineEnding::LF).map_err(|e| e.to_string())?;
    Ok(Keys { signing, verifying: public, cert_pem })
}

/// The text PayPal signs for a webhook transmission:
/// `"<transmission id>|<transmission time>|<webhook id>|<CRC32 of the body as unsigned decimal>"`.
pub fn signed_message(transmission_id: &str, transmission_time: &str, webhook_id: &str, body: &[u8]) -> String {
    format!("{transmission_id}|{transmission_time}|{webhook_id}|{}", crc32fast::hash(body))
}

/// The RSA public key of a PEM X.509 certificate (PayPal's `paypal-cert-url` serves one).
pub fn certificate_public_key(pem: &str) -> Result<RsaPublicKey, String> {
    use x509_cert::der::{DecodePem, Encode};
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).map_err(|e| format!("not a PEM certificate: {e}"))?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
    RsaPublicKey::from_public_key_der(&spki).map_err(|e| format!("not an RSA key: {e}"))
}

/// Whether `signature_b64` is an RSA-SHA256 (PKCS#1 v1.5) signature of `message` by `key`.
pub fn verify_signature(key: &RsaPublicKey, message: &str, signature_b64: &str) -> bool {
    let Ok(bytes) = BASE64.decode(signature_b64.trim()) else { return false };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else { return false };
    VerifyingKey::<Sha256>::new(key.clone()).verify(message.as_bytes(), &signature).is_ok()
}

/// Path of the fake's certificate; the id mimics PayPal's.
const CERT_PATH: &str = "/v1/notifications/certs/CERT-berth-fake-paypal";
/// Delivery attempts of one transmission, and the pause before each retry.
const DELIVERY_BACKOFF: [Duration; 3] =
    [Duration::from_millis(100), Duration::from_millis(400), Duration::from_secs(1)];

struct Shared {
    config: FakePaypalConfig,
    base_url: String,
    keys: &'static Keys,
    state: Arc<Mutex<State>>,
    deliveries: Option<mpsc::UnboundedSender<usize>>,
}

#[derive(Default)]
struct State {
    /// Where webhooks go now (`None`: recorded only).
    webhook_url: Option<String>,
    tokens: HashSet<String>,
    orders: BTreeMap<String, Value>,
    /// Payment id (authorization, capture, refund) to its order.
    owners: HashMap<String, String>,
    /// Order id to the page the payer returns to after approving.
    return_urls: HashMap<String, String>,
    /// `(path, PayPal-Request-Id)` to the saved answer.
    saved: HashMap<(String, String), Reply>,
    failures: Vec<Failure>,
    down: bool,
    hold: bool,
    held: Vec<usize>,
    sent: Vec<SentWebhook>,
    trusted: HashMap<String, RsaPublicKey>,
    requests: Vec<RecordedRequest>,
}

impl FakePaypal {
    /// Starts the fake on `127.0.0.1` on a free port.
    pub async fn start(config: FakePaypalConfig) -> io::Result<Self> {
        let keys = tokio::task::spawn_blocking(|| KEYS.get_or_init(generate_keys).as_ref())
            .await
            .map_err(io::Error::other)?
            .map_err(|e| io::Error::other(format!("cannot make the fake's signing key: {e}")))?;
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
        let address = acceptor
            .local_addr()
            .first()
            .and_then(|address| address.as_socket_addr().copied())
            .ok_or_else(|| io::Error::other("the listener has no socket address"))?;
        let base_url = format!("http://{address}");
        let state = Arc::new(Mutex::new(State { webhook_url: config.webhook_url.clone(), ..State::default() }));
        let deliveries = {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(deliver(state.clone(), receiver));
            Some(sender)
        };
        let shared = Arc::new(Shared { config, base_url: base_url.clone(), keys, state, deliveries });
        let endpoint_shared = shared.clone();
        let app = poem::endpoint::make(move |request: Request| {
            let shared = endpoint_shared.clone();
            async move { shared.handle(request).await }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.await;
            };
            let _ = Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(app, signal, Some(Duration::from_secs(1)))
                .await;
        });
        Ok(Self { base_url, shared, stop: Some(stop) })
    }

    /// Where webhooks go from now on (`None`: recorded only).
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.shared.state.lock().expect("invariant: fake state lock is never poisoned").webhook_url = url;
    }

    /// `http://127.0.0.1:<port>`: the `base_url` a client configures.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL of the fake's webhook-signing certificate.
    pub fn cert_url(&self) -> String {
        format!("{}{CERT_PATH}", self.base_url)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state()
    }

    /// Fails the next `n` API calls (see [`Failure`]).
    pub fn fail_next(&self, n: usize, failure: Failure) {
        self.state().failures.extend(std::iter::repeat_n(failure, n));
    }

    /// While down, every request is answered `503` with an HTML page, as a load balancer does
    /// in an outage.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Makes every issued access token invalid (as their expiry would).
    pub fn revoke_tokens(&self) {
        self.state().tokens.clear();
    }

    /// The payer approves the order on PayPal's page (what `GET /checkoutnow?token=<id>` does):
    /// the order becomes `APPROVED` and `CHECKOUT.ORDER.APPROVED` is sent. False if the order is
    /// unknown or not waiting for approval.
    pub fn approve_order(&self, order_id: &str) -> bool {
        self.shared.approve(&mut self.state(), order_id)
    }

    /// The order's full representation.
    pub fn order(&self, order_id: &str) -> Option<Value> {
        self.state().orders.get(order_id).cloned()
    }

    /// Ids of every order created, in id order.
    pub fn order_ids(&self) -> Vec<String> {
        self.state().orders.keys().cloned().collect()
    }

    /// Every webhook transmission so far, in the order they were made.
    pub fn sent_events(&self) -> Vec<SentWebhook> {
        self.state().sent.clone()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Sends an event again, as PayPal's "resend" does: the same body and event id, a new
    /// transmission (id, time, signature). False if no such event was sent.
    pub fn redeliver(&self, event_id: &str) -> bool {
        let mut state = self.state();
        let Some(sent) = state.sent.iter().rev().find(|sent| sent.event_id == event_id).cloned() else {
            return false;
        };
        self.shared.transmit(&mut state, &sent.event_id, &sent.event_type, sent.body);
        true
    }

    /// While held, new transmissions are recorded but not sent.
    pub fn hold_webhooks(&self, hold: bool) {
        self.state().hold = hold;
    }

    /// Sends the held transmissions, in order or in reverse (PayPal does not promise order).
    pub fn flush_webhooks(&self, reversed: bool) {
        let mut state = self.state();
        let mut held = std::mem::take(&mut state.held);
        if reversed {
            held.reverse();
        }
        for index in held {
            self.shared.queue(index);
        }
    }

    /// Verifies postbacks that name `cert_url` with that certificate's key (PayPal's real
    /// certificate, to check real deliveries through the postback).
    pub fn trust_certificate(&self, cert_url: &str, pem: &str) -> Result<(), String> {
        let key = certificate_public_key(pem)?;
        self.state().trusted.insert(cert_url.to_owned(), key);
        Ok(())
    }
}

/// Sends queued transmissions one at a time, in queue order, with a few retries each.
async fn deliver(state: Arc<Mutex<State>>, mut queue: mpsc::UnboundedReceiver<usize>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    while let Some(index) = queue.recv().await {
        let (sent, url) = {
            let state = state.lock().expect("invariant: fake state lock is never poisoned");
            (state.sent.get(index).cloned(), state.webhook_url.clone())
        };
        let (Some(sent), Some(url)) = (sent, url) else {
            continue;
        };
        for pause in std::iter::once(Duration::ZERO).chain(DELIVERY_BACKOFF) {
            tokio::time::sleep(pause).await;
            let mut request = client.post(&url).body(sent.body.clone());
            for (name, value) in &sent.headers {
                request = request.header(name, value);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let mut state = state.lock().expect("invariant: fake state lock is never poisoned");
                    if let Some(sent) = state.sent.get_mut(index) {
                        sent.delivered = true;
                    }
                    break;
                }
                Ok(response) => tracing::debug!(status = %response.status(), "fake paypal: webhook refused; retrying"),
                Err(error) => tracing::debug!(%error, "fake paypal: webhook delivery failed; retrying"),
            }
        }
    }
}

/// What the fake reads of a request.
struct Incoming {
    method: Method,
    path: String,
    query: String,
    authorization: Option<String>,
    request_id: Option<String>,
    /// `Prefer: return=representation`.
    representation: bool,
    body: Vec<u8>,
}

/// An answer, kept whole so an idempotent repeat can replay it.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
}

impl Reply {
    fn json(status: u16, body: &Value) -> Self {
        Self { status, body: body.to_string().into_bytes(), content_type: "application/json" }
    }

    fn empty(status: u16) -> Self {
        Self { status, body: Vec::new(), content_type: "application/json" }
    }

    fn html(status: u16, body: String) -> Self {
        Self { status, body: body.into_bytes(), content_type: "text/html; charset=utf-8" }
    }

    /// PayPal's error body: `{name, message, details: [{field, value, location, issue,
    /// description}], debug_id, links}`.
    fn error(status: u16, issue: &str, description: &str) -> Self {
        let (name, message) = match status {
            400 => ("INVALID_REQUEST", "Request is not well-formed, syntactically incorrect, or violates schema."),
            403 => ("NOT_AUTHORIZED", "Authorization failed due to insufficient permissions."),
            404 => ("RESOURCE_NOT_FOUND", "The specified resource does not exist."),
            422 => (
                "UNPROCESSABLE_ENTITY",
                "The requested action could not be performed, semantically incorrect, or failed business validation.",
            ),
            _ => ("INTERNAL_SERVER_ERROR", "An internal server error has occurred."),
        };
        let mut body = json!({
            "name": name,
            "message": message,
            "debug_id": debug_id(),
            "links": [{
                "href": format!("https://developer.paypal.com/docs/api/orders/v2/#error-{issue}"),
                "rel": "information_link",
                "method": "GET",
            }],
        });
        if status != 500 {
            body["details"] = json!([{ "location": "body", "issue": issue, "description": description }]);
        }
        Self::json(status, &body)
    }

    fn into_response(self) -> Response {
        let mut builder = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("paypal-debug-id", debug_id());
        if !self.body.is_empty() {
            builder = builder.content_type(self.content_type);
        }
        builder.body(self.body)
    }
}

const ID_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A PayPal-looking resource id: 17 upper-case letters and digits.
fn paypal_id() -> String {
    let mut rng = rand::thread_rng();
    (0..17).map(|_| ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())] as char).collect()
}

fn debug_id() -> String {
    let mut rng = rand::thread_rng();
    (0..13).map(|_| format!("{:x}", rng.gen_range(0..16))).collect()
}

fn now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Decimals PayPal takes for a currency: none for HUF, JPY, TWD and the currencies ISO 4217
/// gives none; two otherwise.
fn currency_digits(currency: &str) -> u32 {
    const WHOLE: &[&str] = &["HUF", "JPY", "TWD", "KRW", "CLP", "ISK", "VND", "XAF", "XOF", "PYG", "UGX"];
    if WHOLE.contains(&currency) { 0 } else { 2 }
}

/// An amount in the currency's smallest PayPal unit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Amount {
    currency: String,
    units: i64,
}

impl Amount {
    /// Reads `{currency_code, value}`; the error is the `422` issue.
    fn parse(value: &Value) -> Result<Self, Reply> {
        let currency = value["currency_code"].as_str().unwrap_or_default();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Reply::error(422, "CURRENCY_NOT_SUPPORTED", "Currency code is not supported."));
        }
        let text = value["value"].as_str().unwrap_or_default();
        let digits = currency_digits(currency);
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let numeric = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !numeric(whole) || !numeric(fraction) || fraction.len() > digits as usize {
            return Err(Reply::error(
                422,
                "DECIMAL_PRECISION",
                "If the currency supports decimals, only two decimal place precision is supported.",
            ));
        }
        let fraction_units: i64 = format!("{fraction:0<width$}", width = digits as usize).parse().unwrap_or(0);
        let units = whole
            .parse::<i64>()
            .ok()
            .and_then(|whole| whole.checked_mul(10_i64.pow(digits)))
            .and_then(|units| units.checked_add(fraction_units))
            .ok_or_else(|| Reply::error(422, "AMOUNT_TOO_LARGE", "The amount is too large."))?;
        Ok(Self { currency: currency.to_owned(), units })
    }

    fn to_json(&self) -> Value {
        let digits = currency_digits(&self.currency);
        let value = if digits == 0 {
            self.units.to_string()
        } else {
            let scale = 10_i64.pow(digits);
            format!("{}.{:0width$}", self.units / scale, self.units % scale, width = digits as usize)
        };
        json!({ "currency_code": self.currency, "value": value })
    }

    fn of(resource: &Value) -> Option<Self> {
        Self::parse(&resource["amount"]).ok()
    }
}

fn seller_protection() -> Value {
    json!({ "status": "ELIGIBLE", "dispute_categories": ["ITEM_NOT_RECEIVED", "UNAUTHORIZED_TRANSACTION"] })
}

/// A link object.
fn link(href: String, rel: &str, method: &str) -> Value {
    json!({ "href": href, "rel": rel, "method": method })
}

/// What a call changed that the caller should hear about: a webhook to send.
struct Emit {
    event_type: &'static str,
    resource_type: &'static str,
    summary: String,
    resource: Value,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("invariant: fake state lock is never poisoned")
    }

    async fn handle(&self, mut request: Request) -> Response {
        let header = |name: &str| request.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let mut incoming = Incoming {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().unwrap_or_default().to_owned(),
            authorization: header("authorization"),
            request_id: header("paypal-request-id"),
            representation: header("prefer").is_some_and(|prefer| prefer.contains("return=representation")),
            body: Vec::new(),
        };
        incoming.body = request.take_body().into_bytes().await.map(|bytes| bytes.to_vec()).unwrap_or_default();
        let (reply, delay) = {
            let mut state = self.state();
            let (reply, delay) = self.answer(&mut state, &incoming);
            state.requests.push(RecordedRequest {
                method: incoming.method.to_string(),
                path: incoming.path,
                request_id: incoming.request_id,
                body: serde_json::from_slice(&incoming.body).ok(),
                status: reply.status,
            });
            (reply, delay)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        reply.into_response()
    }

    /// The answer to one request, and how long to hold it back.
    fn answer(&self, state: &mut State, incoming: &Incoming) -> (Reply, Option<Duration>) {
        let Incoming { method, path, query, authorization, request_id, representation, body } = incoming;
        let (path, authorization, request_id, representation) =
            (path.as_str(), authorization.as_deref(), request_id.as_deref(), *representation);
        if state.down {
            return (Reply::html(503, "<html><body><h1>503 Service Unavailable</h1></body></html>".into()), None);
        }
        if *method == Method::GET && path == "/checkoutnow" {
            return (self.checkout_page(state, query), None);
        }
        if *method == Method::GET && path == CERT_PATH {
            let pem = self.keys.cert_pem.clone();
            return (Reply { status: 200, body: pem.into_bytes(), content_type: "application/x-pem-file" }, None);
        }
        if path == "/v1/oauth2/token" {
            return (self.token(state, method, authorization, body), None);
        }
        let mut delay = None;
        let moves_money = *method == Method::POST && !path.starts_with("/v1/notifications/");
        let applies = state.failures.first().is_some_and(|failure| *failure != Failure::Decline || moves_money);
        if applies {
            match state.failures.remove(0) {
                Failure::ServerError => return (Reply::error(500, "INTERNAL_SERVER_ERROR", "internal error"), None),
                Failure::Decline => {
                    let description = "The instrument presented was either declined by the processor or bank, \
                                       or it can't be used for this payment.";
                    return (Reply::error(422, "INSTRUMENT_DECLINED", description), None);
                }
                Failure::Timeout(after) => delay = Some(after),
            }
        }
        let token = authorization.and_then(|value| value.strip_prefix("Bearer "));
        if !token.is_some_and(|token| state.tokens.contains(token)) {
            let body = json!({"error": "invalid_token", "error_description": "Token signature verification failed"});
            return (Reply::json(401, &body), delay);
        }
        let saved_key = request_id.filter(|_| *method == Method::POST).map(|id| (path.to_owned(), id.to_owned()));
        if let Some(saved) = saved_key.as_ref().and_then(|key| state.saved.get(key)) {
            let mut replay = saved.clone();
            if replay.status == 201 && path.starts_with("/v2/checkout/orders") {
                replay.status = 200;
            }
            return (replay, delay);
        }
        let mut emits = Vec::new();
        let reply = self.route(state, method, path, representation, body, &mut emits);
        if let Some(key) = saved_key.filter(|_| (200..300).contains(&reply.status)) {
            state.saved.insert(key, reply.clone());
        }
        for emit in emits {
            self.event(state, emit);
        }
        (reply, delay)
    }

    fn token(&self, state: &mut State, method: &Method, authorization: Option<&str>, body: &[u8]) -> Reply {
        let presented = authorization
            .and_then(|value| value.strip_prefix("Basic "))
            .and_then(|encoded| BASE64.decode(encoded.trim()).ok())
            .and_then(|decoded| String::from_utf8(decoded).ok());
        let expected = format!("{}:{}", self.config.client_id, self.config.client_secret);
        if *method != Method::POST || presented.as_deref() != Some(expected.as_str()) {
            return Reply::json(
                401,
                &json!({"error": "invalid_client", "error_description": "Client Authentication failed"}),
            );
        }
        let form = String::from_utf8_lossy(body);
        if !form.split('&').any(|pair| pair == "grant_type=client_credentials") {
            let body = json!({"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"});
            return Reply::json(400, &body);
        }
        let access_token = format!("A21AA{}{}", paypal_id(), paypal_id());
        state.tokens.insert(access_token.clone());
        Reply::json(
            200,
            &json!({
                "scope": "https://uri.paypal.com/services/payments/payment/authcapture \
                          https://uri.paypal.com/services/payments/refund",
                "access_token": access_token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": 32400,
                "nonce": format!("{}-{}", now(), debug_id()),
            }),
        )
    }

    fn route(
        &self,
        state: &mut State,
        method: &Method,
        path: &str,
        representation: bool,
        body: &[u8],
        emits: &mut Vec<Emit>,
    ) -> Reply {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let json_body = || -> Result<Value, Reply> {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(json!({}));
            }
            serde_json::from_slice(body)
                .map_err(|_| Reply::error(400, "MALFORMED_REQUEST_JSON", "The request JSON is not well formed."))
        };
        let outcome = match (method.as_str(), segments.as_slice()) {
            ("POST", ["v2", "checkout", "orders"]) => {
                json_body().and_then(|body| self.create_order(state, &body, representation))
            }
            ("GET", ["v2", "checkout", "orders", id]) => {
                state.orders.get(*id).map(|order| Reply::json(200, order)).ok_or_else(not_found)
            }
            ("POST", ["v2", "checkout", "orders", id, "authorize"]) => {
                self.complete_order(state, id, "AUTHORIZE", representation, emits)
            }
            ("POST", ["v2", "checkout", "orders", id, "capture"]) => {
                self.complete_order(state, id, "CAPTURE", representation, emits)
            }
            ("GET", ["v2", "payments", kind @ ("authorizations" | "captures" | "refunds"), id]) => {
                payment(state, kind, id).map(|(_, resource)| Reply::json(200, &resource)).ok_or_else(not_found)
            }
            ("POST", ["v2", "payments", "authorizations", id, "capture"]) => {
                json_body().and_then(|body| self.capture(state, id, &body, representation, emits))
            }
            ("POST", ["v2", "payments", "authorizations", id, "void"]) => self.void(state, id, representation, emits),
            ("POST", ["v2", "payments", "captures", id, "refund"]) => {
                json_body().and_then(|body| self.refund(state, id, &body, representation, emits))
            }
            ("POST", ["v1", "notifications", "verify-webhook-signature"]) => self.verify(state, body),
            _ => Err(not_found()),
        };
        outcome.unwrap_or_else(|reply| reply)
    }

    fn order_links(&self, id: &str, status: &str, intent: &str, via_payment_source: bool) -> Value {
        let base = &self.base_url;
        let mut links = vec![link(format!("{base}/v2/checkout/orders/{id}"), "self", "GET")];
        if matches!(status, "CREATED" | "PAYER_ACTION_REQUIRED") {
            let rel = if via_payment_source { "payer-action" } else { "approve" };
            links.push(link(format!("{base}/checkoutnow?token={id}"), rel, "GET"));
        }
        if matches!(status, "CREATED" | "PAYER_ACTION_REQUIRED" | "APPROVED") {
            links.push(link(format!("{base}/v2/checkout/orders/{id}"), "update", "PATCH"));
            let action = intent.to_ascii_lowercase();
            links.push(link(format!("{base}/v2/checkout/orders/{id}/{action}"), &action, "POST"));
        }
        json!(links)
    }

    fn create_order(&self, state: &mut State, request: &Value, representation: bool) -> Result<Reply, Reply> {
        let intent = request["intent"].as_str().unwrap_or_default();
        if !matches!(intent, "AUTHORIZE" | "CAPTURE") {
            return Err(Reply::error(
                400,
                "INVALID_PARAMETER_VALUE",
                "The value of intent must be CAPTURE or AUTHORIZE.",
            ));
        }
        let Some(unit) = request["purchase_units"].as_array().and_then(|units| units.first()) else {
            return Err(Reply::error(400, "MISSING_REQUIRED_PARAMETER", "purchase_units is required."));
        };
        let amount = Amount::parse(&unit["amount"])?;
        if amount.units <= 0 {
            return Err(Reply::error(422, "AMOUNT_MUST_BE_POSITIVE", "The amount must be greater than zero."));
        }
        let via_payment_source = request["payment_source"]["paypal"].is_object();
        let status = if via_payment_source { "PAYER_ACTION_REQUIRED" } else { "CREATED" };
        let id = paypal_id();
        let mut purchase_unit = json!({
            "reference_id": unit["reference_id"].as_str().unwrap_or("default"),
            "amount": amount.to_json(),
            "payee": { "email_address": "merchant@fake-paypal.invalid", "merchant_id": "BERTHFAKEMERCH" },
        });
        for field in ["custom_id", "description", "invoice_id", "soft_descriptor"] {
            if let Some(value) = unit[field].as_str() {
                purchase_unit[field] = json!(value);
            }
        }
        let created = now();
        let mut order = json!({
            "id": id,
            "intent": intent,
            "status": status,
            "purchase_units": [purchase_unit],
            "create_time": created,
            "links": self.order_links(&id, status, intent, via_payment_source),
        });
        if via_payment_source {
            // PayPal echoes the payment source, not its experience context.
            order["payment_source"] = json!({ "paypal": {} });
        }
        if let Some(return_url) = request["payment_source"]["paypal"]["experience_context"]["return_url"].as_str() {
            state.return_urls.insert(id.clone(), return_url.to_owned());
        }
        state.orders.insert(id.clone(), order.clone());
        Ok(if representation { Reply::json(201, &order) } else { minimal(201, &order) })
    }

    fn checkout_page(&self, state: &mut State, query: &str) -> Reply {
        let token = query.split('&').find_map(|pair| pair.strip_prefix("token=")).unwrap_or_default().to_owned();
        if !self.approve(state, &token) {
            return Reply::html(404, "<html><body><p>This checkout session is not available.</p></body></html>".into());
        }
        let back = state
            .return_urls
            .get(&token)
            .map(|url| {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!(
                    "<p><a href=\"{url}{separator}token={token}&amp;PayerID=BERTHFAKEPAYER\">\
                     Return to the merchant</a></p>"
                )
            })
            .unwrap_or_default();
        Reply::html(
            200,
            format!("<html><body><p>You approved order {token} (berth fake PayPal).</p>{back}</body></html>"),
        )
    }

    fn approve(&self, state: &mut State, order_id: &str) -> bool {
        let links = {
            let Some(order) = state.orders.get(order_id) else { return false };
            if !matches!(order["status"].as_str(), Some("CREATED" | "PAYER_ACTION_REQUIRED")) {
                return false;
            }
            self.order_links(order_id, "APPROVED", order["intent"].as_str().unwrap_or_default(), false)
        };
        let order = state.orders.get_mut(order_id).expect("invariant: the order was just read");
        order["status"] = json!("APPROVED");
        order["update_time"] = json!(now());
        order["links"] = links;
        let payer = json!({
            "name": { "given_name": "Ada", "surname": "Driver" },
            "email_address": "driver@fake-paypal.invalid",
            "payer_id": "BERTHFAKEPAYER",
            "address": { "country_code": "DE" },
        });
        order["payer"] = payer.clone();
        order["payment_source"] = json!({ "paypal": {
            "email_address": payer["email_address"],
            "account_id": payer["payer_id"],
            "account_status": "VERIFIED",
            "name": payer["name"],
        }});
        let resource = order.clone();
        self.event(
            state,
            Emit {
                event_type: "CHECKOUT.ORDER.APPROVED",
                resource_type: "checkout-order",
                summary: "An order has been approved by buyer".into(),
                resource,
            },
        );
        true
    }

    /// `POST /v2/checkout/orders/{id}/authorize` or `/capture`: the approved order's payment.
    fn complete_order(
        &self,
        state: &mut State,
        order_id: &str,
        action: &str,
        representation: bool,
        emits: &mut Vec<Emit>,
    ) -> Result<Reply, Reply> {
        let order = state.orders.get(order_id).ok_or_else(not_found)?;
        let intent = order["intent"].as_str().unwrap_or_default().to_owned();
        if intent != action {
            return Err(Reply::error(
                422,
                "ACTION_DOES_NOT_MATCH_INTENT",
                "Order was created with an intent that does not match this action.",
            ));
        }
        match order["status"].as_str() {
            Some("APPROVED") => {}
            Some("COMPLETED") if action == "AUTHORIZE" => {
                return Err(Reply::error(422, "ORDER_ALREADY_AUTHORIZED", "Order already has an authorization."));
            }
            Some("COMPLETED") => {
                return Err(Reply::error(422, "ORDER_ALREADY_CAPTURED", "Order already captured."));
            }
            _ => {
                return Err(Reply::error(
                    422,
                    "ORDER_NOT_APPROVED",
                    "Payer has not yet approved the Order for payment.",
                ));
            }
        }
        let unit = &order["purchase_units"][0];
        let amount = Amount::of(unit).ok_or_else(|| Reply::error(500, "INTERNAL_SERVER_ERROR", "bad order"))?;
        let custom_id = unit["custom_id"].clone();
        let id = paypal_id();
        let base = &self.base_url;
        let created = now();
        let (kind, resource, emit) = if action == "AUTHORIZE" {
            let expires = (Utc::now() + chrono::Duration::days(29)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let resource = json!({
                "id": id,
                "status": "CREATED",
                "amount": amount.to_json(),
                "custom_id": custom_id,
                "seller_protection": seller_protection(),
                "expiration_time": expires,
                "create_time": created,
                "update_time": created,
                "links": [
                    link(format!("{base}/v2/payments/authorizations/{id}"), "self", "GET"),
                    link(format!("{base}/v2/payments/authorizations/{id}/capture"), "capture", "POST"),
                    link(format!("{base}/v2/payments/authorizations/{id}/void"), "void", "POST"),
                    link(format!("{base}/v2/payments/authorizations/{id}/reauthorize"), "reauthorize", "POST"),
                    link(format!("{base}/v2/checkout/orders/{order_id}"), "up", "GET"),
                ],
            });
            let emit = Emit {
                event_type: "PAYMENT.AUTHORIZATION.CREATED",
                resource_type: "authorization",
                summary: format!("A payment authorization was created for {}", describe(&amount)),
                resource: related(&resource, json!({ "order_id": order_id })),
            };
            ("authorizations", resource, emit)
        } else {
            let resource =
                self.capture_resource(&id, &amount, true, &custom_id, format!("{base}/v2/checkout/orders/{order_id}"));
            let emit = Emit {
                event_type: "PAYMENT.CAPTURE.COMPLETED",
                resource_type: "capture",
                summary: format!("Payment completed for {}", describe(&amount)),
                resource: related(&resource, json!({ "order_id": order_id })),
            };
            ("captures", resource, emit)
        };
        state.owners.insert(id.clone(), order_id.to_owned());
        let links = self.order_links(order_id, "COMPLETED", &intent, false);
        let order = state.orders.get_mut(order_id).expect("invariant: the order was just read");
        order["status"] = json!("COMPLETED");
        order["update_time"] = json!(created);
        order["links"] = links;
        push_payment(order, kind, resource);
        emits.push(emit);
        let order = order.clone();
        Ok(if representation { Reply::json(201, &order) } else { minimal(201, &order) })
    }

    fn capture_resource(&self, id: &str, amount: &Amount, final_capture: bool, custom_id: &Value, up: String) -> Value {
        let base = &self.base_url;
        let created = now();
        json!({
            "id": id,
            "status": "COMPLETED",
            "amount": amount.to_json(),
            "final_capture": final_capture,
            "custom_id": custom_id,
            "seller_protection": seller_protection(),
            "disbursement_mode": "INSTANT",
            "seller_receivable_breakdown": { "gross_amount": amount.to_json(), "net_amount": amount.to_json() },
            "create_time": created,
            "update_time": created,
            "links": [
                link(format!("{base}/v2/payments/captures/{id}"), "self", "GET"),
                link(format!("{base}/v2/payments/captures/{id}/refund"), "refund", "POST"),
                link(up, "up", "GET"),
            ],
        })
    }

    /// `POST /v2/payments/authorizations/{id}/capture`.
    fn capture(
        &self,
        state: &mut State,
        authorization_id: &str,
        request: &Value,
        representation: bool,
        emits: &mut Vec<Emit>,
    ) -> Result<Reply, Reply> {
        let (order_id, authorization) = payment(state, "authorizations", authorization_id).ok_or_else(not_found)?;
        match authorization["status"].as_str() {
            Some("CREATED" | "PARTIALLY_CAPTURED") => {}
            Some("CAPTURED") => {
                return Err(Reply::error(
                    422,
                    "AUTHORIZATION_ALREADY_CAPTURED",
                    "Authorization has been previously captured and hence cannot be captured again.",
                ));
            }
            Some("VOIDED") => {
                return Err(Reply::error(
                    422,
                    "AUTHORIZATION_VOIDED",
                    "A voided authorization cannot be captured or reauthorized.",
                ));
            }
            _ => {
                return Err(Reply::error(422, "AUTHORIZATION_EXPIRED", "An expired authorization cannot be captured."));
            }
        }
        let authorized = Amount::of(&authorization)
            .ok_or_else(|| Reply::error(500, "INTERNAL_SERVER_ERROR", "bad authorization"))?;
        let captured_before = captured_total(state, &order_id, authorization_id);
        let remaining = authorized.units - captured_before;
        let amount = if request["amount"].is_null() {
            Amount { currency: authorized.currency.clone(), units: remaining }
        } else {
            Amount::parse(&request["amount"])?
        };
        if amount.currency != authorized.currency {
            return Err(Reply::error(
                422,
                "CURRENCY_MISMATCH",
                "Currency of capture must be the same as currency of authorization.",
            ));
        }
        if amount.units <= 0 || amount.units > remaining {
            return Err(Reply::error(422, "MAX_CAPTURE_AMOUNT_EXCEEDED", "Capture amount exceeds allowable limit."));
        }
        let final_capture = request["final_capture"].as_bool().unwrap_or(false);
        let id = paypal_id();
        let custom_id = authorization["custom_id"].clone();
        let up = format!("{}/v2/payments/authorizations/{authorization_id}", self.base_url);
        let resource = self.capture_resource(&id, &amount, final_capture, &custom_id, up);
        let fully = final_capture || captured_before + amount.units >= authorized.units;
        state.owners.insert(id.clone(), order_id.clone());
        let order = state.orders.get_mut(&order_id).expect("invariant: a payment's order exists");
        if let Some(authorization) = payment_mut(order, "authorizations", authorization_id) {
            authorization["status"] = json!(if fully { "CAPTURED" } else { "PARTIALLY_CAPTURED" });
            authorization["update_time"] = json!(now());
        }
        push_payment(order, "captures", resource.clone());
        let with_related = related(&resource, json!({ "order_id": order_id, "authorization_id": authorization_id }));
        emits.push(Emit {
            event_type: "PAYMENT.CAPTURE.COMPLETED",
            resource_type: "capture",
            summary: format!("Payment completed for {}", describe(&amount)),
            resource: with_related.clone(),
        });
        Ok(if representation { Reply::json(201, &with_related) } else { minimal(201, &resource) })
    }

    /// `POST /v2/payments/authorizations/{id}/void`.
    fn void(
        &self,
        state: &mut State,
        authorization_id: &str,
        representation: bool,
        emits: &mut Vec<Emit>,
    ) -> Result<Reply, Reply> {
        let (order_id, authorization) = payment(state, "authorizations", authorization_id).ok_or_else(not_found)?;
        match authorization["status"].as_str() {
            Some("CREATED" | "PARTIALLY_CAPTURED") => {}
            Some("VOIDED") => {
                return Err(Reply::error(
                    422,
                    "AUTHORIZATION_VOIDED",
                    "A voided authorization cannot be voided again.",
                ));
            }
            Some("CAPTURED") => {
                return Err(Reply::error(
                    422,
                    "AUTHORIZATION_ALREADY_CAPTURED",
                    "Authorization has been previously captured and hence cannot be voided.",
                ));
            }
            _ => return Err(Reply::error(422, "AUTHORIZATION_EXPIRED", "An expired authorization cannot be voided.")),
        }
        let order = state.orders.get_mut(&order_id).expect("invariant: a payment's order exists");
        let authorization = payment_mut(order, "authorizations", authorization_id).expect("invariant: just found");
        authorization["status"] = json!("VOIDED");
        authorization["update_time"] = json!(now());
        let resource = related(authorization, json!({ "order_id": order_id }));
        emits.push(Emit {
            event_type: "PAYMENT.AUTHORIZATION.VOIDED",
            resource_type: "authorization",
            summary: "A payment authorization was voided".into(),
            resource: resource.clone(),
        });
        Ok(if representation { Reply::json(200, &resource) } else { Reply::empty(204) })
    }

    /// `POST /v2/payments/captures/{id}/refund`.
    fn refund(
        &self,
        state: &mut State,
        capture_id: &str,
        request: &Value,
        representation: bool,
        emits: &mut Vec<Emit>,
    ) -> Result<Reply, Reply> {
        let (order_id, capture) = payment(state, "captures", capture_id).ok_or_else(not_found)?;
        match capture["status"].as_str() {
            Some("COMPLETED" | "PARTIALLY_REFUNDED") => {}
            Some("REFUNDED") => {
                return Err(Reply::error(
                    422,
                    "CAPTURE_FULLY_REFUNDED",
                    "The capture has already been fully refunded.",
                ));
            }
            _ => return Err(Reply::error(422, "REFUND_NOT_ALLOWED", "Full refund refused.")),
        }
        let captured = Amount::of(&capture).ok_or_else(|| Reply::error(500, "INTERNAL_SERVER_ERROR", "bad capture"))?;
        let refunded_before = refunded_total(state, &order_id, capture_id);
        let remaining = captured.units - refunded_before;
        let amount = if request["amount"].is_null() {
            Amount { currency: captured.currency.clone(), units: remaining }
        } else {
            Amount::parse(&request["amount"])?
        };
        if amount.currency != captured.currency {
            return Err(Reply::error(
                422,
                "REFUND_CURRENCY_MISMATCH",
                "Refund must be in the same currency as the capture.",
            ));
        }
        if amount.units <= 0 || amount.units > remaining {
            return Err(Reply::error(
                422,
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or equal to the capture amount that has not yet been refunded.",
            ));
        }
        let total = Amount { currency: captured.currency.clone(), units: refunded_before + amount.units };
        let id = paypal_id();
        let base = &self.base_url;
        let created = now();
        let resource = json!({
            "id": id,
            "status": "COMPLETED",
            "amount": amount.to_json(),
            "custom_id": capture["custom_id"],
            "seller_payable_breakdown": {
                "gross_amount": amount.to_json(),
                "net_amount": amount.to_json(),
                "total_refunded_amount": total.to_json(),
            },
            "create_time": created,
            "update_time": created,
            "links": [
                link(format!("{base}/v2/payments/refunds/{id}"), "self", "GET"),
                link(format!("{base}/v2/payments/captures/{capture_id}"), "up", "GET"),
            ],
        });
        state.owners.insert(id.clone(), order_id.clone());
        let order = state.orders.get_mut(&order_id).expect("invariant: a payment's order exists");
        if let Some(capture) = payment_mut(order, "captures", capture_id) {
            capture["status"] = json!(if total.units >= captured.units { "REFUNDED" } else { "PARTIALLY_REFUNDED" });
            capture["update_time"] = json!(created);
        }
        push_payment(order, "refunds", resource.clone());
        emits.push(Emit {
            event_type: "PAYMENT.CAPTURE.REFUNDED",
            resource_type: "refund",
            summary: format!("A {} capture payment was refunded", describe(&amount)),
            resource: related(&resource, json!({ "order_id": order_id, "capture_id": capture_id })),
        });
        Ok(if representation { Reply::json(201, &resource) } else { minimal(201, &resource) })
    }

    /// `POST /v1/notifications/verify-webhook-signature`.
    fn verify(&self, state: &State, body: &[u8]) -> Result<Reply, Reply> {
        let malformed = || Reply::error(400, "MALFORMED_REQUEST_JSON", "The request JSON is not well formed.");
        let text = std::str::from_utf8(body).map_err(|_| malformed())?;
        let request: Value = serde_json::from_str(text).map_err(|_| malformed())?;
        let field = |name: &str| {
            request[name].as_str().map(str::to_owned).ok_or_else(|| {
                Reply::error(
                    400,
                    "MISSING_REQUIRED_PARAMETER",
                    &format!("A required field / parameter is missing: {name}."),
                )
            })
        };
        let (auth_algo, cert_url) = (field("auth_algo")?, field("cert_url")?);
        let (transmission_id, transmission_time) = (field("transmission_id")?, field("transmission_time")?);
        let (signature, webhook_id) = (field("transmission_sig")?, field("webhook_id")?);
        let event = raw_member(text, "webhook_event").filter(|event| event.starts_with('{')).ok_or_else(|| {
            Reply::error(400, "MISSING_REQUIRED_PARAMETER", "A required field / parameter is missing: webhook_event.")
        })?;
        let key = if cert_url == format!("{}{CERT_PATH}", self.base_url) {
            Some(&self.keys.verifying)
        } else {
            state.trusted.get(&cert_url)
        };
        let message = signed_message(&transmission_id, &transmission_time, &webhook_id, event.as_bytes());
        let verified =
            auth_algo == "SHA256withRSA" && key.is_some_and(|key| verify_signature(key, &message, &signature));
        Ok(Reply::json(200, &json!({ "verification_status": if verified { "SUCCESS" } else { "FAILURE" } })))
    }

    /// Records and signs a new event, and queues it.
    fn event(&self, state: &mut State, emit: Emit) {
        let id = format!("WH-{}-{}", paypal_id(), paypal_id());
        let base = &self.base_url;
        // PayPal's member order, not serde_json's sorted one: a receiver that re-serialises the
        // event before checking the signature fails here as it would against PayPal.
        let members = [
            ("id", json!(id)),
            ("event_version", json!("1.0")),
            ("create_time", json!(Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())),
            ("resource_type", json!(emit.resource_type)),
            ("resource_version", json!("2.0")),
            ("event_type", json!(emit.event_type)),
            ("summary", json!(emit.summary)),
            ("resource", emit.resource),
            (
                "links",
                json!([
                    link(format!("{base}/v1/notifications/webhooks-events/{id}"), "self", "GET"),
                    link(format!("{base}/v1/notifications/webhooks-events/{id}/resend"), "resend", "POST"),
                ]),
            ),
        ];
        let members: Vec<String> = members.iter().map(|(name, value)| format!("{}:{value}", json!(name))).collect();
        let body = format!("{{{}}}", members.join(","));
        self.transmit(state, &id, emit.event_type, body.into_bytes());
    }

    /// A new transmission of an event's bytes: fresh transmission id and time, signed.
    fn transmit(&self, state: &mut State, event_id: &str, event_type: &str, body: Vec<u8>) {
        let transmission_id = uuid::Uuid::now_v7().to_string();
        let transmission_time = now();
        let message = signed_message(&transmission_id, &transmission_time, &self.config.webhook_id, &body);
        let signature = BASE64.encode(self.keys.signing.sign(message.as_bytes()).to_bytes());
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("paypal-transmission-id", transmission_id.clone()),
            ("paypal-transmission-time", transmission_time),
            ("paypal-transmission-sig", signature),
            ("paypal-cert-url", format!("{}{CERT_PATH}", self.base_url)),
            ("paypal-auth-algo", "SHA256withRSA".to_owned()),
            ("paypal-auth-version", "v2".to_owned()),
            ("user-agent", "PayPal/AUHD-214.0-58391792".to_owned()),
            ("correlation-id", debug_id()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        state.sent.push(SentWebhook {
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            transmission_id,
            headers,
            body,
            delivered: false,
        });
        let index = state.sent.len() - 1;
        if state.hold {
            state.held.push(index);
        } else {
            self.queue(index);
        }
    }

    fn queue(&self, index: usize) {
        if let Some(deliveries) = &self.deliveries {
            // The receiver lives as long as the server; a send after shutdown has no one to reach.
            let _ = deliveries.send(index);
        }
    }
}

fn not_found() -> Reply {
    Reply::error(
        404,
        "INVALID_RESOURCE_ID",
        "Specified resource ID does not exist. Please check the resource ID and try again.",
    )
}

/// `Prefer: return=minimal`: id, status and links only.
fn minimal(status: u16, resource: &Value) -> Reply {
    Reply::json(status, &json!({ "id": resource["id"], "status": resource["status"], "links": resource["links"] }))
}

fn describe(amount: &Amount) -> String {
    let value = amount.to_json();
    format!("{} {}", value["value"].as_str().unwrap_or_default(), amount.currency)
}

/// A payment resource as the Payments API and webhooks show it, with its related ids.
fn related(resource: &Value, related_ids: Value) -> Value {
    let mut resource = resource.clone();
    resource["supplementary_data"] = json!({ "related_ids": related_ids });
    resource
}

fn push_payment(order: &mut Value, kind: &str, resource: Value) {
    let payments = &mut order["purchase_units"][0]["payments"];
    if !payments[kind].is_array() {
        payments[kind] = json!([]);
    }
    if let Some(list) = payments[kind].as_array_mut() {
        list.push(resource);
    }
}

fn payment_mut<'a>(order: &'a mut Value, kind: &str, id: &str) -> Option<&'a mut Value> {
    order["purchase_units"][0]["payments"][kind].as_array_mut()?.iter_mut().find(|payment| payment["id"] == id)
}

/// A payment resource by kind and id, with its order id and related ids.
fn payment(state: &State, kind: &str, id: &str) -> Option<(String, Value)> {
    let order_id = state.owners.get(id)?.clone();
    let order = state.orders.get(&order_id)?;
    let resource =
        order["purchase_units"][0]["payments"][kind].as_array()?.iter().find(|payment| payment["id"] == id)?;
    let related_ids = match kind {
        "captures" => {
            let up = resource["links"].as_array().and_then(|links| links.iter().find(|link| link["rel"] == "up"));
            let authorization_id = up
                .and_then(|link| link["href"].as_str())
                .and_then(|href| href.split_once("/v2/payments/authorizations/"))
                .map(|(_, id)| id.to_owned());
            match authorization_id {
                Some(authorization_id) => json!({ "order_id": order_id, "authorization_id": authorization_id }),
                None => json!({ "order_id": order_id }),
            }
        }
        _ => json!({ "order_id": order_id }),
    };
    Some((order_id, related(resource, related_ids)))
}

/// What the captures of an authorization took so far.
fn captured_total(state: &State, order_id: &str, authorization_id: &str) -> i64 {
    let suffix = format!("/v2/payments/authorizations/{authorization_id}");
    sum_where(state, order_id, "captures", |capture| {
        capture["links"].as_array().is_some_and(|links| {
            links
                .iter()
                .any(|link| link["rel"] == "up" && link["href"].as_str().is_some_and(|href| href.ends_with(&suffix)))
        })
    })
}

/// What the refunds of a capture returned so far.
fn refunded_total(state: &State, order_id: &str, capture_id: &str) -> i64 {
    let suffix = format!("/v2/payments/captures/{capture_id}");
    sum_where(state, order_id, "refunds", |refund| {
        refund["links"].as_array().is_some_and(|links| {
            links
                .iter()
                .any(|link| link["rel"] == "up" && link["href"].as_str().is_some_and(|href| href.ends_with(&suffix)))
        })
    })
}

fn sum_where(state: &State, order_id: &str, kind: &str, wanted: impl Fn(&Value) -> bool) -> i64 {
    state
        .orders
        .get(order_id)
        .and_then(|order| order["purchase_units"][0]["payments"][kind].as_array())
        .map(|items| items.iter().filter(|item| wanted(item)).filter_map(Amount::of).map(|amount| amount.units).sum())
        .unwrap_or(0)
}

/// The exact text of a top-level member of a JSON object (`text` must be valid JSON): what
/// the postback's `webhook_event` was, byte for byte, before any parsing.
fn raw_member<'a>(text: &'a str, wanted: &str) -> Option<&'a str> {
    let bytes = text.as_bytes();
    let skip = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    let mut at = skip(0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip(at);
        let key_end = json_value_end(bytes, at)?;
        let key: String = serde_json::from_str(&text[at..key_end]).ok()?;
        at = skip(key_end);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        at = skip(at + 1);
        let value_end = json_value_end(bytes, at)?;
        if key == wanted {
            return Some(&text[at..value_end]);
        }
        at = skip(value_end);
        match bytes.get(at) {
            Some(b',') => at += 1,
            _ => return None,
        }
    }
}

/// Where the JSON value starting at `start` ends (exclusive).
fn json_value_end(bytes: &[u8], start: usize) -> Option<usize> {
    let string_end = |start: usize| {
        let mut at = start + 1;
        while at < bytes.len() {
            match bytes[at] {
                b'\\' => at += 2,
                b'"' => return Some(at + 1),
                _ => at += 1,
            }
        }
        None
    };
    match *bytes.get(start)? {
        b'"' => string_end(start),
        b'{' | b'[' => {
            let mut depth = 0_usize;
            let mut at = start;
            while at < bytes.len() {
                match bytes[at] {
                    b'"' => {
                        at = string_end(at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
            None
        }
        _ => {
            let mut at = start;
            while at < bytes.len() && !matches!(bytes[at], b',' | b'}' | b']') && !bytes[at].is_ascii_whitespace() {
                at += 1;
            }
            Some(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_members_are_the_exact_bytes() {
        let text = r#" { "a" : [1, {"b": "}\"]"}], "webhook_event":{"z":1,  "a":"x"} ,"c":null}"#;
        assert_eq!(raw_member(text, "webhook_event"), Some(r#"{"z":1,  "a":"x"}"#));
        assert_eq!(raw_member(text, "a"), Some(r#"[1, {"b": "}\"]"}]"#));
        assert_eq!(raw_member(text, "c"), Some("null"));
        assert_eq!(raw_member(text, "missing"), None);
        assert_eq!(raw_member("[1]", "a"), None);
    }

    #[test]
    fn amounts_follow_paypals_decimals() {
        let amount = Amount::parse(&json!({"currency_code": "EUR", "value": "12.5"})).unwrap();
        assert_eq!(amount.units, 1250);
        assert_eq!(amount.to_json(), json!({"currency_code": "EUR", "value": "12.50"}));
        assert_eq!(Amount::parse(&json!({"currency_code": "HUF", "value": "1500"})).unwrap().units, 1500);
        for bad in [
            json!({"currency_code": "JPY", "value": "1.5"}),
            json!({"currency_code": "EUR", "value": "1.234"}),
            json!({"currency_code": "eur", "value": "1"}),
            json!({"value": "1"}),
        ] {
            assert_eq!(Amount::parse(&bad).map(|_| ()).map_err(|reply| reply.status), Err(422), "{bad}");
        }
    }
}
