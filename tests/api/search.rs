//! Search: nearby sites with room for a stay, priced by their operators' rules, filtered and
//! ordered; bad queries are 400s that say why.

use chrono::{DurationRound, Utc};
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, porto_site};
use crate::on_each_backend;

on_each_backend!(search_finds_priced_sites_nearby);

async fn publish_hourly(app: &TestApp, tenant: &Tenant, site_id: &str, rate: i64) {
    let body = json!({"name": "tariff", "site_id": site_id, "currency": "EUR"});
    let set = app.post("/v1/rulesets", &tenant.admin_key, body).await.expect(201)["id"].as_str().unwrap().to_owned();
    let source = format!("fn price(ctx) {{ base(\"Parking\", increments(ctx.duration_minutes, 60) * {rate}) }}");
    let tests = json!([{"name": "an hour", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T10:00"},
                        "expect": {"total_minor": rate}}]);
    let versions = format!("/v1/rulesets/{set}/versions");
    app.post(&versions, &tenant.admin_key, json!({"source": source, "tests": tests})).await.expect(201);
    app.post(&format!("{versions}/1/publish"), &tenant.admin_key, json!({})).await.expect(200);
}

async fn site_at(app: &TestApp, tenant: &Tenant, name: &str, lat: f64, lon: f64, spaces: usize) -> String {
    let mut body = porto_site(name);
    body["location"] = json!({"lat": lat, "lon": lon});
    let site = app.post("/v1/sites", &tenant.admin_key, body).await.expect(201)["id"].as_str().unwrap().to_owned();
    let bulk = format!("/v1/sites/{site}/spaces/bulk");
    app.post(&bulk, &tenant.admin_key, crate::helpers::spaces(spaces)).await.expect(201);
    site
}

fn path(query: &str, hours_from_now: i64) -> String {
    let start =
        (Utc::now() + chrono::Duration::hours(hours_from_now)).duration_trunc(chrono::Duration::hours(1)).unwrap();
    let end = start + chrono::Duration::hours(2);
    let encode = |at: chrono::DateTime<Utc>| at.to_rfc3339().replace('+', "%2B");
    format!("/v1/search?lat=41.1507&lon=-8.6096&start={}&end={}{query}", encode(start), encode(end))
}

fn names(results: &Value) -> Vec<&str> {
    results["items"].as_array().unwrap().iter().map(|hit| hit["site"]["name"].as_str().unwrap()).collect()
}

async fn search_finds_priced_sites_nearby(app: &TestApp) {
    let acme = app.new_tenant("acme").await;
    let other = app.new_tenant("other").await;
    let trindade = site_at(app, &acme, "Trindade", 41.1507, -8.6096, 4).await;
    let bolhao = site_at(app, &acme, "Bolhão", 41.1493, -8.6055, 2).await;
    site_at(app, &acme, "Gaia", 41.1380, -8.6110, 2).await;
    site_at(app, &other, "Aliados", 41.1500, -8.6110, 3).await;
    publish_hourly(app, &acme, &trindade, 200).await;
    publish_hourly(app, &acme, &bolhao, 100).await;
    let driver = app.new_driver("ana@example.com").await;

    // Tomorrow: every open space counts (no reservations yet), nearest first, every operator.
    let results = app.get(&path("&radius_m=1000", 24), &driver).await.expect(200);
    assert_eq!(names(&results), ["Trindade", "Aliados", "Bolhão"], "{results}");
    let first = &results["items"][0];
    assert_eq!((first["total_minor"].as_i64(), first["free_spaces"].as_u64()), (Some(400), Some(4)), "{first}");
    assert_eq!(first["distance_m"], 0.0);
    assert_eq!(first["rule_version"], 1);
    let unpriced = &results["items"][1];
    assert!(unpriced.get("total_minor").is_none());
    assert!(unpriced["unpriced"].as_str().unwrap().contains("no rule set"), "{unpriced}");

    // Cheapest first; a price ceiling; a wider radius; filters on the spaces.
    let by_price = app.get(&path("&radius_m=1000&sort=price", 24), &driver).await.expect(200);
    assert_eq!(names(&by_price), ["Bolhão", "Trindade", "Aliados"]);
    let cheap = app.get(&path("&radius_m=1000&max_price=300", 24), &driver).await.expect(200);
    assert_eq!(names(&cheap), ["Bolhão"]);
    let wide = app.get(&path("&radius_m=5000&limit=10", 24), &driver).await.expect(200);
    assert_eq!(names(&wide).len(), 4);
    let charging = app.get(&path("&radius_m=1000&ev=true", 24), &driver).await.expect(200);
    assert!(charging["items"].as_array().unwrap().iter().all(|hit| hit["matching_spaces"] == 1), "{charging}");
    let vans = app.get(&path("&radius_m=1000&vehicle_type=van", 24), &driver).await.expect(200);
    assert_eq!(names(&vans), Vec::<&str>::new(), "the Porto sites take cars and motorcycles only");

    // An operator searches its own sites only.
    let own = app.get(&path("&radius_m=1000", 24), &other.staff_key).await.expect(200);
    assert_eq!(names(&own), ["Aliados"]);

    // Search answers from memory, and this node's writes show in the very next answer: spaces
    // added, a space closed by hand, a new version of the tariff.
    let trindade_hit = |results: &Value| {
        results["items"].as_array().unwrap().iter().find(|hit| hit["site"]["name"] == "Trindade").cloned().unwrap()
    };
    let bulk = format!("/v1/sites/{trindade}/spaces/bulk");
    let more = json!([{"code": "T-X1"}, {"code": "T-X2"}]);
    let added = app.post(&bulk, &acme.admin_key, more).await.expect(201);
    let results = app.get(&path("&radius_m=1000", 24), &driver).await.expect(200);
    assert_eq!(trindade_hit(&results)["free_spaces"], 6, "{results}");
    let closed = added["items"][0]["id"].as_str().unwrap();
    app.patch(&format!("/v1/spaces/{closed}"), &acme.admin_key, json!({"status": "closed"})).await.expect(200);
    let results = app.get(&path("&radius_m=1000", 24), &driver).await.expect(200);
    assert_eq!(trindade_hit(&results)["free_spaces"], 5, "{results}");
    let sets = app.get("/v1/rulesets", &acme.admin_key).await.expect(200);
    let trindade_set =
        sets["items"].as_array().unwrap().iter().find(|set| set["site_id"] == trindade.as_str()).unwrap();
    let versions = format!("/v1/rulesets/{}/versions", trindade_set["id"].as_str().unwrap());
    let source = "fn price(ctx) { base(\"Parking\", increments(ctx.duration_minutes, 60) * 250) }";
    let tests = json!([{"name": "an hour", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T10:00"},
                        "expect": {"total_minor": 250}}]);
    app.post(&versions, &acme.admin_key, json!({"source": source, "tests": tests})).await.expect(201);
    app.post(&format!("{versions}/2/publish"), &acme.admin_key, json!({})).await.expect(200);
    let results = app.get(&path("&radius_m=1000", 24), &driver).await.expect(200);
    let hit = trindade_hit(&results);
    assert_eq!((hit["total_minor"].as_i64(), hit["rule_version"].as_u64()), (Some(500), Some(2)), "{hit}");

    // Now: live state decides. Nothing sensed yet, so nothing is free; one space freed by hand is.
    let now = app.get(&path("&radius_m=1000", 0), &driver).await.expect(200);
    assert_eq!(names(&now), Vec::<&str>::new(), "{now}");
    let spaces = app.get(&format!("/v1/sites/{trindade}/spaces"), &acme.staff_key).await.expect(200);
    let space = spaces["items"][0]["id"].as_str().unwrap().to_owned();
    let freed = json!({"status": "free", "reason": "checked on site"});
    app.put(&format!("/v1/spaces/{space}/override"), &acme.admin_key, freed).await.expect(200);
    let now = app.get(&path("&radius_m=1000", 0), &driver).await.expect(200);
    assert_eq!(names(&now), ["Trindade"]);
    assert_eq!(now["items"][0]["free_spaces"], 1);
    assert!(now["items"][0]["confidence"].as_f64().unwrap() > 0.0);

    // A site moved away leaves the results at once.
    let moved = json!({"location": {"lat": 41.0, "lon": -8.0}});
    app.patch(&format!("/v1/sites/{bolhao}"), &acme.admin_key, moved).await.expect(200);
    let results = app.get(&path("&radius_m=1000", 24), &driver).await.expect(200);
    assert_eq!(names(&results), ["Trindade", "Aliados"]);

    // Bad queries are 400 with a detail.
    for (query, detail) in [
        ("/v1/search?lat=95&lon=0&start=2030-01-01T00:00:00Z&end=2030-01-01T02:00:00Z", "lat"),
        ("/v1/search?lat=41&lon=-200&start=2030-01-01T00:00:00Z&end=2030-01-01T02:00:00Z", "lon"),
        ("/v1/search?lat=41&lon=-8&radius_m=0&start=2030-01-01T00:00:00Z&end=2030-01-01T02:00:00Z", "radius_m"),
        ("/v1/search?lat=41&lon=-8&radius_m=1e9&start=2030-01-01T00:00:00Z&end=2030-01-01T02:00:00Z", "radius_m"),
        ("/v1/search?lat=41&lon=-8&start=2030-01-01T02:00:00Z&end=2030-01-01T00:00:00Z", "end"),
        ("/v1/search?lat=41&lon=-8&start=2020-01-01T00:00:00Z&end=2020-01-01T02:00:00Z", "over already"),
        ("/v1/search?lat=41&lon=-8&start=2030-01-01T00:00:00Z&end=2030-01-01T02:00:00Z&limit=0", "limit"),
        ("/v1/search?lat=41&lon=-8&start=tomorrow&end=2030-01-01T02:00:00Z", "start"),
    ] {
        let problem = app.get(query, &driver).await.problem(400);
        assert!(problem["detail"].as_str().unwrap().contains(detail), "{query}: {problem}");
    }
}
