//! Payments end to end: a real server on each database, paying through the Stripe adapter
//! against a local Stripe that keeps PaymentIntents, signs its webhooks and fails on request.

use std::time::Duration;

use berth_payments::fake::stripe::{Failure, FakeStripe, FakeStripeConfig};
use berth_payments::stripe_signature;
use chrono::{DateTime, DurationRound, Utc};
use serde_json::{Value, json};

use crate::helpers::{Backend, Tenant, TestApp};

const SECRET_KEY: &str = "sk_test_berth_payments";
const WEBHOOK_SECRET: &str = "whsec_berth_payments";

/// Runs each `async fn(Backend)` on SQLite, and on PostgreSQL when it is configured.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::helpers::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if crate::helpers::postgres_url().is_none() {
                        eprintln!("BERTH_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
                        return;
                    }
                    super::$name(crate::helpers::Backend::Postgres).await;
                }
            }
        )*
    };
}

on_both!(
    a_card_payment_confirms_and_departure_captures,
    a_checkout_link_confirms_once_its_verified_webhook_arrives,
    a_declined_card_cancels_the_booking_and_frees_the_space,
    cancellation_takes_the_fee_and_releases_the_rest,
    an_extension_is_a_payment_of_its_own,
    a_provider_timeout_is_retried_with_the_same_key,
    out_of_order_and_missed_webhooks_are_repaired,
);

/// A server paying through a local Stripe, and a priced site.
struct World {
    app: TestApp,
    stripe: FakeStripe,
    tenant: Tenant,
    spaces: Vec<String>,
    driver: String,
}

/// Tariff: 2.00 per started hour; cancelling a confirmed booking costs 1.00; overstaying 5.00.
const TARIFF: &str = r#"
fn price(ctx) { base("Parking", increments(ctx.duration_minutes, 60) * 200) }
fn cancellation_fee(ctx) { fee("Late cancellation", 100) }
fn overstay_fee(ctx) { fee("Overstay", 500) }
"#;

async fn world(backend: Backend, customise: impl FnOnce(&mut berth::config::Config) + Send + 'static) -> World {
    let stripe = FakeStripe::start(FakeStripeConfig::new(SECRET_KEY, WEBHOOK_SECRET)).await.expect("fake stripe");
    let base_url = stripe.base_url();
    let app = TestApp::spawn_with(backend, move |config| {
        config.payments.providers = vec!["stripe".into()];
        config.payments.stripe = Some(berth::config::StripeConfig {
            secret_key: berth::config::Secret::new(SECRET_KEY),
            webhook_secrets: vec![
                berth::config::Secret::new("whsec_old_one"),
                berth::config::Secret::new(WEBHOOK_SECRET),
            ],
            base_url,
            timeout_secs: 2,
            return_url: "http://127.0.0.1/done".into(),
        });
        config.payments.retry_base_ms = 50;
        config.payments.relay_interval_ms = 50;
        // The tests run the booking clock and reconciliation themselves.
        config.payments.tick_interval_secs = 3600;
        config.payments.reconcile_interval_secs = 0;
        config.payments.reconcile_quiet_secs = 0;
        customise(config);
    })
    .await;
    stripe.set_webhook_url(Some(format!("{}/v1/webhooks/payments/stripe", app.base_url)));
    let tenant = app.new_tenant("acme").await;
    let (site_id, spaces) = tenant.site_with_spaces(&app, "Trindade", 2).await;
    let body = json!({"name": "tariff", "site_id": site_id, "currency": "EUR"});
    let set = app.post("/v1/rulesets", &tenant.admin_key, body).await.expect(201)["id"].as_str().unwrap().to_owned();
    let versions = format!("/v1/rulesets/{set}/versions");
    let tests = json!([{"name": "an hour", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T10:00"},
                        "expect": {"total_minor": 200}}]);
    app.post(&versions, &tenant.admin_key, json!({"source": TARIFF, "tests": tests})).await.expect(201);
    app.post(&format!("{versions}/1/publish"), &tenant.admin_key, json!({})).await.expect(200);
    let driver = app.new_driver("ana@example.com").await;
    World { app, stripe, tenant, spaces, driver }
}

impl World {
    /// A quote of space `space` from `from` to `to` (offsets from now).
    async fn quote(&self, space: usize, from: chrono::Duration, to: chrono::Duration) -> String {
        let now = Utc::now().duration_trunc(chrono::Duration::seconds(1)).unwrap();
        self.quote_at(space, now + from, now + to).await
    }

    async fn quote_at(&self, space: usize, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
        let body = json!({"space_id": self.spaces[space], "start": start.to_rfc3339(), "end": end.to_rfc3339()});
        self.app.post("/v1/quotes", &self.driver, body).await.expect(201)["id"].as_str().unwrap().to_owned()
    }

    /// Tomorrow, `from`..`to` hours after its first hour.
    async fn quote_tomorrow(&self, space: usize, from: i64, to: i64) -> String {
        let base = (Utc::now() + chrono::Duration::days(1)).duration_trunc(chrono::Duration::hours(1)).unwrap();
        self.quote_at(space, base + chrono::Duration::hours(from), base + chrono::Duration::hours(to)).await
    }

    async fn book(&self, quote: &str, payment_method: Option<&str>) -> Value {
        let mut body = json!({"quote_id": quote});
        if let Some(method) = payment_method {
            body["payment_method"] = json!(method);
        }
        self.app.post("/v1/bookings", &self.driver, body).await.expect(201)
    }

    async fn booking(&self, id: &str) -> Value {
        self.app.get(&format!("/v1/bookings/{id}"), &self.driver).await.expect(200)
    }

    /// Polls the booking until `done` holds (the relay and webhooks run in the background).
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let booking = self.booking(id).await;
            if done(&booking) {
                return booking;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {booking:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn receipt(&self, id: &str) -> Value {
        self.app.get(&format!("/v1/bookings/{id}/receipt"), &self.driver).await.expect(200)
    }

    async fn finish(self) {
        self.app.cleanup().await;
    }
}

fn status(booking: &Value) -> &str {
    booking["status"].as_str().unwrap_or_default()
}

fn payment_status(booking: &Value, index: usize) -> &str {
    booking["payments"][index]["status"].as_str().unwrap_or_default()
}

async fn a_card_payment_confirms_and_departure_captures(backend: Backend) {
    let world = world(backend, |_| {}).await;
    // Started two hours ago, ends in a few seconds: 120 whole minutes, 2 hours.
    let quote = world.quote(0, chrono::Duration::hours(-2), chrono::Duration::seconds(8)).await;
    let booked = world.book(&quote, Some("pm_card_visa")).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    // The authorization ran before the answer: confirmed at once.
    assert_eq!((status(&booked), payment_status(&booked, 0)), ("confirmed", "authorized"), "{booked:#}");
    assert_eq!(booked["payments"][0]["provider"], "stripe");
    let intents = world.stripe.payment_intents();
    assert_eq!(intents.len(), 1);
    assert_eq!((intents[0]["status"].as_str(), intents[0]["amount"].as_i64()), (Some("requires_capture"), Some(400)));
    assert_eq!(intents[0]["capture_method"], "manual");
    assert_eq!(intents[0]["metadata"]["berth_payment"], booked["payments"][0]["id"]);

    // Check-in, then leave after the end: the stay is captured and the overstay charged.
    let checked_in = world.app.post(&format!("/v1/bookings/{id}/check-in"), &world.driver, json!({})).await.expect(200);
    assert_eq!(status(&checked_in), "active");
    let end = chrono::DateTime::parse_from_rfc3339(booked["end"].as_str().unwrap()).unwrap();
    while Utc::now() <= end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = world.app.post(&format!("/v1/bookings/{id}/check-out"), &world.driver, json!({})).await.expect(200);
    assert_eq!(status(&out), "completed");
    let done = world
        .wait_for(&id, "capture and overstay", |booking| {
            payment_status(booking, 0) == "captured" && payment_status(booking, 1) == "captured"
        })
        .await;
    assert_eq!(done["payments"][1]["purpose"], "overstay");
    let receipt = world.receipt(&id).await;
    assert_eq!(
        (receipt["charged_minor"].as_i64(), receipt["net_minor"].as_i64()),
        (Some(900), Some(900)),
        "{receipt:#}"
    );
    assert_eq!(receipt["held_minor"], 0);
    let lines = receipt["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["description"].as_str().unwrap().starts_with("Parking"), "{receipt:#}");
    assert_eq!((lines[1]["description"].as_str(), lines[1]["amount_minor"].as_i64()), (Some("Overstay"), Some(500)));
    let captured: Vec<i64> = world
        .stripe
        .payment_intents()
        .iter()
        .filter(|intent| intent["status"] == "succeeded")
        .map(|intent| intent["amount_received"].as_i64().unwrap())
        .collect();
    assert_eq!(captured, vec![400, 500]);

    // Check-in again, or check-out twice: 409 naming the state.
    let problem = world.app.post(&format!("/v1/bookings/{id}/check-out"), &world.driver, json!({})).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("completed"), "{problem}");
    world.finish().await;
}

async fn a_checkout_link_confirms_once_its_verified_webhook_arrives(backend: Backend) {
    let world = world(backend, |_| {}).await;
    let quote = world.quote_tomorrow(0, 0, 2).await;
    let booked = world.book(&quote, None).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    assert_eq!((status(&booked), payment_status(&booked, 0)), ("pending_payment", "requires_action"), "{booked:#}");
    let url = booked["payments"][0]["action_url"].as_str().unwrap().to_owned();
    let session = url.rsplit('/').next().unwrap().to_owned();
    assert!(session.starts_with("cs_"), "{url}");

    // A forged delivery (wrong secret), a tampered body and a stale signature change nothing.
    let event = json!({"id": "evt_forged", "object": "event", "type": "checkout.session.completed",
                       "data": {"object": {"id": session, "object": "checkout.session", "payment_intent": "pi_forged",
                                           "metadata": {"berth_payment": booked["payments"][0]["id"]}}}});
    let body = event.to_string();
    let now = Utc::now().timestamp();
    for (signature, sent) in [
        (stripe_signature::sign("whsec_not_ours", now, body.as_bytes()), body.clone()),
        (stripe_signature::sign(WEBHOOK_SECRET, now, body.as_bytes()), body.replace("pi_forged", "pi_forged2")),
        (stripe_signature::sign(WEBHOOK_SECRET, now - 3600, body.as_bytes()), body.clone()),
        ("t=garbage".to_owned(), body.clone()),
    ] {
        let response = world
            .app
            .client_request("/v1/webhooks/payments/stripe", &[("stripe-signature", signature.as_str())], sent)
            .await;
        assert_eq!(response.status, 401, "{:?}", response.body);
        assert!(response.body["detail"].as_str().unwrap().contains("signature"), "{:?}", response.body);
    }
    assert_eq!(status(&world.booking(&id).await), "pending_payment");

    // The driver pays on the page: the signed webhook confirms the booking.
    world.stripe.pay_checkout_session(&session, "pm_card_visa").expect("pay");
    let confirmed = world.wait_for(&id, "confirmation", |booking| status(booking) == "confirmed").await;
    assert_eq!(payment_status(&confirmed, 0), "authorized");

    // Redelivery of every event is a no-op, answered 200 "duplicate".
    for event in world.stripe.sent_events() {
        assert!(world.stripe.redeliver(event["id"].as_str().unwrap()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = world.booking(&id).await;
    assert_eq!((status(&again), again["updated_at"].clone()), ("confirmed", confirmed["updated_at"].clone()));
    // A signed event for a payment berth does not know is acknowledged and ignored.
    let unknown = json!({"id": "evt_unknown", "object": "event", "type": "payment_intent.succeeded",
                         "data": {"object": {"id": "pi_unknown", "object": "payment_intent", "amount": 1, "amount_received": 1,
                                             "metadata": {}}}})
    .to_string();
    let signature = stripe_signature::sign(WEBHOOK_SECRET, Utc::now().timestamp(), unknown.as_bytes());
    let response = world
        .app
        .client_request("/v1/webhooks/payments/stripe", &[("stripe-signature", signature.as_str())], unknown)
        .await;
    assert_eq!((response.status, response.body["outcome"].as_str()), (200, Some("ignored")));
    // Unknown providers are 404.
    let response = world.app.client_request("/v1/webhooks/payments/nope", &[], "{}".to_owned()).await;
    assert_eq!(response.status, 404);
    world.finish().await;
}

async fn a_declined_card_cancels_the_booking_and_frees_the_space(backend: Backend) {
    let world = world(backend, |_| {}).await;
    let quote = world.quote_tomorrow(0, 0, 2).await;
    let booked = world.book(&quote, Some("pm_card_chargeDeclined")).await;
    assert_eq!((status(&booked), payment_status(&booked, 0)), ("cancelled", "failed"), "{booked:#}");
    assert!(booked["cancel_reason"].as_str().unwrap().contains("declined"), "{booked:#}");
    assert!(booked["payments"][0]["failure"].as_str().unwrap().contains("declined"), "{booked:#}");
    // The space is free for the same window again.
    let again = world.quote_tomorrow(0, 0, 2).await;
    let rebooked = world.book(&again, Some("pm_card_visa")).await;
    assert_eq!(status(&rebooked), "confirmed");
    world.finish().await;
}

async fn cancellation_takes_the_fee_and_releases_the_rest(backend: Backend) {
    let world = world(backend, |_| {}).await;
    // A driver cancels a confirmed booking: the 1.00 fee is captured, the rest released.
    let quote = world.quote_tomorrow(0, 0, 2).await;
    let booked = world.book(&quote, Some("pm_card_visa")).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    let cancelled =
        world.app.post(&format!("/v1/bookings/{id}/cancel"), &world.driver, json!({"reason": "plans changed"})).await;
    let cancelled = cancelled.expect(200);
    assert_eq!((status(&cancelled), cancelled["cancel_reason"].as_str()), ("cancelled", Some("plans changed")));
    world.wait_for(&id, "fee capture", |booking| payment_status(booking, 0) == "captured").await;
    let receipt = world.receipt(&id).await;
    assert_eq!(receipt["charged_minor"], 100, "{receipt:#}");
    assert_eq!(receipt["lines"][0]["description"], "Cancellation fee");
    let intent = &world.stripe.payment_intents()[0];
    assert_eq!((intent["status"].as_str(), intent["amount_received"].as_i64()), (Some("succeeded"), Some(100)));

    // The operator cancels: no fee, the hold is voided.
    let quote = world.quote_tomorrow(1, 0, 2).await;
    let booked = world.book(&quote, Some("pm_card_visa")).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    world.app.post(&format!("/v1/bookings/{id}/cancel"), &world.tenant.staff_key, json!({})).await.problem(403);
    let cancelled = world.app.post(&format!("/v1/bookings/{id}/cancel"), &world.tenant.admin_key, json!({})).await;
    assert_eq!(cancelled.expect(200)["cancel_reason"], "cancelled by the operator");
    world.wait_for(&id, "void", |booking| payment_status(booking, 0) == "voided").await;
    assert_eq!(world.receipt(&id).await["charged_minor"], 0);
    assert_eq!(world.stripe.payment_intents()[1]["status"], "canceled");

    // An unpaid hold cancels for free; a cancelled booking cannot be cancelled again.
    let quote = world.quote_tomorrow(0, 4, 5).await;
    let booked = world.book(&quote, None).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    let cancelled = world.app.post(&format!("/v1/bookings/{id}/cancel"), &world.driver, json!({})).await.expect(200);
    assert_eq!(status(&cancelled), "cancelled");
    let problem = world.app.post(&format!("/v1/bookings/{id}/cancel"), &world.driver, json!({})).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("cancelled"), "{problem}");
    // Another driver cannot touch it.
    let bea = world.app.new_driver("bea@example.com").await;
    world.app.post(&format!("/v1/bookings/{id}/cancel"), &bea, json!({})).await.problem(404);
    world.finish().await;
}

async fn an_extension_is_a_payment_of_its_own(backend: Backend) {
    let world = world(backend, |_| {}).await;
    let quote = world.quote_tomorrow(0, 0, 2).await;
    let booked = world.book(&quote, Some("pm_card_visa")).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    let end = chrono::DateTime::parse_from_rfc3339(booked["end"].as_str().unwrap()).unwrap();
    // Someone else holds the space from the third hour.
    let later = world.quote_tomorrow(0, 3, 4).await;
    world.book(&later, Some("pm_card_visa")).await;

    let longer = (end + chrono::Duration::hours(1)).to_rfc3339();
    let extended =
        world.app.post(&format!("/v1/bookings/{id}/extend"), &world.driver, json!({"end": longer})).await.expect(200);
    assert_eq!((extended["price_minor"].as_i64(), extended["end"].as_str()), (Some(600), Some(longer.as_str())));
    let done = world.wait_for(&id, "extension authorized", |booking| payment_status(booking, 1) == "authorized").await;
    assert_eq!(
        (done["payments"][1]["purpose"].as_str(), done["payments"][1]["amount_minor"].as_i64()),
        (Some("extension"), Some(200))
    );

    // Into the other booking: 409; backwards: 422.
    let into = (end + chrono::Duration::hours(2)).to_rfc3339();
    let problem =
        world.app.post(&format!("/v1/bookings/{id}/extend"), &world.driver, json!({"end": into})).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("booked by someone else"), "{problem}");
    let back = (end - chrono::Duration::hours(1)).to_rfc3339();
    let problem =
        world.app.post(&format!("/v1/bookings/{id}/extend"), &world.driver, json!({"end": back})).await.problem(422);
    assert_eq!(problem["field"], "end");
    assert_eq!(world.booking(&id).await["end"].as_str(), Some(longer.as_str()));
    world.finish().await;
}

async fn a_provider_timeout_is_retried_with_the_same_key(backend: Backend) {
    let world = world(backend, |_| {}).await;
    // Webhooks held: only the relay's retry can learn the outcome.
    world.stripe.hold_webhooks(true);
    // The first call is carried out but its answer comes too late.
    world.stripe.fail_next(1, Failure::Timeout(Duration::from_secs(4)));
    let quote = world.quote_tomorrow(0, 0, 2).await;
    let booked = world.book(&quote, Some("pm_card_visa")).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    let confirmed = world.wait_for(&id, "confirmation after the retry", |booking| status(booking) == "confirmed").await;
    assert_eq!(payment_status(&confirmed, 0), "authorized");
    // One PaymentIntent: the retry replayed the first call's key.
    assert_eq!(world.stripe.payment_intents().len(), 1);
    let requests = world.stripe.requests_count();
    assert!(requests >= 2, "the first answer was lost, so the call was repeated ({requests} requests)");

    // Stripe down: the booking waits (held), and is confirmed once Stripe is back.
    world.stripe.set_down(true);
    let quote = world.quote_tomorrow(1, 0, 2).await;
    let booked = world.book(&quote, Some("pm_card_visa")).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    assert_eq!((status(&booked), payment_status(&booked, 0)), ("pending_payment", "pending"), "{booked:#}");
    world.stripe.set_down(false);
    world.wait_for(&id, "confirmation once Stripe is back", |booking| status(booking) == "confirmed").await;
    world.finish().await;
}

async fn out_of_order_and_missed_webhooks_are_repaired(backend: Backend) {
    let world = world(backend, |_| {}).await;
    world.stripe.hold_webhooks(true);
    let quote = world.quote_tomorrow(0, 0, 2).await;
    let booked = world.book(&quote, None).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    let url = booked["payments"][0]["action_url"].as_str().unwrap();
    let session = url.rsplit('/').next().unwrap();
    world.stripe.pay_checkout_session(session, "pm_card_visa").expect("pay");
    // The webhooks are held (our endpoint "was down"): reconciliation asks Stripe instead.
    assert_eq!(status(&world.booking(&id).await), "pending_payment");
    let repaired = world.app.kernel().reconcile_payments(100).await.expect("reconcile");
    assert_eq!(repaired, 1);
    assert_eq!(status(&world.booking(&id).await), "confirmed");
    // The late events, delivered newest first, change nothing.
    world.stripe.flush_webhooks(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = world.booking(&id).await;
    assert_eq!((status(&after), payment_status(&after, 0)), ("confirmed", "authorized"));
    world.finish().await;
}
