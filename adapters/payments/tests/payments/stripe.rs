//! The Stripe adapter against the fake Stripe on loopback, the webhook signature scheme against
//! the SDKs' vectors, and webhook reading against real Stripe events (`shared/wire-formats`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_kernel::payment::{
    AuthorizeRequest, Money, PaymentEvent, PaymentFailure, PaymentProvider, ProviderPayment, ProviderStatus,
};
use berth_payments::fake::stripe::{Failure, FakeStripe, FakeStripeConfig};
use berth_payments::stripe::{StripeConfig, StripeProvider};
use berth_payments::stripe_signature::{self, SignatureError};
use serde_json::Value;
use tokio::task::JoinHandle;

const SECRET_KEY: &str = "sk_test_berth_fake_0123456789";
const WEBHOOK_SECRET: &str = "whsec_berth_test_secret";
/// Long enough for a loaded two-core machine; tests only wait this long when they fail.
const DEADLINE: Duration = Duration::from_secs(30);

/// Webhook headers as the port receives them: lower-case names, in order.
type Headers = Vec<(String, String)>;

// ---------------------------------------------------------------------------------------------
// Helpers

fn wire_formats_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/wire-formats/stripe")
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn provider_config(fake: &FakeStripe) -> StripeConfig {
    StripeConfig {
        webhook_secrets: vec![WEBHOOK_SECRET.to_owned()],
        base_url: fake.base_url(),
        timeout: DEADLINE,
        checkout_success_url: "https://berth.example/paid".to_owned(),
        checkout_cancel_url: "https://berth.example/cancelled".to_owned(),
        ..StripeConfig::new(SECRET_KEY)
    }
}

/// A fake Stripe (posting events to `webhook_url`) and the real adapter pointed at it.
async fn spawn_stripe(webhook_url: Option<String>) -> (FakeStripe, StripeProvider) {
    let fake = FakeStripe::start(FakeStripeConfig { webhook_url, ..FakeStripeConfig::new(SECRET_KEY, WEBHOOK_SECRET) })
        .await
        .expect("fake stripe starts");
    let provider = StripeProvider::new(provider_config(&fake)).expect("stripe client builds");
    (fake, provider)
}

fn authorize_request(key: &str, amount_minor: i64, payment_method: Option<&str>) -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: key.to_owned(),
        payment_ref: format!("pay_{key}"),
        amount: Money::new(amount_minor, "EUR"),
        description: "Parking at Quai 7, space 12".to_owned(),
        payment_method: payment_method.map(str::to_owned),
        return_url: None,
    }
}

fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, "EUR")
}

fn signed_headers(secret: &str, timestamp: i64, body: &[u8]) -> Headers {
    vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("stripe-signature".to_owned(), stripe_signature::sign(secret, timestamp, body)),
    ]
}

fn events_of_type(fake: &FakeStripe, event_type: &str) -> Vec<Value> {
    fake.sent_events().into_iter().filter(|event| event["type"] == event_type).collect()
}

/// One webhook delivery as our endpoint would see it.
#[derive(Debug, Clone)]
struct Delivery {
    headers: Headers,
    body: Vec<u8>,
}

/// A tiny webhook endpoint that records every delivery and answers 200.
struct WebhookInbox {
    url: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    server: JoinHandle<()>,
}

impl Drop for WebhookInbox {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl WebhookInbox {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks/stripe", listener.local_addr().unwrap());
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let sink = deliveries.clone();
        let app = poem::endpoint::make(move |mut request: poem::Request| {
            let sink = sink.clone();
            async move {
                let headers = request
                    .headers()
                    .iter()
                    .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
                    .collect();
                let body = request.take_body().into_vec().await.unwrap_or_default();
                sink.lock().unwrap().push(Delivery { headers, body });
                poem::http::StatusCode::OK
            }
        });
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
        let server = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self { url, deliveries, server }
    }

    /// Waits until at least `count` deliveries arrived, and returns them all.
    async fn wait_for(&self, count: usize) -> Vec<Delivery> {
        let started = Instant::now();
        loop {
            let deliveries = self.deliveries.lock().unwrap().clone();
            if deliveries.len() >= count {
                return deliveries;
            }
            assert!(started.elapsed() < DEADLINE, "expected {count} webhook deliveries, got {}", deliveries.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn verify(provider: &StripeProvider, delivery: &Delivery) -> PaymentEvent {
    provider.verify_webhook(&delivery.headers, &delivery.body).await.expect("the fake's webhook verifies")
}

#[track_caller]
fn assert_payment(payment: &ProviderPayment, status: ProviderStatus, amount_minor: i64) {
    assert_eq!(payment.status, status, "{payment:?}");
    assert_eq!(payment.amount, eur(amount_minor), "{payment:?}");
}

// ---------------------------------------------------------------------------------------------
// Signature scheme

#[test]
fn signature_vectors_from_the_sdks_sign_and_verify() {
    let text = std::fs::read_to_string(wire_formats_dir().join("stripe-signature.test-vectors.json")).unwrap();
    let vectors: Value = serde_json::from_str(&text).unwrap();
    let vectors = vectors["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 3);
    for vector in vectors {
        let secret = vector["secret"].as_str().unwrap();
        let timestamp = vector["timestamp"].as_i64().unwrap();
        let payload = vector["payload"].as_str().unwrap().as_bytes();
        let expected_v1 = vector["expected_v1"].as_str().unwrap();
        let source = vector["source"].as_str().unwrap();

        let signed = stripe_signature::sign(secret, timestamp, payload);
        assert_eq!(signed, format!("t={timestamp},v1={expected_v1}"), "{source}");
        if let Some(expected_header) = vector["expected_header"].as_str() {
            assert_eq!(signed, expected_header, "{source}");
        }
        // The SDK's own header (with a v0 entry, which is ignored) verifies as it stands.
        let header = vector["header_in_test"].as_str().unwrap_or(&signed);
        let secrets = [secret.to_owned()];
        assert_eq!(stripe_signature::verify(header, payload, &secrets, timestamp, 300), Ok(()), "{source}");
    }
}

#[test]
fn any_configured_secret_verifies_while_one_is_rotated() {
    let body = br#"{"id":"evt_1"}"#;
    let header = stripe_signature::sign("whsec_new", 1_700_000_000, body);
    let both = ["whsec_old".to_owned(), "whsec_new".to_owned()];
    assert_eq!(stripe_signature::verify(&header, body, &both, 1_700_000_000, 300), Ok(()));
    let old_only = ["whsec_old".to_owned()];
    assert_eq!(
        stripe_signature::verify(&header, body, &old_only, 1_700_000_000, 300),
        Err(SignatureError::NoSignatureMatches)
    );
}

#[test]
fn any_v1_entry_may_match() {
    let body = br#"{"id":"evt_1"}"#;
    let good = stripe_signature::sign(WEBHOOK_SECRET, 1_700_000_000, body);
    let good_v1 = good.split_once(",v1=").unwrap().1;
    let secrets = [WEBHOOK_SECRET.to_owned()];
    for header in [
        format!("t=1700000000,v1={},v1={good_v1}", "ab".repeat(32)),
        format!("t=1700000000,v1=not-hex,v1={good_v1},v0={}", "cd".repeat(32)),
        format!(" t=1700000000 , v1={good_v1} "),
    ] {
        assert_eq!(stripe_signature::verify(&header, body, &secrets, 1_700_000_000, 300), Ok(()), "{header}");
    }
}

#[test]
fn a_tampered_body_does_not_verify() {
    let body = br#"{"id":"evt_1","amount":100}"#;
    let header = stripe_signature::sign(WEBHOOK_SECRET, 1_700_000_000, body);
    let secrets = [WEBHOOK_SECRET.to_owned()];
    assert_eq!(
        stripe_signature::verify(&header, br#"{"id":"evt_1","amount":999}"#, &secrets, 1_700_000_000, 300),
        Err(SignatureError::NoSignatureMatches)
    );
}

#[test]
fn timestamps_beyond_the_tolerance_either_way_are_refused() {
    let body = br#"{"id":"evt_1"}"#;
    let signed_at = 1_700_000_000;
    let header = stripe_signature::sign(WEBHOOK_SECRET, signed_at, body);
    let secrets = [WEBHOOK_SECRET.to_owned()];
    for now in [signed_at - 300, signed_at, signed_at + 300] {
        assert_eq!(stripe_signature::verify(&header, body, &secrets, now, 300), Ok(()), "now = {now}");
    }
    for (now, skew_secs) in [(signed_at + 301, 301), (signed_at - 301, 301), (signed_at + 86_400, 86_400)] {
        let refused = stripe_signature::verify(&header, body, &secrets, now, 300);
        assert_eq!(refused, Err(SignatureError::TimestampOutsideTolerance { skew_secs, tolerance_secs: 300 }));
    }
    let message = stripe_signature::verify(&header, body, &secrets, signed_at + 301, 300).unwrap_err().to_string();
    assert_eq!(message, "the signature timestamp is 301 s away from now, beyond the tolerance of 300 s");
}

#[test]
fn garbage_headers_are_refused_with_a_reason() {
    let body = br#"{"id":"evt_1"}"#;
    let secrets = [WEBHOOK_SECRET.to_owned()];
    let cases = [
        ("", SignatureError::MissingTimestamp),
        ("garbage", SignatureError::MissingTimestamp),
        ("t=soon,v1=abcd", SignatureError::MissingTimestamp),
        ("t=99999999999999999999999,v1=abcd", SignatureError::MissingTimestamp),
        ("t=1700000000", SignatureError::NoV1Signature),
        ("t=1700000000,v0=abcd", SignatureError::NoV1Signature),
        ("t=1700000000,v1=zz", SignatureError::NoV1Signature),
        ("t=1700000000,v1=abcd", SignatureError::NoSignatureMatches),
        ("t=-9223372036854775808,v1=abcd", SignatureError::NoSignatureMatches),
    ];
    for (header, expected) in cases {
        assert_eq!(stripe_signature::verify(header, body, &secrets, 1_700_000_000, 300), Err(expected), "{header:?}");
    }
    let header = stripe_signature::sign(WEBHOOK_SECRET, 1_700_000_000, body);
    assert_eq!(
        stripe_signature::verify(&header, body, &[], 1_700_000_000, 300),
        Err(SignatureError::NoSecretConfigured)
    );
}

// ---------------------------------------------------------------------------------------------
// Payments through the adapter

#[tokio::test]
async fn authorize_capture_part_then_refund_in_two_steps() {
    let (fake, stripe) = spawn_stripe(None).await;
    assert_eq!(stripe.name(), "stripe");

    let authorized =
        stripe.authorize(&authorize_request("book-1-authorize", 2000, Some("pm_card_visa"))).await.unwrap();
    assert_payment(&authorized, ProviderStatus::Authorized, 2000);
    assert!(authorized.provider_ref.starts_with("pi_"), "{authorized:?}");
    assert_eq!(authorized.action_url, None);
    let intent = fake.payment_intent(&authorized.provider_ref).unwrap();
    assert_eq!(intent["capture_method"], "manual");
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["metadata"]["berth_payment"], "pay_book-1-authorize");
    assert_eq!(intent["description"], "Parking at Quai 7, space 12");

    let pi = authorized.provider_ref.as_str();
    let captured = stripe.capture(pi, &eur(1500), "book-1-capture").await.unwrap();
    assert_payment(&captured, ProviderStatus::Captured, 1500);
    assert_eq!(fake.payment_intent(pi).unwrap()["amount_received"], 1500);

    let first_refund = stripe.refund(pi, &eur(500), "book-1-refund-1").await.unwrap();
    assert_payment(&first_refund, ProviderStatus::PartiallyRefunded, 500);
    assert_payment(&stripe.retrieve(pi).await.unwrap(), ProviderStatus::PartiallyRefunded, 500);

    let second_refund = stripe.refund(pi, &eur(1000), "book-1-refund-2").await.unwrap();
    assert_payment(&second_refund, ProviderStatus::Refunded, 1000);
    assert_payment(&stripe.retrieve(pi).await.unwrap(), ProviderStatus::Refunded, 1500);

    let too_much = stripe.refund(pi, &eur(1), "book-1-refund-3").await.unwrap_err();
    assert!(
        matches!(&too_much, PaymentFailure::Invalid(message) if message.contains("already been refunded")),
        "{too_much:?}"
    );
    // One request per call: a refund learns from its own answer whether the charge is fully refunded.
    assert_eq!(fake.requests_count(), 7);
    let types: Vec<Value> = fake.sent_events().iter().map(|event| event["type"].clone()).collect();
    assert_eq!(
        types,
        ["payment_intent.amount_capturable_updated", "payment_intent.succeeded", "charge.refunded", "charge.refunded"]
    );
}

#[tokio::test]
async fn an_authorization_can_be_cancelled_once() {
    let (fake, stripe) = spawn_stripe(None).await;
    let authorized =
        stripe.authorize(&authorize_request("book-2-authorize", 1200, Some("pm_card_visa"))).await.unwrap();
    let voided = stripe.cancel(&authorized.provider_ref, "book-2-cancel").await.unwrap();
    assert_payment(&voided, ProviderStatus::Voided, 1200);
    let intent = fake.payment_intent(&authorized.provider_ref).unwrap();
    assert_eq!(intent["status"], "canceled");
    assert!(intent["canceled_at"].is_i64());

    let capture = stripe.capture(&authorized.provider_ref, &eur(1200), "book-2-capture").await.unwrap_err();
    assert!(
        matches!(&capture, PaymentFailure::Invalid(message) if message.contains("payment_intent_unexpected_state")),
        "{capture:?}"
    );
}

#[tokio::test]
async fn declined_cards_are_declined() {
    let (fake, stripe) = spawn_stripe(None).await;
    for (payment_method, decline_code) in [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ] {
        let key = format!("decline-{decline_code}");
        let failure = stripe.authorize(&authorize_request(&key, 900, Some(payment_method))).await.unwrap_err();
        let PaymentFailure::Declined(message) = &failure else { panic!("{payment_method}: {failure:?}") };
        assert!(message.contains(decline_code), "{message}");
    }
    // The declined intents stay behind, waiting for another card, with the reason.
    let intents = fake.payment_intents();
    assert_eq!(intents.len(), 2);
    for intent in &intents {
        assert_eq!(intent["status"], "requires_payment_method");
        assert_eq!(intent["last_payment_error"]["type"], "card_error");
    }
    assert_eq!(events_of_type(&fake, "payment_intent.payment_failed").len(), 2);

    fake.fail_next(1, Failure::Decline);
    let failure =
        stripe.authorize(&authorize_request("decline-injected", 900, Some("pm_card_visa"))).await.unwrap_err();
    assert!(matches!(failure, PaymentFailure::Declined(_)), "{failure:?}");
}

#[tokio::test]
async fn server_errors_and_outages_are_unavailable() {
    let (fake, stripe) = spawn_stripe(None).await;
    fake.fail_next(1, Failure::ServerError);
    let request = authorize_request("book-3-authorize", 800, Some("pm_card_visa"));
    let failure = stripe.authorize(&request).await.unwrap_err();
    assert!(matches!(failure, PaymentFailure::Unavailable(_)), "{failure:?}");
    // Stripe saves a 500 under its key like any other answer; a new key is a new request.
    let replayed = stripe.authorize(&request).await.unwrap_err();
    assert_eq!(replayed, failure);
    assert!(fake.payment_intents().is_empty());
    let authorized =
        stripe.authorize(&authorize_request("book-3-authorize-again", 800, Some("pm_card_visa"))).await.unwrap();
    assert_eq!(authorized.status, ProviderStatus::Authorized);

    fake.set_down(true);
    let failure = stripe.retrieve(&authorized.provider_ref).await.unwrap_err();
    assert!(matches!(failure, PaymentFailure::Unavailable(_)), "{failure:?}");
    fake.set_down(false);
    assert_eq!(stripe.retrieve(&authorized.provider_ref).await.unwrap().status, ProviderStatus::Authorized);
}

#[tokio::test]
async fn a_timeout_is_unavailable_and_the_retry_gets_the_saved_answer() {
    let (fake, stripe) = spawn_stripe(None).await;
    let impatient =
        StripeProvider::new(StripeConfig { timeout: Duration::from_secs(1), ..provider_config(&fake) }).unwrap();
    fake.fail_next(1, Failure::Timeout(Duration::from_secs(20)));
    let request = authorize_request("book-4-authorize", 700, Some("pm_card_visa"));
    let failure = impatient.authorize(&request).await.unwrap_err();
    assert!(matches!(&failure, PaymentFailure::Unavailable(message) if message.contains("in time")), "{failure:?}");

    // The request was carried out; the retry with the same key replays its answer.
    let retried = stripe.authorize(&request).await.unwrap();
    assert_payment(&retried, ProviderStatus::Authorized, 700);
    assert_eq!(fake.payment_intents().len(), 1);
}

#[tokio::test]
async fn the_same_key_replays_the_same_payment_intent() {
    let (fake, stripe) = spawn_stripe(None).await;
    let request = authorize_request("book-5-authorize", 1500, Some("pm_card_visa"));
    let first = stripe.authorize(&request).await.unwrap();
    let second = stripe.authorize(&request).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(fake.payment_intents().len(), 1);
    let authorized_events = events_of_type(&fake, "payment_intent.amount_capturable_updated");
    assert_eq!(authorized_events.len(), 1);
    assert_eq!(authorized_events[0]["request"]["idempotency_key"], "book-5-authorize");

    let captured = stripe.capture(&first.provider_ref, &eur(1500), "book-5-capture").await.unwrap();
    assert_eq!(stripe.capture(&first.provider_ref, &eur(1500), "book-5-capture").await.unwrap(), captured);
    assert_eq!(events_of_type(&fake, "payment_intent.succeeded").len(), 1);
}

#[tokio::test]
async fn the_same_key_with_other_parameters_is_invalid() {
    let (fake, stripe) = spawn_stripe(None).await;
    stripe.authorize(&authorize_request("book-6-authorize", 1500, Some("pm_card_visa"))).await.unwrap();
    let failure =
        stripe.authorize(&authorize_request("book-6-authorize", 1600, Some("pm_card_visa"))).await.unwrap_err();
    assert!(matches!(&failure, PaymentFailure::Invalid(message) if message.contains("same parameters")), "{failure:?}");
    assert_eq!(fake.payment_intents().len(), 1);
}

#[tokio::test]
async fn a_wrong_api_key_is_invalid() {
    let (fake, _) = spawn_stripe(None).await;
    let stranger =
        StripeProvider::new(StripeConfig { secret_key: "sk_test_wrong_key_9999".to_owned(), ..provider_config(&fake) })
            .unwrap();
    let failure = stranger.authorize(&authorize_request("book-7", 500, Some("pm_card_visa"))).await.unwrap_err();
    assert_eq!(failure, PaymentFailure::Invalid("Invalid API Key provided: ****9999".to_owned()));
}

#[tokio::test]
async fn references_that_are_not_stripe_ids_are_invalid_without_a_request() {
    let (fake, stripe) = spawn_stripe(None).await;
    for provider_ref in ["", "pi_1/capture", "../v1/charges", "pi_1?expand[]=x"] {
        let failure = stripe.retrieve(provider_ref).await.unwrap_err();
        assert!(matches!(failure, PaymentFailure::Invalid(_)), "{provider_ref:?}: {failure:?}");
    }
    assert_eq!(fake.requests_count(), 0);
}

#[tokio::test]
async fn three_d_secure_asks_the_driver_to_act_first() {
    let (fake, stripe) = spawn_stripe(None).await;
    let request = AuthorizeRequest {
        return_url: Some("https://berth.example/bookings/8".to_owned()),
        ..authorize_request("book-8-authorize", 2100, Some("pm_card_authenticationRequired"))
    };
    let pending = stripe.authorize(&request).await.unwrap();
    assert_payment(&pending, ProviderStatus::RequiresAction, 2100);
    let action_url = pending.action_url.clone().expect("a page to authenticate on");
    assert!(action_url.starts_with(&fake.base_url()), "{action_url}");

    let page = reqwest::get(&action_url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_payment(&stripe.retrieve(&pending.provider_ref).await.unwrap(), ProviderStatus::Authorized, 2100);
}

#[tokio::test]
async fn checkout_without_a_payment_method_pays_on_a_page_and_reports_by_webhook() {
    let inbox = WebhookInbox::start().await;
    let (fake, stripe) = spawn_stripe(Some(inbox.url.clone())).await;
    let request = authorize_request("book-9-authorize", 2500, None);
    let pending = stripe.authorize(&request).await.unwrap();
    assert_payment(&pending, ProviderStatus::RequiresAction, 2500);
    assert!(pending.provider_ref.starts_with("cs_"), "{pending:?}");
    let action_url = pending.action_url.clone().unwrap();
    assert_eq!(action_url, format!("{}pay/{}", fake.base_url(), pending.provider_ref));
    assert_eq!(stripe.retrieve(&pending.provider_ref).await.unwrap().status, ProviderStatus::RequiresAction);
    let session = fake.checkout_session(&pending.provider_ref).unwrap();
    assert_eq!(session["success_url"], "https://berth.example/paid");
    assert_eq!(session["metadata"]["berth_payment"], "pay_book-9-authorize");

    let intent_id = fake.pay_checkout_session(&pending.provider_ref, "pm_card_visa").unwrap();
    let intent = fake.payment_intent(&intent_id).unwrap();
    assert_eq!(intent["capture_method"], "manual");
    assert_eq!(intent["metadata"]["berth_payment"], "pay_book-9-authorize");

    let deliveries = inbox.wait_for(2).await;
    let completed = verify(&stripe, &deliveries[0]).await;
    assert_eq!(completed.status, ProviderStatus::Authorized);
    assert_eq!(completed.provider_ref, intent_id);
    assert_eq!(completed.payment_ref.as_deref(), Some("pay_book-9-authorize"));
    assert_eq!(completed.amount, Some(eur(2500)));
    let capturable = verify(&stripe, &deliveries[1]).await;
    assert_eq!(capturable.status, ProviderStatus::Authorized);
    assert_eq!(capturable.provider_ref, intent_id);
    assert_eq!(capturable.payment_ref.as_deref(), Some("pay_book-9-authorize"));
    assert_ne!(capturable.event_id, completed.event_id);

    // The session's reference leads to its PaymentIntent from now on.
    let retrieved = stripe.retrieve(&pending.provider_ref).await.unwrap();
    assert_eq!((retrieved.provider_ref.as_str(), retrieved.status), (intent_id.as_str(), ProviderStatus::Authorized));
    let captured = stripe.capture(&pending.provider_ref, &eur(2000), "book-9-capture").await.unwrap();
    assert_payment(&captured, ProviderStatus::Captured, 2000);
}

#[tokio::test]
async fn the_checkout_link_works_in_a_browser_and_an_unpaid_session_can_be_cancelled() {
    let (fake, stripe) = spawn_stripe(None).await;
    let paid = stripe.authorize(&authorize_request("book-10-authorize", 1000, None)).await.unwrap();
    let page = reqwest::get(paid.action_url.as_deref().unwrap()).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Paid. You can close this page."));
    assert_eq!(fake.checkout_session(&paid.provider_ref).unwrap()["status"], "complete");

    let abandoned = stripe.authorize(&authorize_request("book-11-authorize", 1000, None)).await.unwrap();
    let voided = stripe.cancel(&abandoned.provider_ref, "book-11-cancel").await.unwrap();
    assert_eq!(voided.status, ProviderStatus::Voided);
    let page = reqwest::get(abandoned.action_url.as_deref().unwrap()).await.unwrap();
    assert_eq!(page.status(), 400);
}

#[tokio::test]
async fn a_redelivered_event_keeps_its_id() {
    let inbox = WebhookInbox::start().await;
    let (fake, stripe) = spawn_stripe(Some(inbox.url.clone())).await;
    stripe.authorize(&authorize_request("book-12-authorize", 1000, Some("pm_card_visa"))).await.unwrap();
    let first = inbox.wait_for(1).await.remove(0);
    let event = verify(&stripe, &first).await;
    assert!(fake.redeliver(&event.event_id));
    assert!(!fake.redeliver("evt_unknown"));
    let second = inbox.wait_for(2).await.remove(1);
    assert_eq!(second.body, first.body);
    assert_eq!(verify(&stripe, &second).await, event);
}

#[tokio::test]
async fn held_events_can_arrive_out_of_order() {
    let inbox = WebhookInbox::start().await;
    let (fake, stripe) = spawn_stripe(Some(inbox.url.clone())).await;
    fake.hold_webhooks(true);
    let authorized =
        stripe.authorize(&authorize_request("book-13-authorize", 1000, Some("pm_card_visa"))).await.unwrap();
    stripe.capture(&authorized.provider_ref, &eur(1000), "book-13-capture").await.unwrap();
    assert_eq!(fake.sent_events().len(), 2);
    fake.flush_webhooks(true);
    let deliveries = inbox.wait_for(2).await;
    let mut statuses = Vec::new();
    for delivery in &deliveries {
        statuses.push(verify(&stripe, delivery).await.status);
    }
    assert_eq!(statuses, [ProviderStatus::Captured, ProviderStatus::Authorized]);
}

// ---------------------------------------------------------------------------------------------
// Webhooks: real Stripe events (API version 2020-08-27), forgeries

#[tokio::test]
async fn real_stripe_events_are_read() {
    let (_fake, stripe) = spawn_stripe(None).await;
    let usd = |amount_minor| Some(Money::new(amount_minor, "USD"));
    let cases = [
        (
            "event.payment_intent.amount_capturable_updated.json",
            "pi_000000000000000000000000",
            ProviderStatus::Authorized,
            usd(2000),
        ),
        ("event.payment_intent.succeeded.json", "pi_000000000000000000000000", ProviderStatus::Captured, usd(2000)),
        ("event.payment_intent.canceled.json", "pi_000000000000000000000000", ProviderStatus::Voided, usd(2000)),
        // A charge made without a PaymentIntent is known by its own id.
        ("event.charge.refunded.json", "ch_000000000000000000000000", ProviderStatus::Refunded, usd(100)),
        ("event.checkout.session.completed.json", "pi_000000000000000000000000", ProviderStatus::Authorized, usd(3000)),
    ];
    for (file, provider_ref, status, amount) in cases {
        let body = std::fs::read(wire_formats_dir().join(file)).unwrap();
        let event = stripe
            .verify_webhook(&signed_headers(WEBHOOK_SECRET, unix_now(), &body), &body)
            .await
            .unwrap_or_else(|failure| panic!("{file}: {failure:?}"));
        let expected = PaymentEvent {
            event_id: "evt_000000000000000000000000".to_owned(),
            provider_ref: provider_ref.to_owned(),
            payment_ref: None,
            status,
            amount,
        };
        assert_eq!(event, expected, "{file}");
    }
}

#[tokio::test]
async fn forged_stale_or_unsigned_webhooks_are_refused() {
    let (_fake, stripe) = spawn_stripe(None).await;
    let body = std::fs::read(wire_formats_dir().join("event.payment_intent.succeeded.json")).unwrap();
    let now = unix_now();
    let mut tampered = body.clone();
    let position = tampered.windows(4).position(|window| window == b"2000").unwrap();
    tampered[position] = b'9';
    let cases: [(&str, Headers, &[u8], &str); 5] = [
        ("wrong secret", signed_headers("whsec_someone_else", now, &body), &body, "no v1 signature matches"),
        (
            "forged signature",
            vec![("stripe-signature".to_owned(), format!("t={now},v1={}", "0f".repeat(32)))],
            &body,
            "no v1 signature matches",
        ),
        ("stale timestamp", signed_headers(WEBHOOK_SECRET, now - 301, &body), &body, "tolerance"),
        ("tampered body", signed_headers(WEBHOOK_SECRET, now, &body), &tampered, "no v1 signature matches"),
        ("no header", Vec::new(), &body, "no stripe-signature header"),
    ];
    for (case, headers, body, reason) in cases {
        let failure = stripe.verify_webhook(&headers, body).await.unwrap_err();
        assert!(
            matches!(&failure, PaymentFailure::SignatureInvalid(message) if message.contains(reason)),
            "{case}: {failure:?}"
        );
    }
}

#[tokio::test]
async fn unhandled_event_types_are_invalid() {
    let (_fake, stripe) = spawn_stripe(None).await;
    let body = br#"{"id":"evt_1","object":"event","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    let failure = stripe.verify_webhook(&signed_headers(WEBHOOK_SECRET, unix_now(), body), body).await.unwrap_err();
    assert_eq!(failure, PaymentFailure::Invalid("event type customer.created is not handled".to_owned()));
    let body = b"not json";
    let failure = stripe.verify_webhook(&signed_headers(WEBHOOK_SECRET, unix_now(), body), body).await.unwrap_err();
    assert!(matches!(failure, PaymentFailure::Invalid(_)), "{failure:?}");
}

// ---------------------------------------------------------------------------------------------
// The fake's wire format, seen without the adapter

#[tokio::test]
async fn the_fake_speaks_stripes_wire_format() {
    let (fake, _) = spawn_stripe(None).await;
    let http = reqwest::Client::new();
    let url = format!("{}v1/payment_intents", fake.base_url());
    let form = [
        ("amount", "1999"),
        ("currency", "EUR"),
        ("capture_method", "manual"),
        ("confirm", "true"),
        ("payment_method", "pm_card_visa"),
        ("automatic_payment_methods[enabled]", "true"),
        ("automatic_payment_methods[allow_redirects]", "never"),
        ("metadata[berth_payment]", "pay_raw"),
    ];

    let unauthenticated = http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let envelope: Value = unauthenticated.json().await.unwrap();
    assert_eq!(envelope["error"]["type"], "invalid_request_error");

    // Basic auth with the key as the user name is as good as Bearer.
    let created = http.post(&url).basic_auth(SECRET_KEY, None::<&str>).form(&form).send().await.unwrap();
    assert_eq!(created.status(), 200);
    assert!(created.headers()["request-id"].to_str().unwrap().starts_with("req_"));
    let intent: Value = created.json().await.unwrap();
    assert_eq!((intent["status"].as_str(), intent["currency"].as_str()), (Some("requires_capture"), Some("eur")));
    assert_eq!(intent["metadata"]["berth_payment"], "pay_raw");
    assert!(intent["latest_charge"].as_str().unwrap().starts_with("ch_"));

    let unknown =
        http.post(&url).bearer_auth(SECRET_KEY).form(&[("amount", "100"), ("colour", "red")]).send().await.unwrap();
    assert_eq!(unknown.status(), 400);
    let envelope: Value = unknown.json().await.unwrap();
    assert_eq!(
        (envelope["error"]["code"].as_str(), envelope["error"]["param"].as_str()),
        (Some("parameter_unknown"), Some("colour"))
    );

    let capture_url = format!("{}v1/payment_intents/{}/capture", fake.base_url(), intent["id"].as_str().unwrap());
    let captured = http.post(&capture_url).bearer_auth(SECRET_KEY).send().await.unwrap();
    assert_eq!(captured.status(), 200);
    let again = http.post(&capture_url).bearer_auth(SECRET_KEY).send().await.unwrap();
    assert_eq!(again.status(), 400);
    let envelope: Value = again.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "payment_intent_unexpected_state");
    assert_eq!(
        envelope["error"]["message"],
        "This PaymentIntent could not be captured because it has already been captured."
    );

    let missing = http
        .get(format!("{}v1/payment_intents/pi_nope", fake.base_url()))
        .bearer_auth(SECRET_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let envelope: Value = missing.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "resource_missing");

    fake.fail_next(1, Failure::ServerError);
    let failed = http
        .get(format!("{}v1/payment_intents/pi_nope", fake.base_url()))
        .bearer_auth(SECRET_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    assert_eq!(failed.headers()["stripe-should-retry"], "true");
    assert_eq!(fake.requests_count(), 7);
}

#[test]
fn configurations_do_not_print_secrets() {
    let config = StripeConfig { webhook_secrets: vec![WEBHOOK_SECRET.to_owned()], ..StripeConfig::new(SECRET_KEY) };
    let provider = StripeProvider::new(config.clone()).unwrap();
    let fake_config = FakeStripeConfig::new(SECRET_KEY, WEBHOOK_SECRET);
    for printed in [format!("{config:?}"), format!("{provider:?}"), format!("{fake_config:?}")] {
        assert!(!printed.contains(SECRET_KEY) && !printed.contains(WEBHOOK_SECRET), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}
