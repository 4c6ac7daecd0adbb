//! Payments end to end: a real server on each database, paying through the Stripe adapter
//! against a local Stripe that keeps PaymentIntents, signs its webhooks and fails on request.

use std::time::Duration;

use berth_payments::fake::paypal::{FakePaypal, FakePaypalConfig};
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
    with_stripe_down_new_bookings_fail_over_to_paypal,
    the_booking_clock_expires_holds_marks_no_shows_and_follows_the_sensor,
    drivers_export_and_erase_their_data_and_plates_expire,
    reconciliation_captures_holds_before_they_lapse,
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

async fn with_stripe_down_new_bookings_fail_over_to_paypal(backend: Backend) {
    let paypal = FakePaypal::start(FakePaypalConfig {
        client_id: "berth-client".into(),
        client_secret: "berth-secret".into(),
        webhook_url: None,
        webhook_id: "WH-BERTH".into(),
    })
    .await
    .expect("fake paypal");
    let plugins_dir = tempfile::tempdir().unwrap();
    let paypal_url = paypal.base_url().to_owned();
    crate::helpers::install_bundled_plugin(plugins_dir.path(), "paypal", paypal_url.trim_start_matches("http://"));
    let dir = plugins_dir.path().to_owned();
    let world = world(backend, move |config| {
        config.payments.providers = vec!["stripe".into(), "paypal".into()];
        config.payments.breaker_threshold = 2;
        config.payments.breaker_cooldown_secs = 3600;
        config.plugins.dir = Some(dir);
        let settings =
            [("base_url", paypal_url), ("client_id", "berth-client".into()), ("webhook_id", "WH-BERTH".into())];
        config.plugins.config.insert("paypal".into(), settings.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        let secret = [("client_secret".to_owned(), berth::config::Secret::new("berth-secret"))];
        config.plugins.secrets.insert("paypal".into(), secret.into_iter().collect());
    })
    .await;
    paypal.set_webhook_url(Some(format!("{}/v1/webhooks/payments/paypal", world.app.base_url)));

    // Stripe is down: the authorization is retried until the breaker opens, then goes to PayPal.
    world.stripe.set_down(true);
    let quote = world.quote_tomorrow(0, 0, 2).await;
    let booked = world.book(&quote, Some("pm_card_visa")).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    let moved = world
        .wait_for(&id, "failover to paypal", |booking| {
            booking["payments"][0]["provider"] == "paypal" && payment_status(booking, 0) == "requires_action"
        })
        .await;
    assert_eq!(status(&moved), "pending_payment");
    let approve = moved["payments"][0]["action_url"].as_str().unwrap().to_owned();
    let order = paypal.order_ids();
    assert_eq!(order.len(), 1, "one PayPal order");
    assert!(approve.contains(&order[0]), "{approve}");
    assert!(world.stripe.payment_intents().is_empty());

    // The driver approves; PayPal's verified webhook has the plugin authorize the order.
    assert!(paypal.approve_order(&order[0]));
    let confirmed = world.wait_for(&id, "confirmation by paypal", |booking| status(booking) == "confirmed").await;
    assert_eq!(payment_status(&confirmed, 0), "authorized");

    // Check-in is tomorrow; the operator cancels: the PayPal authorization is voided.
    world.app.post(&format!("/v1/bookings/{id}/cancel"), &world.tenant.admin_key, json!({})).await.expect(200);
    world.wait_for(&id, "paypal void", |booking| payment_status(booking, 0) == "voided").await;
    let order = paypal.order(&order[0]).unwrap();
    let authorization = &order["purchase_units"][0]["payments"]["authorizations"][0];
    assert_eq!(authorization["status"], "VOIDED", "{order:#}");
    // A forged PayPal delivery is refused.
    let forged = world
        .app
        .client_request(
            "/v1/webhooks/payments/paypal",
            &[
                ("paypal-transmission-id", "x"),
                ("paypal-transmission-sig", "AAAA"),
                ("paypal-auth-algo", "SHA256withRSA"),
            ],
            "{\"id\":\"WH-1\",\"event_type\":\"PAYMENT.CAPTURE.COMPLETED\"}".to_owned(),
        )
        .await;
    assert_eq!(forged.status, 401, "{:?}", forged.body);
    world.finish().await;
}

async fn the_booking_clock_expires_holds_marks_no_shows_and_follows_the_sensor(backend: Backend) {
    let world = world(backend, |_| {}).await;
    let kernel = world.app.kernel();
    // An unpaid hold runs out.
    let quote = world.quote_tomorrow(0, 0, 2).await;
    let unpaid = world.book(&quote, None).await;
    let unpaid_id = unpaid["id"].as_str().unwrap().to_owned();
    // (The newest booking is the one just made.)
    let sql =
        "UPDATE bookings SET hold_expires_at = created_at WHERE created_at = (SELECT MAX(created_at) FROM bookings)";
    world.app.execute_sql(sql).await;
    kernel.tick_bookings(100).await.unwrap();
    assert_eq!(status(&world.booking(&unpaid_id).await), "expired");

    // Nobody came within 30 minutes of the start: a no-show, and the booked price is taken.
    let quote = world.quote(0, chrono::Duration::hours(-1), chrono::Duration::hours(1)).await;
    let absent = world.book(&quote, Some("pm_card_visa")).await;
    let absent_id = absent["id"].as_str().unwrap().to_owned();
    kernel.tick_bookings(100).await.unwrap();
    assert_eq!(status(&world.booking(&absent_id).await), "no_show");
    world.wait_for(&absent_id, "no-show capture", |booking| payment_status(booking, 0) == "captured").await;

    // The space's sensor reports the car: active; then the space is free again: completed.
    let device = json!({"external_id": crate::live::BOSCH_EUI, "vendor": "bosch", "model": "tps110", "space_id": world.spaces[1]});
    world.app.post("/v1/devices", &world.tenant.admin_key, device).await.expect(201);
    let quote = world.quote(1, chrono::Duration::minutes(-5), chrono::Duration::hours(2)).await;
    let parked = world.book(&quote, Some("pm_card_visa")).await;
    let parked_id = parked["id"].as_str().unwrap().to_owned();
    let uplink = |payload: &str, counter: u32| {
        json!({"device": crate::live::BOSCH_EUI, "f_port": 1, "payload_hex": payload, "counter": counter,
               "time": Utc::now().to_rfc3339()})
    };
    let key = &world.tenant.integration_key;
    world.app.post("/v1/ingest/uplinks", key, uplink("01", 1)).await.expect(202);
    kernel.tick_bookings(100).await.unwrap();
    let arrived = world.booking(&parked_id).await;
    assert_eq!(status(&arrived), "active", "{arrived:#}");
    assert!(arrived["arrived_at"].is_string());
    tokio::time::sleep(Duration::from_millis(50)).await;
    world.app.post("/v1/ingest/uplinks", key, uplink("00", 2)).await.expect(202);
    kernel.tick_bookings(100).await.unwrap();
    let left =
        world.wait_for(&parked_id, "departure capture", |booking| payment_status(booking, 0) == "captured").await;
    assert_eq!(status(&left), "completed");
    assert!(left["departed_at"].is_string());
    world.finish().await;
}

async fn drivers_export_and_erase_their_data_and_plates_expire(backend: Backend) {
    let world = world(backend, |_| {}).await;
    let vehicle =
        world.app.post("/v1/drivers/me/vehicles", &world.driver, json!({"plate": "AA-11-BB"})).await.expect(201);
    let mut body = json!({"quote_id": world.quote_tomorrow(0, 0, 2).await, "payment_method": "pm_card_visa"});
    body["vehicle_id"] = vehicle["id"].clone();
    let booked = world.app.post("/v1/bookings", &world.driver, body).await.expect(201);
    let id = booked["id"].as_str().unwrap().to_owned();
    assert_eq!(booked["plate"], "AA11BB");

    let export = world.app.get("/v1/drivers/me/data", &world.driver).await.expect(200);
    assert_eq!(export["driver"]["email"], "ana@example.com");
    assert_eq!(export["vehicles"][0]["plate"], "AA11BB");
    assert_eq!(export["bookings"][0]["booking"]["id"], id.as_str());
    assert_eq!(export["bookings"][0]["booking"]["payments"][0]["status"], "authorized");
    // Operators cannot export or erase a driver's data.
    world.app.get("/v1/drivers/me/data", &world.tenant.admin_key).await.problem(403);

    // Not while a booking is live.
    let problem = world.app.delete("/v1/drivers/me/data", &world.driver).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains(&id), "{problem}");
    world.app.post(&format!("/v1/bookings/{id}/cancel"), &world.driver, json!({})).await.expect(200);
    world.wait_for(&id, "fee capture", |booking| payment_status(booking, 0) == "captured").await;
    let erased = world.app.delete("/v1/drivers/me/data", &world.driver).await;
    assert_eq!(erased.status, 204, "{:?}", erased.body);
    // The account is gone; the operator's records keep the money, not the person.
    let gone = world.app.get("/v1/drivers/me", &world.driver).await;
    assert!(matches!(gone.status, 401 | 404), "{:?}", gone.body);
    let kept = world.app.get(&format!("/v1/bookings/{id}"), &world.tenant.admin_key).await.expect(200);
    assert_eq!((kept["plate"].as_str(), kept["vehicle_id"].as_str()), (None, None), "{kept:#}");
    assert_eq!(kept["price_minor"], 400);
    let receipt = world.app.get(&format!("/v1/bookings/{id}/receipt"), &world.tenant.admin_key).await.expect(200);
    assert_eq!(receipt["charged_minor"], 100);

    // Retention: plates of bookings that ended are erased after the configured days.
    let bea = world.app.new_driver("bea@example.com").await;
    let car = world.app.post("/v1/drivers/me/vehicles", &bea, json!({"plate": "CC-22-DD"})).await.expect(201);
    let start = (Utc::now() + chrono::Duration::days(2)).duration_trunc(chrono::Duration::hours(1)).unwrap();
    let body = json!({"space_id": world.spaces[1], "start": start.to_rfc3339(), "end": (start + chrono::Duration::hours(1)).to_rfc3339()});
    let quote = world.app.post("/v1/quotes", &bea, body).await.expect(201);
    let booked = world
        .app
        .post(
            "/v1/bookings",
            &bea,
            json!({"quote_id": quote["id"], "vehicle_id": car["id"], "payment_method": "pm_card_visa"}),
        )
        .await
        .expect(201);
    let bea_booking = booked["id"].as_str().unwrap().to_owned();
    let kernel = world.app.kernel();
    assert_eq!(kernel.forget_old_plates(chrono::Duration::zero()).await.unwrap(), 0, "a live booking keeps its plate");
    world.app.post(&format!("/v1/bookings/{bea_booking}/cancel"), &bea, json!({})).await.expect(200);
    assert_eq!(kernel.forget_old_plates(chrono::Duration::days(30)).await.unwrap(), 0, "not yet 30 days");
    assert_eq!(kernel.forget_old_plates(chrono::Duration::zero()).await.unwrap(), 1);
    let forgotten = world.app.get(&format!("/v1/bookings/{bea_booking}"), &bea).await.expect(200);
    assert!(forgotten["plate"].is_null(), "{forgotten:#}");
    world.finish().await;
}

async fn reconciliation_captures_holds_before_they_lapse(backend: Backend) {
    // Holds this old are captured (0 hours: every hold is "about to lapse").
    let world = world(backend, |config| config.payments.capture_within_hours = 0).await;
    let quote = world.quote_tomorrow(0, 0, 2).await;
    let booked = world.book(&quote, Some("pm_card_visa")).await;
    let id = booked["id"].as_str().unwrap().to_owned();
    assert_eq!(status(&booked), "confirmed");
    let repaired = world.app.kernel().reconcile_payments(100).await.expect("reconcile");
    assert_eq!(repaired, 1);
    let captured = world.wait_for(&id, "early capture", |booking| payment_status(booking, 0) == "captured").await;
    assert_eq!(status(&captured), "confirmed", "the stay itself is unchanged");
    assert_eq!(world.receipt(&id).await["charged_minor"], 400);
    // Departure later has nothing left to capture.
    world.finish().await;
}
