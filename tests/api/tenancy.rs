//! Tenant isolation is a security boundary. This walks *every* operation of the committed spec
//! with a second tenant's admin key and with a driver token, against the first tenant's
//! resources, and then checks the first tenant's data is unchanged. A new operation fails this
//! test until it is classified here.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp};
use crate::on_each_backend;

on_each_backend!(every_route_is_tenant_scoped);

/// How an operation relates to tenants.
enum Scope {
    /// Platform admin only: every other caller gets 403.
    PlatformAdmin,
    /// Addresses one of the first tenant's resources by id: another tenant gets 404.
    OperatorResource,
    /// Operator-wide (lists, creates): another tenant succeeds but sees/changes only its own data.
    OperatorCollection,
    /// The caller's own driver data.
    Driver,
    /// No credentials needed.
    Public,
    /// Prices of any operator's site: drivers may ask; another operator addresses a resource it
    /// does not have (404).
    Marketplace,
    /// A quote: the driver who asked for it and the site's operator only.
    Quote,
    /// Search: drivers see every operator's sites; an operator only its own.
    Search,
    /// Booking a quote: drivers only, with their own quotes.
    Booking,
    /// Any authenticated caller; touches no tenant's data (language understanding).
    Stateless,
}

fn scope_of(operation_id: &str) -> Scope {
    match operation_id {
        "createOperator" | "listOperators" | "createOperatorKey" | "listOperatorKeys" | "listPlugins" | "getPlugin"
        | "installPlugin" | "reloadPlugin" => Scope::PlatformAdmin,
        "getOperator" | "revokeKey" | "getSite" | "updateSite" | "deleteSite" | "createSpace" | "createSpacesBulk"
        | "importSpacesCsv" | "listSiteSpaces" | "getSpace" | "updateSpace" | "deleteSpace" | "getDevice"
        | "bindDevice" | "deleteDevice" => Scope::OperatorResource,
        "getSiteAvailability"
        | "streamSiteAvailability"
        | "setSpaceOverride"
        | "clearSpaceOverride"
        | "getSpaceHistory"
        | "getDeviceHealth" => Scope::OperatorResource,
        "getRuleSet"
        | "updateRuleSet"
        | "createRuleVersion"
        | "listRuleVersions"
        | "getRuleVersion"
        | "testRuleVersion"
        | "publishRuleVersion"
        | "simulateRuleVersion"
        | "rollbackRuleSet"
        | "adjustRuleSet" => Scope::OperatorResource,
        "createRuleSet" | "listRuleSets" => Scope::OperatorCollection,
        "createQuote" => Scope::Marketplace,
        "getQuote" => Scope::Quote,
        "search" => Scope::Search,
        "createBooking" => Scope::Booking,
        "listBookings" => Scope::Search,
        "getBooking" | "cancelBooking" | "extendBooking" | "checkInBooking" | "checkOutBooking"
        | "getBookingReceipt" => Scope::Quote,
        "createKey"
        | "listKeys"
        | "createSite"
        | "listSites"
        | "listSpaces"
        | "registerDevice"
        | "listDevices"
        | "ingestTtn"
        | "ingestChirpstack"
        | "ingestUplink"
        | "streamAreaAvailability" => Scope::OperatorCollection,
        "getMe" | "addVehicle" | "listVehicles" | "getVehicle" | "deleteVehicle" | "exportMyData" | "eraseMyData" => {
            Scope::Driver
        }
        "registerDriver" | "loginDriver" => Scope::Public,
        "parseMessage" => Scope::Stateless,
        "sendWebChatMessage" => Scope::Driver,
        "listWebChatMessages" | "streamWebChatMessages" => Scope::Quote,
        "listHandoffs" => Scope::OperatorCollection,
        "getHandoff" | "replyToHandoff" | "closeHandoff" => Scope::OperatorResource,
        other => panic!("operation {other} is not classified in the tenancy test; add it to scope_of"),
    }
}

struct Victim {
    tenant: Tenant,
    site_id: String,
    space_id: String,
    device_id: String,
    key_id: String,
    vehicle_id: String,
    driver_token: String,
    rule_set_id: String,
    quote_id: String,
    booking_id: String,
    conversation_id: String,
}

fn body_for(operation_id: &str, victim: &Victim) -> Option<(Value, &'static str)> {
    let json_body = |value: Value| Some((value, "application/json"));
    match operation_id {
        "createOperator" => json_body(json!({"name": "Evil", "slug": "evil"})),
        "parseMessage" => json_body(json!({"text": "cancel my booking", "timezone": "Europe/Lisbon"})),
        "sendWebChatMessage" => json_body(json!({"text": "cancel my booking"})),
        "replyToHandoff" => json_body(json!({"text": "evil"})),
        "createOperatorKey" | "createKey" => {
            json_body(json!({"name": "evil", "kind": "operator", "role": "operator_admin"}))
        }
        "createSite" => json_body(crate::helpers::porto_site("Evil site")),
        "updateSite" => json_body(json!({"name": "hacked"})),
        "createSpace" => json_body(json!({"code": "EVIL"})),
        "createSpacesBulk" => json_body(json!([{"code": "EVIL"}])),
        "importSpacesCsv" => Some((Value::String("code\nEVIL\n".into()), "text/csv")),
        "setSpaceOverride" => json_body(json!({"status": "closed", "reason": "evil"})),
        "ingestUplink" => json_body(json!({"device": "70B3D57ED0000001", "f_port": 1, "payload_hex": "01"})),
        "ingestTtn" => json_body(
            json!({"end_device_ids": {"device_id": "eui-70b3d57ed0000001"}, "uplink_message": {"f_port": 1, "frm_payload": "AQ=="}}),
        ),
        "ingestChirpstack" => {
            json_body(json!({"deviceInfo": {"devEui": "70b3d57ed0000001"}, "fPort": 1, "data": "AQ=="}))
        }
        "installPlugin" => {
            let body = crate::plugins::multipart_body("id = \"evil\"", b"\0asm");
            Some((Value::String(String::from_utf8(body).unwrap()), crate::plugins::MULTIPART))
        }
        "updateSpace" => json_body(json!({"code": "hacked", "status": "closed"})),
        "registerDevice" => json_body(
            json!({"external_id": "EVIL0000EVIL0000", "vendor": "x", "model": "y", "space_id": victim.space_id}),
        ),
        "bindDevice" => json_body(json!({"space_id": null})),
        "addVehicle" => json_body(json!({"plate": "EVIL1"})),
        "registerDriver" => json_body(json!({"email": "evil@example.com", "password": "evil evil evil evil"})),
        "loginDriver" => json_body(json!({"email": "victim@example.com", "password": "wrong wrong wrong"})),
        "createRuleSet" => json_body(json!({"name": "evil", "currency": "EUR"})),
        "updateRuleSet" => json_body(json!({"name": "hacked"})),
        "createRuleVersion" => json_body(json!({"source": "fn price(ctx) { 1 }"})),
        "publishRuleVersion" => json_body(json!({})),
        "simulateRuleVersion" => json_body(json!({"history_days": 1})),
        "rollbackRuleSet" => json_body(json!({"version": 1})),
        "createQuote" => json_body(quote_body(&victim.site_id)),
        "createBooking" => json_body(json!({"quote_id": victim.quote_id})),
        "cancelBooking" => json_body(json!({"reason": "evil"})),
        "extendBooking" => json_body(json!({"end": (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339()})),
        _ => None,
    }
}

fn fill_path(template: &str, victim: &Victim, operation_id: &str) -> String {
    let path = template
        .replace("{operator_id}", &victim.tenant.operator_id)
        .replace("{site_id}", &victim.site_id)
        .replace("{space_id}", &victim.space_id)
        .replace("{device_id}", &victim.device_id)
        .replace("{key_id}", &victim.key_id)
        .replace("{vehicle_id}", &victim.vehicle_id)
        .replace("{plugin_id}", "nwave")
        .replace("{rule_set_id}", &victim.rule_set_id)
        .replace("{version}", "1")
        .replace("{quote_id}", &victim.quote_id)
        .replace("{booking_id}", &victim.booking_id)
        .replace("{conversation_id}", &victim.conversation_id);
    match operation_id {
        // Filters naming the victim's resources must not reveal them either.
        "listSpaces" => format!("{path}?site_id={}", victim.site_id),
        "listDevices" => format!("{path}?space_id={}", victim.space_id),
        // A box around the victim's site.
        "streamAreaAvailability" => format!("{path}?bbox=-9,41,-8,42"),
        // A circle around it, tomorrow.
        "search" => {
            let start = chrono::Utc::now() + chrono::Duration::days(1);
            let end = start + chrono::Duration::hours(2);
            let at = |time: chrono::DateTime<chrono::Utc>| time.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            format!("{path}?lat=41.1507&lon=-8.6096&radius_m=5000&start={}&end={}", at(start), at(end))
        }
        _ => path,
    }
}

fn quote_body(site_id: &str) -> Value {
    let start = chrono::Utc::now() + chrono::Duration::days(1);
    json!({"site_id": site_id, "start": start.to_rfc3339(), "end": (start + chrono::Duration::hours(2)).to_rfc3339()})
}

async fn snapshot(app: &TestApp, victim: &Victim) -> Vec<Value> {
    let key = &victim.tenant.admin_key;
    vec![
        app.get(&format!("/v1/sites/{}", victim.site_id), key).await.expect(200),
        app.get(&format!("/v1/sites/{}/spaces", victim.site_id), key).await.expect(200),
        app.get(&format!("/v1/devices/{}", victim.device_id), key).await.expect(200),
        app.get("/v1/keys", key).await.expect(200),
        app.get("/v1/drivers/me/vehicles", &victim.driver_token).await.expect(200),
        app.get("/v1/sites", key).await.expect(200),
        app.get(&format!("/v1/rulesets/{}/versions", victim.rule_set_id), key).await.expect(200),
        app.get(&format!("/v1/quotes/{}", victim.quote_id), &victim.driver_token).await.expect(200),
        app.get(&format!("/v1/bookings/{}", victim.booking_id), &victim.driver_token).await.expect(200),
        app.get(&format!("/v1/bookings/{}/receipt", victim.booking_id), &victim.driver_token).await.expect(200),
        app.get(&format!("/v1/handoffs/{}", victim.conversation_id), key).await.expect(200),
    ]
}

async fn every_route_is_tenant_scoped(app: &TestApp) {
    let tenant = app.new_tenant("victim").await;
    let (site_id, space_ids) = tenant.site_with_spaces(app, "Victim lot", 2).await;
    let device = app
        .post("/v1/devices", &tenant.admin_key, json!({"external_id": "70B3D57ED0000001", "vendor": "browan", "model": "tbms100", "space_id": space_ids[0]}))
        .await
        .expect(201);
    let keys = app.get("/v1/keys", &tenant.admin_key).await.expect(200);
    let staff_key_id =
        keys["items"].as_array().unwrap().iter().find(|key| key["role"] == "operator_staff").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let driver_token = app.new_driver("victim@example.com").await;
    let vehicle = app.post("/v1/drivers/me/vehicles", &driver_token, json!({"plate": "VICTIM1"})).await.expect(201);
    let rule_set = app
        .post("/v1/rulesets", &tenant.admin_key, json!({"name": "tariff", "site_id": site_id, "currency": "EUR"}))
        .await
        .expect(201);
    let rule_set_id = rule_set["id"].as_str().unwrap().to_owned();
    let versions = format!("/v1/rulesets/{rule_set_id}/versions");
    let tests = json!([{"name": "an hour", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T10:00"},
                        "expect": {"total_minor": 100}}]);
    app.post(&versions, &tenant.admin_key, json!({"source": "fn price(ctx) { 100 }", "tests": tests}))
        .await
        .expect(201);
    app.post(&format!("{versions}/1/publish"), &tenant.admin_key, json!({})).await.expect(200);
    let quote = app.post("/v1/quotes", &driver_token, quote_body(&site_id)).await.expect(201);
    let booked = app.post("/v1/quotes", &driver_token, quote_body(&site_id)).await.expect(201);
    let booking = app.post("/v1/bookings", &driver_token, json!({"quote_id": booked["id"]})).await.expect(201);
    let chat = app.post("/v1/chat/web/messages", &driver_token, json!({"text": "hello"})).await.expect(200);
    // The driver asks for a person: the conversation is handed to the victim's team (the
    // operator of the driver's booking).
    app.post("/v1/chat/web/messages", &driver_token, json!({"text": "I want to talk to a human"})).await.expect(200);
    let victim = Victim {
        conversation_id: chat["conversation_id"].as_str().unwrap().to_owned(),
        booking_id: booking["id"].as_str().unwrap().to_owned(),
        rule_set_id,
        quote_id: quote["id"].as_str().unwrap().to_owned(),
        tenant,
        site_id,
        space_id: space_ids[0].clone(),
        device_id: device["id"].as_str().unwrap().to_owned(),
        key_id: staff_key_id,
        vehicle_id: vehicle["id"].as_str().unwrap().to_owned(),
        driver_token,
    };
    let before = snapshot(app, &victim).await;

    let attacker = app.new_tenant("attacker").await;
    let attacker_driver = app.new_driver("attacker@example.com").await;
    let victim_ids = [
        &victim.site_id,
        &victim.rule_set_id,
        &victim.space_id,
        &victim.device_id,
        &victim.key_id,
        &victim.vehicle_id,
        &victim.quote_id,
        &victim.booking_id,
        &victim.conversation_id,
    ];

    let spec: Value = serde_json::from_str(&berth_openapi::spec_json()).unwrap();
    let mut n_operations = 0;
    for (template, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let operation_id = operation["operationId"].as_str().unwrap();
            n_operations += 1;
            let scope = scope_of(operation_id);
            let path = fill_path(template, &victim, operation_id);
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = body_for(operation_id, &victim);
            for (caller, token) in [("other tenant", attacker.admin_key.as_str()), ("driver", attacker_driver.as_str())]
            {
                if operation_id == "eraseMyData" && caller == "driver" {
                    // It would erase the attacker driver itself (its own data only: see
                    // payments::drivers_export_and_erase_their_data_and_plates_expire).
                    continue;
                }
                if operation_id == "streamAreaAvailability" && caller == "other tenant" {
                    // An endless stream: read its snapshot, which must hold only the caller's sites.
                    let mut stream = crate::live::Sse::open(app, &path, token, None).await;
                    let (_, kind, snapshot) = stream.next().await;
                    assert_eq!((kind.as_str(), snapshot["sites"].as_array().map(Vec::len)), ("snapshot", Some(0)));
                    continue;
                }
                let resp = match &body {
                    Some((Value::String(text), content_type)) => {
                        app.raw(method.clone(), &path, Some(token), content_type, text.clone()).await
                    }
                    Some((value, _)) => app.request(method.clone(), &path, Some(token), Some(value.clone())).await,
                    None => app.request(method.clone(), &path, Some(token), None).await,
                };
                let context = format!("{operation_id} {method} {path} as {caller}: {} {}", resp.status, resp.text);
                let is_driver = caller == "driver";
                // A driver's own quote names the site it prices and the rule set that priced it
                // (which the driver cannot read), and nothing else of the victim's.
                let public = match scope {
                    Scope::Marketplace if is_driver => 2,
                    Scope::Search if is_driver => 1,
                    _ => 0,
                };
                for id in &victim_ids[public..] {
                    assert!(!resp.text.contains(id.as_str()), "leaked a victim id: {context}");
                }
                match (&scope, is_driver) {
                    (Scope::PlatformAdmin, _) => assert_eq!(resp.status, 403, "{context}"),
                    (Scope::OperatorResource | Scope::OperatorCollection, true) => {
                        assert_eq!(resp.status, 403, "{context}")
                    }
                    (Scope::OperatorResource, false) => assert_eq!(resp.status, 404, "{context}"),
                    (Scope::OperatorCollection, false) => {
                        // Allowed, but only on the attacker's own data; filters naming the
                        // victim's resources answer 404, empty, or (device on a foreign space) 422.
                        assert!(matches!(resp.status, 200 | 201 | 202 | 404 | 422), "{context}");
                    }
                    (Scope::Driver, false) => assert_eq!(resp.status, 403, "{context}"),
                    (Scope::Driver, true) => assert!(matches!(resp.status, 200 | 201 | 204 | 404), "{context}"),
                    (Scope::Public, _) => assert!(matches!(resp.status, 201 | 401 | 409), "{context}"),
                    (Scope::Marketplace, true) => assert_eq!(resp.status, 201, "{context}"),
                    (Scope::Marketplace, false) | (Scope::Quote, _) => assert_eq!(resp.status, 404, "{context}"),
                    (Scope::Search | Scope::Stateless, _) => assert_eq!(resp.status, 200, "{context}"),
                    (Scope::Booking, true) => assert_eq!(resp.status, 404, "{context}"),
                    (Scope::Booking, false) => assert_eq!(resp.status, 403, "{context}"),
                }
            }
        }
    }
    assert!(n_operations >= 30, "the spec lists only {n_operations} operations");
    let after = snapshot(app, &victim).await;
    assert_eq!(before, after, "another tenant or a driver changed the victim's data");
}
