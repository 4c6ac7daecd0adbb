//! Operator rules over HTTP: rule sets, versions (test, publish with guardrails, rollback,
//! simulate), quotes with line items and trace, hostile rules, tenancy.

use chrono::{DurationRound, Utc};
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp};
use crate::on_each_backend;

on_each_backend!(rule_lifecycle_and_quotes, hostile_rules_are_contained, rules_and_quotes_respect_tenancy);

fn script(rate: i64) -> String {
    format!(
        r#"
fn price(ctx) {{
    let hours = increments(ctx.duration_minutes, 60);
    let items = [base("Parking", hours * {rate})];
    if ctx.vehicle_type == "motorcycle" {{ items.push(discount("Motorcycle", hours * {rate} / 2)); }}
    items
}}

fn allow_booking(ctx) {{
    if ctx.duration_minutes > ctx.site.max_stay_minutes {{ return deny("At most 8 hours here"); }}
    allow()
}}
"#
    )
}

fn tests(two_hours: i64) -> Value {
    json!([
        {"name": "two hours", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T11:00"},
         "expect": {"total_minor": two_hours}},
        {"name": "nine hours is too long", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T18:00"},
         "expect": {"allow": false, "reason_contains": "8 hours"}}
    ])
}

/// A stay of `hours` starting tomorrow on the hour.
fn window(hours: i64) -> (String, String) {
    let start = (Utc::now() + chrono::Duration::days(1)).duration_trunc(chrono::Duration::hours(1)).unwrap();
    (start.to_rfc3339(), (start + chrono::Duration::hours(hours)).to_rfc3339())
}

async fn rule_set(app: &TestApp, tenant: &Tenant, site_id: &str, extra: Value) -> String {
    let mut body = json!({"name": "Garage tariff", "site_id": site_id, "currency": "EUR",
                          "guardrails": {"max_total_minor": 20000, "max_step_percent": 50}});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    app.post("/v1/rulesets", &tenant.admin_key, body).await.expect(201)["id"].as_str().unwrap().to_owned()
}

async fn set_policy(app: &TestApp, tenant: &Tenant, set: &str, policy: Value) {
    app.patch(&format!("/v1/rulesets/{set}"), &tenant.admin_key, json!({"error_policy": policy})).await.expect(200);
}

async fn quote(app: &TestApp, token: &str, body: Value) -> crate::helpers::Resp {
    app.post("/v1/quotes", token, body).await
}

async fn rule_lifecycle_and_quotes(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let (site_id, spaces) = tenant.site_with_spaces(app, "Trindade", 4).await;
    let set = rule_set(app, &tenant, &site_id, json!({})).await;
    let versions = format!("/v1/rulesets/{set}/versions");

    // No published version yet: nothing to quote with.
    let (start, end) = window(2);
    let body = json!({"site_id": site_id, "start": start, "end": end});
    let problem = quote(app, &tenant.staff_key, body.clone()).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("no published version"), "{problem}");

    // A draft compiles or is refused with its position.
    let broken = app.post(&versions, &tenant.admin_key, json!({"source": "fn price(ctx) {\n  let = 1;\n}"})).await;
    let problem = broken.problem(422);
    assert!(problem["detail"].as_str().unwrap().contains("line 2"), "{problem}");

    let v1 =
        app.post(&versions, &tenant.admin_key, json!({"source": script(200), "tests": tests(400)})).await.expect(201);
    assert_eq!((v1["version"].as_u64(), v1["status"].as_str()), (Some(1), Some("draft")));
    let report = app.post(&format!("{versions}/1/test"), &tenant.staff_key, json!({})).await.expect(200);
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["results"][1]["allow"], false);

    // A version whose own tests fail is not published.
    app.post(&versions, &tenant.admin_key, json!({"source": script(200), "tests": tests(999)})).await.expect(201);
    let problem = app.post(&format!("{versions}/2/publish"), &tenant.admin_key, json!({})).await.problem(422);
    assert!(problem["detail"].as_str().unwrap().contains("total is 400, expected 999"), "{problem}");

    let published = app.post(&format!("{versions}/1/publish"), &tenant.admin_key, json!({})).await.expect(200);
    assert_eq!(published["status"], "published");
    let again = app.post(&format!("{versions}/1/publish"), &tenant.admin_key, json!({})).await.problem(409);
    assert!(again["detail"].as_str().unwrap().contains("immutable"), "{again}");

    // Quotes: operator staff and a driver, for the site or a space, with items, version and trace.
    let quoted = quote(app, &tenant.staff_key, body.clone()).await.expect(201);
    assert_eq!(quoted["total_minor"], 400, "{quoted}");
    assert_eq!(quoted["currency"], "EUR");
    assert_eq!(quoted["rule"], json!({"rule_set_id": set, "version": 1}));
    assert_eq!(quoted["items"][0], json!({"kind": "base", "label": "Parking", "amount_minor": 400, "line": 4}));
    assert!(quoted["trace"].as_array().unwrap().iter().any(|step| step["message"] == "base 'Parking': 400"));
    let created = chrono::DateTime::parse_from_rfc3339(quoted["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(quoted["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_minutes(), 15);
    let stored =
        app.get(&format!("/v1/quotes/{}", quoted["id"].as_str().unwrap()), &tenant.staff_key).await.expect(200);
    assert_eq!(stored["total_minor"], 400);

    let driver = app.new_driver("ana@example.com").await;
    let motorcycle = json!({"space_id": spaces[0], "start": start, "end": end, "vehicle_type": "motorcycle"});
    let driver_quote = quote(app, &driver, motorcycle).await.expect(201);
    assert_eq!(driver_quote["total_minor"], 200, "{driver_quote}");
    assert_eq!(driver_quote["space_id"], spaces[0].as_str());

    // The rules' refusal reaches the driver as their reason.
    let (long_start, long_end) = window(9);
    let refused =
        quote(app, &driver, json!({"site_id": site_id, "start": long_start, "end": long_end})).await.problem(422);
    assert_eq!(refused["detail"], "At most 8 hours here");
    assert_eq!(refused["type"], "https://berth.dev/problems/not-allowed");

    // Guardrails: a fivefold price is refused at publish; +25% passes.
    app.post(&versions, &tenant.admin_key, json!({"source": script(1000), "tests": tests(2000)})).await.expect(201);
    let problem = app.post(&format!("{versions}/3/publish"), &tenant.admin_key, json!({})).await.problem(422);
    assert_eq!(problem["field"], "guardrails", "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("more than 50%"), "{problem}");
    app.post(&versions, &tenant.admin_key, json!({"source": script(250), "tests": tests(500)})).await.expect(201);

    // Simulation of v4 against the given contexts and the recorded quotes, before publishing.
    let simulation = app
        .post(
            &format!("{versions}/4/simulate"),
            &tenant.staff_key,
            json!({"contexts": [{"start": "2026-03-02T09:00", "end": "2026-03-02T13:00"}], "history_days": 1}),
        )
        .await
        .expect(200);
    assert_eq!(simulation["active_version"], 1, "{simulation}");
    let cases = simulation["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3, "one context and two recorded quotes: {simulation}");
    assert_eq!(
        cases[0],
        json!({"label": "contexts[0]", "active_minor": 800, "candidate_minor": 1000, "delta_minor": 200})
    );
    assert_eq!(simulation["revenue_delta_minor"], 200 + 100 + 50, "{simulation}");

    app.post(&format!("{versions}/4/publish"), &tenant.admin_key, json!({})).await.expect(200);
    assert_eq!(quote(app, &tenant.staff_key, body.clone()).await.expect(201)["total_minor"], 500);
    let list = app.get(&versions, &tenant.staff_key).await.expect(200);
    assert_eq!(list["in_force"], 4, "{list}");

    // Rollback puts version 1 back in force; a draft cannot be rolled back to.
    app.post(&format!("/v1/rulesets/{set}/rollback"), &tenant.admin_key, json!({"version": 2})).await.problem(409);
    let rollback = app.post(&format!("/v1/rulesets/{set}/rollback"), &tenant.admin_key, json!({"version": 1})).await;
    assert_eq!(rollback.expect(200)["reason"], "rollback");
    let after = quote(app, &tenant.staff_key, body.clone()).await.expect(201);
    assert_eq!((after["total_minor"].as_i64(), after["rule"]["version"].as_u64()), (Some(400), Some(1)));

    // A version scheduled for later is in force only for stays that start after it.
    app.post(&versions, &tenant.admin_key, json!({"source": script(300), "tests": tests(600)})).await.expect(201);
    let later = (Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    app.post(&format!("{versions}/5/publish"), &tenant.admin_key, json!({"effective_from": later})).await.expect(200);
    assert_eq!(quote(app, &tenant.staff_key, body.clone()).await.expect(201)["rule"]["version"], 1);
    let next_week = (Utc::now() + chrono::Duration::days(7)).duration_trunc(chrono::Duration::hours(1)).unwrap();
    let next_week_body = json!({"site_id": site_id, "start": next_week.to_rfc3339(),
                                "end": (next_week + chrono::Duration::hours(2)).to_rfc3339()});
    let scheduled = quote(app, &tenant.staff_key, next_week_body).await.expect(201);
    assert_eq!((scheduled["rule"]["version"].as_u64(), scheduled["total_minor"].as_i64()), (Some(5), Some(600)));

    // Bad windows are clear problems.
    let inverted = quote(app, &tenant.staff_key, json!({"site_id": site_id, "start": end, "end": start})).await;
    assert_eq!(inverted.problem(422)["field"], "end");
    let past = quote(
        app,
        &tenant.staff_key,
        json!({"site_id": site_id, "start": "2020-01-01T00:00:00Z",
                                                   "end": "2020-01-01T02:00:00Z"}),
    )
    .await;
    assert!(past.problem(422)["detail"].as_str().unwrap().contains("past"));
}

async fn hostile_rules_are_contained(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let site_id = tenant.create_site(app, "Trindade").await;
    let versions_of = |set: &str| format!("/v1/rulesets/{set}/versions");

    // A script that loops forever is rejected at publish: its own test case fails with a limit.
    let looping = rule_set(app, &tenant, &site_id, json!({})).await;
    let body = json!({"source": "fn price(ctx) { loop { } }", "tests": tests(400)});
    app.post(&versions_of(&looping), &tenant.admin_key, body).await.expect(201);
    let problem = app.post(&format!("{}/1/publish", versions_of(&looping)), &tenant.admin_key, json!({})).await;
    let detail = problem.problem(422)["detail"].as_str().unwrap().to_owned();
    // The operation limit or the time budget, whichever a loaded machine reaches first.
    assert!(detail.contains("too many operations") || detail.contains("time budget"), "{detail}");

    // Every other kind of hostile script is refused at publish, with a message saying why.
    let hostile = [
        ("fn f(n) { f(n + 1) } fn price(ctx) { f(0) }", "too deeply"),
        ("fn price(ctx) { let s = \"x\"; loop { s += s; } }", "too large"),
        ("fn price(ctx) { let a = []; loop { a.push(1); } }", "too large"),
        ("fn price(ctx) { -500 }", "negative"),
        ("fn price(ctx) { 0.0 / 0.0 }", "Division by zero"),
        ("fn price(ctx) { 1_000_000_000 }", "ceiling"),
        ("fn price(ctx) { \"ten euros\" }", "string"),
        ("fn allow_booking(ctx) { 42 }", "allow_booking() must return"),
    ];
    for (index, (source, message)) in hostile.into_iter().enumerate() {
        let body = json!({"source": source, "tests": tests(400)});
        let version = app.post(&versions_of(&looping), &tenant.admin_key, body).await.expect(201);
        let publish = format!("{}/{}/publish", versions_of(&looping), version["version"]);
        let problem = app.post(&publish, &tenant.admin_key, json!({})).await.problem(422);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(message), "case {index}: {source}: {detail}");
    }
    assert_eq!(app.get("/healthz", crate::helpers::ADMIN_KEY).await.status, 200, "the server stays up");

    // A rule that fails only for some stays passes its tests; at runtime the policy applies.
    let trap = r#"
fn price(ctx) {
    if ctx.duration_minutes > 180 { return 100 / (ctx.duration_minutes - ctx.duration_minutes); }
    [base("Parking", increments(ctx.duration_minutes, 60) * 200)]
}"#;
    let fallback_body = json!({"source": trap, "tests": [
        {"name": "two hours", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T11:00"},
         "expect": {"total_minor": 400}}]});
    set_policy(app, &tenant, &looping, json!({"policy": "fallback_price", "amount_minor": 1500})).await;
    app.post(&versions_of(&looping), &tenant.admin_key, fallback_body).await.expect(201);
    let trap_version =
        app.get(&versions_of(&looping), &tenant.admin_key).await.expect(200)["versions"].as_array().unwrap().len();
    let publish = format!("{}/{trap_version}/publish", versions_of(&looping));
    app.post(&publish, &tenant.admin_key, json!({})).await.expect(200);
    let (start, end) = window(4);
    let fallback =
        quote(app, &tenant.staff_key, json!({"site_id": site_id, "start": start, "end": end})).await.expect(201);
    assert_eq!((fallback["total_minor"].as_i64(), fallback["fallback"].as_bool()), (Some(1500), Some(true)));
    let step = &fallback["trace"][0];
    assert_eq!(step["line"], 3, "{fallback}");
    assert!(step["message"].as_str().unwrap().contains("Division by zero"), "{fallback}");
    // A driver gets the fallback price too, without the operator's error.
    let driver = app.new_driver("ana@example.com").await;
    let for_driver = quote(app, &driver, json!({"site_id": site_id, "start": start, "end": end})).await.expect(201);
    assert_eq!(for_driver["total_minor"], 1500);
    assert_eq!(for_driver["trace"], json!([{"message": "the standard rate applies"}]));

    // The same failure under the deny policy: the operator sees the error, a driver a plain refusal.
    set_policy(app, &tenant, &looping, json!({"policy": "deny"})).await;
    let denied = quote(app, &tenant.staff_key, json!({"site_id": site_id, "start": start, "end": end})).await;
    let denied = denied.problem(422);
    assert_eq!(denied["type"], "https://berth.dev/problems/rule-failed");
    assert!(denied["detail"].as_str().unwrap().contains("line 3"), "{denied}");
    let plain = quote(app, &driver, json!({"site_id": site_id, "start": start, "end": end})).await.problem(422);
    assert_eq!(plain["detail"], "prices for this site are unavailable right now");

    // A failing booking policy refuses the stay even under the fallback policy.
    let failing_policy = r#"
fn price(ctx) { 100 }
fn allow_booking(ctx) { if ctx.duration_minutes > 180 { 1 / 0 } else { allow() } }"#;
    let body = json!({"source": failing_policy, "tests": [
        {"name": "an hour", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T10:00"}, "expect": {"allow": true}}]});
    let version = app.post(&versions_of(&looping), &tenant.admin_key, body).await.expect(201);
    let publish = format!("{}/{}/publish", versions_of(&looping), version["version"]);
    app.post(&publish, &tenant.admin_key, json!({})).await.expect(200);
    set_policy(app, &tenant, &looping, json!({"policy": "fallback_price", "amount_minor": 1500})).await;
    let refused = quote(app, &tenant.staff_key, json!({"site_id": site_id, "start": start, "end": end})).await;
    assert_eq!(refused.problem(422)["type"], "https://berth.dev/problems/rule-failed");

    // Meanwhile another operator's quotes are unaffected, and the server is up.
    let other = app.new_tenant("other").await;
    let other_site = other.create_site(app, "Bolhão").await;
    let other_set = rule_set(app, &other, &other_site, json!({})).await;
    app.post(&versions_of(&other_set), &other.admin_key, json!({"source": script(200), "tests": tests(400)}))
        .await
        .expect(201);
    app.post(&format!("{}/1/publish", versions_of(&other_set)), &other.admin_key, json!({})).await.expect(200);
    let (start, end) = window(2);
    let fine = quote(app, &other.staff_key, json!({"site_id": other_site, "start": start, "end": end})).await;
    assert_eq!(fine.expect(201)["total_minor"], 400);

    // Answers a rule set may never give: a fallback above its own ceiling is refused up front.
    let bad = app
        .patch(
            &format!("/v1/rulesets/{looping}"),
            &tenant.admin_key,
            json!({"error_policy": {"policy": "fallback_price", "amount_minor": 1_000_000}}),
        )
        .await
        .problem(422);
    assert_eq!(bad["field"], "error_policy.amount_minor");
}

async fn rules_and_quotes_respect_tenancy(app: &TestApp) {
    let acme = app.new_tenant("acme").await;
    let other = app.new_tenant("other").await;
    let site_id = acme.create_site(app, "Trindade").await;
    let set = rule_set(app, &acme, &site_id, json!({})).await;
    let versions = format!("/v1/rulesets/{set}/versions");
    app.post(&versions, &acme.admin_key, json!({"source": script(200), "tests": tests(400)})).await.expect(201);
    app.post(&format!("{versions}/1/publish"), &acme.admin_key, json!({})).await.expect(200);

    // Another operator sees none of it.
    app.get(&format!("/v1/rulesets/{set}"), &other.admin_key).await.problem(404);
    app.get(&versions, &other.admin_key).await.problem(404);
    app.post(&format!("{versions}/1/test"), &other.admin_key, json!({})).await.problem(404);
    app.post(&versions, &other.admin_key, json!({"source": script(1)})).await.problem(404);
    assert_eq!(app.get("/v1/rulesets", &other.admin_key).await.expect(200)["items"], json!([]));
    // Nor can it bind a rule set to, or quote, acme's site.
    let foreign = json!({"name": "x", "site_id": site_id, "currency": "EUR"});
    app.post("/v1/rulesets", &other.admin_key, foreign).await.problem(404);
    let (start, end) = window(2);
    let body = json!({"site_id": site_id, "start": start, "end": end});
    app.post("/v1/quotes", &other.staff_key, body.clone()).await.problem(404);
    // Staff may read and quote but not write rules.
    app.post(&versions, &acme.staff_key, json!({"source": script(1)})).await.problem(403);

    // Drivers quote any site; each sees only their own quotes, the operator sees its site's.
    let ana = app.new_driver("ana@example.com").await;
    let bea = app.new_driver("bea@example.com").await;
    let quoted = app.post("/v1/quotes", &ana, body).await.expect(201);
    let path = format!("/v1/quotes/{}", quoted["id"].as_str().unwrap());
    app.get(&path, &ana).await.expect(200);
    app.get(&path, &bea).await.problem(404);
    app.get(&path, &acme.staff_key).await.expect(200);
    app.get(&path, &other.staff_key).await.problem(404);
    // A driver cannot vouch for their own permits: the field is ignored for them.
    let permits = json!({"site_id": site_id, "start": start, "end": end, "driver": {"permits": ["resident"]}});
    let own = app.post("/v1/quotes", &ana, permits).await.expect(201);
    let _ = own;
    // One rule set per site.
    let second = json!({"name": "again", "site_id": site_id, "currency": "EUR"});
    assert!(
        app.post("/v1/rulesets", &acme.admin_key, second).await.problem(409)["detail"]
            .as_str()
            .unwrap()
            .contains("already has a rule set")
    );
    // The site's currency, not another.
    let second_site = acme.create_site(app, "Bolhão").await;
    let dollars = json!({"name": "usd", "site_id": second_site, "currency": "USD"});
    assert_eq!(app.post("/v1/rulesets", &acme.admin_key, dollars).await.problem(422)["field"], "currency");
}

on_each_backend!(a_scheduled_adjustment_publishes_a_new_version_after_notice);

async fn a_scheduled_adjustment_publishes_a_new_version_after_notice(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let (site_id, spaces) = tenant.site_with_spaces(app, "Trindade", 4).await;
    let set = rule_set(app, &tenant, &site_id, json!({"adjustment": {"period_days": 28, "notice_days": 7}})).await;
    let versions = format!("/v1/rulesets/{set}/versions");
    let source = r#"
fn price(ctx) { base("Parking", increments(ctx.duration_minutes, 60) * ctx.params.rate) }

fn adjust(ctx) {
    let occupancy = ctx.occupancy.recent_percent;
    if occupancy != () && occupancy >= 80 { #{ rate: ctx.params.rate + 25 } } else { () }
}
"#;
    let tests = json!([
        {"name": "two hours", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T11:00", "params": {"rate": 200}},
         "expect": {"total_minor": 400}},
        {"name": "a busy month raises the rate", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T09:01",
         "params": {"rate": 200}, "occupancy": {"recent_percent": 90}}, "expect": {"params": {"rate": 225}}}
    ]);
    let body = json!({"source": source, "tests": tests, "params": {"rate": 200}});
    let v1 = app.post(&versions, &tenant.admin_key, body).await.expect(201);
    assert_eq!(v1["params"], json!({"rate": 200}));
    app.post(&format!("{versions}/1/publish"), &tenant.admin_key, json!({})).await.expect(200);
    let adjust = format!("/v1/rulesets/{set}/adjust");

    // No history yet: nothing to adjust.
    let quiet = app.post(&adjust, &tenant.admin_key, json!({})).await.expect(200);
    assert!(quiet["message"].as_str().unwrap().contains("no change"), "{quiet}");
    assert!(quiet.get("version").is_none());

    // Three of four spaces become occupied (the fourth was never heard of, so it does not count).
    for space in &spaces[..3] {
        let path = format!("/v1/spaces/{space}/override");
        app.put(&path, &tenant.admin_key, json!({"status": "occupied", "reason": "event"})).await.expect(200);
    }
    let adjusted = app.post(&adjust, &tenant.admin_key, json!({})).await.expect(200);
    assert_eq!((adjusted["version"].as_u64(), &adjusted["proposed"]), (Some(2), &json!({"rate": 225})), "{adjusted}");
    let effective = chrono::DateTime::parse_from_rfc3339(adjusted["effective_from"].as_str().unwrap()).unwrap();
    let notice = effective.with_timezone(&Utc) - Utc::now();
    assert!((notice - chrono::Duration::days(7)).num_minutes().abs() < 5, "{adjusted}");

    let list = app.get(&versions, &tenant.staff_key).await.expect(200);
    assert_eq!(list["in_force"], 1, "the new rate waits for its notice period: {list}");
    assert_eq!(list["versions"][1]["params"], json!({"rate": 225}));
    assert_eq!(list["activations"][1]["reason"], "adjust");

    // Stays before the change keep the old rate; stays after it get the new one.
    let (start, end) = window(2);
    let now_quote = app.post("/v1/quotes", &tenant.staff_key, json!({"site_id": site_id, "start": start, "end": end}));
    assert_eq!(now_quote.await.expect(201)["total_minor"], 400);
    let later = (Utc::now() + chrono::Duration::days(8)).duration_trunc(chrono::Duration::hours(1)).unwrap();
    let later_body = json!({"site_id": site_id, "start": later.to_rfc3339(),
                            "end": (later + chrono::Duration::hours(2)).to_rfc3339()});
    let later_quote = app.post("/v1/quotes", &tenant.staff_key, later_body).await.expect(201);
    assert_eq!((later_quote["total_minor"].as_i64(), later_quote["rule"]["version"].as_u64()), (Some(450), Some(2)));

    // While a change is pending, no other is stacked on it, neither by hand nor by the scheduler.
    let pending = app.post(&adjust, &tenant.admin_key, json!({})).await.expect(200);
    assert!(pending["message"].as_str().unwrap().contains("is scheduled"), "{pending}");
    let scheduled = app.kernel().run_scheduled_adjustments().await.unwrap();
    assert!(scheduled.iter().all(|(_, outcome)| outcome.as_ref().is_ok_and(|report| report.version.is_none())));
    assert_eq!(app.get(&versions, &tenant.staff_key).await.expect(200)["versions"].as_array().unwrap().len(), 2);
}
