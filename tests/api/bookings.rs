//! Bookings: a driver's quote becomes a hold on a space; live bookings of a space never overlap,
//! however many requests race; drivers and operators see only their own.

use chrono::{DurationRound, Utc};
use serde_json::{Value, json};

use crate::helpers::{Backend, Tenant, TestApp, postgres_url};
use crate::on_each_backend;

on_each_backend!(a_quote_books_a_space_once_and_overlaps_are_refused, of_many_racing_overlapping_bookings_one_wins);

pub async fn priced_site(app: &TestApp, tenant: &Tenant, spaces: usize) -> (String, Vec<String>) {
    let (site_id, space_ids) = tenant.site_with_spaces(app, "Trindade", spaces).await;
    let body = json!({"name": "tariff", "site_id": site_id, "currency": "EUR"});
    let set = app.post("/v1/rulesets", &tenant.admin_key, body).await.expect(201)["id"].as_str().unwrap().to_owned();
    let source = "fn price(ctx) { base(\"Parking\", increments(ctx.duration_minutes, 60) * 200) }";
    let tests = json!([{"name": "an hour", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T10:00"},
                        "expect": {"total_minor": 200}}]);
    let versions = format!("/v1/rulesets/{set}/versions");
    app.post(&versions, &tenant.admin_key, json!({"source": source, "tests": tests})).await.expect(201);
    app.post(&format!("{versions}/1/publish"), &tenant.admin_key, json!({})).await.expect(200);
    (site_id, space_ids)
}

/// A quote for `from`..`to` hours after tomorrow's first hour, at the site or one space.
pub async fn quote(app: &TestApp, driver: &str, place: Value, from: i64, to: i64) -> String {
    let base = (Utc::now() + chrono::Duration::days(1)).duration_trunc(chrono::Duration::hours(1)).unwrap();
    let mut body = json!({"start": (base + chrono::Duration::hours(from)).to_rfc3339(),
                          "end": (base + chrono::Duration::hours(to)).to_rfc3339()});
    body.as_object_mut().unwrap().extend(place.as_object().unwrap().clone());
    app.post("/v1/quotes", driver, body).await.expect(201)["id"].as_str().unwrap().to_owned()
}

async fn a_quote_books_a_space_once_and_overlaps_are_refused(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let (site_id, spaces) = priced_site(app, &tenant, 2).await;
    let ana = app.new_driver("ana@example.com").await;
    let bea = app.new_driver("bea@example.com").await;
    let space_a = json!({"space_id": spaces[0]});

    let first = quote(app, &ana, space_a.clone(), 0, 2).await;
    let booked = app.post("/v1/bookings", &ana, json!({"quote_id": first})).await.expect(201);
    assert_eq!((booked["status"].as_str(), booked["price_minor"].as_i64()), (Some("pending_payment"), Some(400)));
    assert_eq!(booked["space_id"], spaces[0].as_str());
    let created = chrono::DateTime::parse_from_rfc3339(booked["created_at"].as_str().unwrap()).unwrap();
    let hold = chrono::DateTime::parse_from_rfc3339(booked["hold_expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((hold - created).num_minutes(), 15);
    // Search no longer offers the held space for that window, and still does outside it.
    let search = |from: i64, to: i64| {
        let base = (Utc::now() + chrono::Duration::days(1)).duration_trunc(chrono::Duration::hours(1)).unwrap();
        let at = |hours: i64| (base + chrono::Duration::hours(hours)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
        format!("/v1/search?lat=41.1507&lon=-8.6096&radius_m=2000&start={}&end={}", at(from), at(to))
    };
    let during = app.get(&search(1, 3), &ana).await.expect(200);
    assert_eq!(during["items"][0]["free_spaces"], 1, "{during}");
    let later = app.get(&search(2, 3), &ana).await.expect(200);
    assert_eq!(later["items"][0]["free_spaces"], 2, "{later}");

    // A quote books once; an overlapping window on the same space is refused; touching is fine.
    let again = app.post("/v1/bookings", &ana, json!({"quote_id": first})).await.problem(409);
    assert!(again["detail"].as_str().unwrap().contains("already used"), "{again}");
    let overlapping = quote(app, &ana, space_a.clone(), 1, 3).await;
    let refused = app.post("/v1/bookings", &ana, json!({"quote_id": overlapping})).await.problem(409);
    assert!(refused["detail"].as_str().unwrap().contains("overlapping"), "{refused}");
    let after = quote(app, &ana, space_a.clone(), 2, 4).await;
    app.post("/v1/bookings", &ana, json!({"quote_id": after})).await.expect(201);

    // A site quote gets the next free fitting space; when none is left, 409.
    let site_quote = quote(app, &bea, json!({"site_id": site_id}), 0, 2).await;
    let assigned = app.post("/v1/bookings", &bea, json!({"quote_id": site_quote})).await.expect(201);
    assert_eq!(assigned["space_id"], spaces[1].as_str());
    let full = quote(app, &bea, json!({"site_id": site_id}), 1, 2).await;
    let problem = app.post("/v1/bookings", &bea, json!({"quote_id": full})).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("no fitting space"), "{problem}");

    // A hold that ran out no longer blocks the space.
    // (The newest booking is the one just made.)
    app.execute_sql(
        "UPDATE bookings SET hold_expires_at = created_at WHERE created_at = (SELECT MAX(created_at) FROM bookings)",
    )
    .await;
    let retry = quote(app, &bea, json!({"site_id": site_id}), 1, 2).await;
    let rebooked = app.post("/v1/bookings", &bea, json!({"quote_id": retry})).await.expect(201);
    assert_eq!(rebooked["space_id"], spaces[1].as_str());
    let expired = app.get(&format!("/v1/bookings/{}", assigned["id"].as_str().unwrap()), &bea).await.expect(200);
    assert_eq!(expired["status"], "expired");

    // Only drivers book, and only with their own quotes.
    let problem = app.post("/v1/bookings", &tenant.admin_key, json!({"quote_id": after})).await.problem(403);
    assert!(problem["detail"].as_str().unwrap().contains("drivers"));
    let theirs = quote(app, &ana, space_a, 6, 7).await;
    app.post("/v1/bookings", &bea, json!({"quote_id": theirs})).await.problem(404);

    // Each sees their own; the operator sees its site's; another operator none.
    let ana_list = app.get("/v1/bookings", &ana).await.expect(200);
    assert_eq!(ana_list["items"].as_array().unwrap().len(), 2);
    let operator_list = app.get("/v1/bookings", &tenant.staff_key).await.expect(200);
    assert_eq!(operator_list["items"].as_array().unwrap().len(), 4);
    let other = app.new_tenant("other").await;
    assert_eq!(app.get("/v1/bookings", &other.staff_key).await.expect(200)["items"], json!([]));
    let path = format!("/v1/bookings/{}", booked["id"].as_str().unwrap());
    app.get(&path, &bea).await.problem(404);
    app.get(&path, &other.staff_key).await.problem(404);
    app.get(&path, &tenant.staff_key).await.expect(200);

    // A booked space is not deleted from under its bookings.
    let problem = app.delete(&format!("/v1/spaces/{}", spaces[0]), &tenant.admin_key).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("has bookings"), "{problem}");
}

async fn of_many_racing_overlapping_bookings_one_wins(app: &TestApp) {
    const REQUESTS: usize = 500;
    let tenant = app.new_tenant("acme").await;
    let (_, spaces) = priced_site(app, &tenant, 1).await;
    let driver = app.new_driver("ana@example.com").await;
    let mut quotes = Vec::with_capacity(REQUESTS);
    for index in 0..REQUESTS as i64 {
        // Every window overlaps every other one (they all contain hour 3).
        quotes.push(quote(app, &driver, json!({"space_id": spaces[0]}), index % 3, 4 + index % 2).await);
    }
    let requests = quotes.iter().map(|quote_id| app.post("/v1/bookings", &driver, json!({"quote_id": quote_id})));
    let responses = futures_util::future::join_all(requests).await;
    let created = responses.iter().filter(|response| response.status == 201).count();
    let conflicts = responses.iter().filter(|response| response.status == 409).count();
    assert_eq!(
        (created, conflicts),
        (1, REQUESTS - 1),
        "{:?}",
        responses.iter().find(|r| r.status != 409 && r.status != 201)
    );
}

/// Two nodes on one PostgreSQL database: 500 overlapping requests for one space, alternating
/// between the nodes, give exactly one booking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_two_nodes_one_booking_wins() {
    if postgres_url().is_none() {
        eprintln!("BERTH_TEST_POSTGRES_URL not set: two-node run skipped");
        return;
    }
    const REQUESTS: usize = 500;
    let secret = berth::config::Secret::new("two-nodes-share-this-token-secret-0123456789");
    let shared = secret.clone();
    let node_a = TestApp::spawn_with(Backend::Postgres, move |config| config.auth.token_secret = Some(shared)).await;
    let database = node_a.config.database.url.clone();
    let node_b = TestApp::spawn_with(Backend::Postgres, move |config| {
        config.database.url = database;
        config.auth.token_secret = Some(secret);
    })
    .await;
    let tenant = node_a.new_tenant("acme").await;
    let (_, spaces) = priced_site(&node_a, &tenant, 1).await;
    let driver = node_a.new_driver("ana@example.com").await;
    let mut quotes = Vec::with_capacity(REQUESTS);
    for index in 0..REQUESTS as i64 {
        quotes.push(quote(&node_a, &driver, json!({"space_id": spaces[0]}), index % 3, 4 + index % 2).await);
    }
    let requests = quotes.iter().enumerate().map(|(index, quote_id)| {
        let node = if index % 2 == 0 { &node_a } else { &node_b };
        node.post("/v1/bookings", &driver, json!({"quote_id": quote_id}))
    });
    let responses = futures_util::future::join_all(requests).await;
    let created = responses.iter().filter(|response| response.status == 201).count();
    let conflicts = responses.iter().filter(|response| response.status == 409).count();
    assert_eq!(
        (created, conflicts),
        (1, REQUESTS - 1),
        "{:?}",
        responses.iter().find(|r| r.status != 409 && r.status != 201)
    );
    // Both nodes see the one booking.
    let listed_b = node_b.get("/v1/bookings", &driver).await.expect(200);
    assert_eq!(listed_b["items"].as_array().unwrap().len(), 1);
    node_b.cleanup().await;
    node_a.cleanup().await;
}
