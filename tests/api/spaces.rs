//! Spaces: single, bulk (10,000, all or none) and CSV creation, filters, updates, deletion.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, spaces};
use crate::on_each_backend;

on_each_backend!(bulk_ten_thousand_spaces, bulk_is_all_or_nothing, csv_import, space_filters_and_updates);

async fn bulk_ten_thousand_spaces(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let site_id = tenant.create_site(app, "Big").await;
    let created =
        app.post(&format!("/v1/sites/{site_id}/spaces/bulk"), &tenant.admin_key, spaces(10_000)).await.expect(201);
    assert_eq!(created["created"], 10_000);
    let first = &created["items"][0];
    assert_eq!(first["status"], "unknown");
    assert_eq!(first["confidence"], 0.0);

    let page = app.get(&format!("/v1/sites/{site_id}/spaces?limit=1000"), &tenant.staff_key).await.expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1000);
    assert!(page["next_cursor"].is_string());

    let problem =
        app.post(&format!("/v1/sites/{site_id}/spaces/bulk"), &tenant.admin_key, spaces(10_001)).await.problem(422);
    assert!(problem["detail"].as_str().unwrap().contains("at most 10000"), "{problem}");
}

async fn bulk_is_all_or_nothing(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let (site_id, _) = tenant.site_with_spaces(app, "Lot", 3).await;
    let path = format!("/v1/sites/{site_id}/spaces/bulk");

    // A repeated code inside the request names both positions.
    let body = json!([{"code": "X-1"}, {"code": "X-2"}, {"code": "X-1"}]);
    let problem = app.post(&path, &tenant.admin_key, body).await.problem(422);
    assert_eq!(problem["field"], "spaces[2].code");
    assert!(problem["detail"].as_str().unwrap().contains("first at spaces[0]"), "{problem}");

    // A code that already exists is a conflict naming it, and nothing of the batch is kept.
    let mut body = spaces(0);
    for idx in 0..1200 {
        body.as_array_mut().unwrap().push(json!({"code": format!("NEW-{idx}")}));
    }
    body.as_array_mut().unwrap().push(json!({"code": "P-0002"}));
    let problem = app.post(&path, &tenant.admin_key, body).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("'P-0002'"), "{problem}");
    let listed = app.get(&format!("/v1/sites/{site_id}/spaces"), &tenant.admin_key).await.expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 3, "a failed batch must leave nothing behind");

    // A vehicle type the site does not allow.
    let problem = app.post(&path, &tenant.admin_key, json!([{"code": "B", "vehicle_type": "bus"}])).await.problem(422);
    assert_eq!(problem["field"], "spaces[0].vehicle_type");
    // Swapped coordinates.
    let problem = app
        .post(&path, &tenant.admin_key, json!([{"code": "C", "location": {"lat": -8.61, "lon": 41.15}}]))
        .await
        .problem(422);
    assert_eq!(problem["field"], "spaces[0].location");
    // An empty batch.
    app.post(&path, &tenant.admin_key, json!([])).await.problem(422);
}

async fn csv_import(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let site_id = tenant.create_site(app, "Lot").await;
    let path = format!("/v1/sites/{site_id}/spaces/import");
    let csv = "code,lat,lon,category,vehicle_type,ev_charger,accessible\n\
               A-01,41.15070,-8.60960,standard,car,yes,no\n\
               A-02,41.15071,-8.60961,compact,motorcycle,0,1\n\
               A-03,,,,,,\n";
    let created = app.raw(Method::POST, &path, Some(&tenant.admin_key), "text/csv", csv).await.expect(201);
    assert_eq!(created["created"], 3);
    assert_eq!(created["items"][0]["ev_charger"], true);
    assert_eq!(created["items"][1]["vehicle_type"], "motorcycle");
    assert_eq!(created["items"][1]["accessible"], true);
    assert!(created["items"][2].get("location").is_none());

    let bad = "code,lat,lon\nB-01,41.15,east\n";
    let problem = app.raw(Method::POST, &path, Some(&tenant.admin_key), "text/csv", bad).await.problem(422);
    assert!(problem["detail"].as_str().unwrap().contains("line 2, column lon"), "{problem}");
    let problem = app.raw(Method::POST, &path, Some(&tenant.admin_key), "text/csv", "colour\nred\n").await.problem(422);
    assert!(problem["detail"].as_str().unwrap().contains("unknown column 'colour'"), "{problem}");
}

async fn space_filters_and_updates(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let (site_id, space_ids) = tenant.site_with_spaces(app, "Lot", 50).await;
    let (other_site, _) = tenant.site_with_spaces(app, "Other", 5).await;

    let ev = app.get(&format!("/v1/sites/{site_id}/spaces?ev_charger=true"), &tenant.admin_key).await.expect(200);
    assert_eq!(ev["items"].as_array().unwrap().len(), 5);
    let all = app.get("/v1/spaces?limit=1000", &tenant.admin_key).await.expect(200);
    assert_eq!(all["items"].as_array().unwrap().len(), 55);
    let other = app.get(&format!("/v1/spaces?site_id={other_site}"), &tenant.admin_key).await.expect(200);
    assert_eq!(other["items"].as_array().unwrap().len(), 5);

    // An operator closes a space: certain, with a new status_since.
    let space_path = format!("/v1/spaces/{}", space_ids[0]);
    let before = app.get(&space_path, &tenant.admin_key).await.expect(200);
    let closed = app
        .patch(
            &space_path,
            &tenant.admin_key,
            json!({"status": "closed", "vehicle_type": "motorcycle", "location": null}),
        )
        .await
        .expect(200);
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["confidence"], 1.0);
    assert_eq!(closed["vehicle_type"], "motorcycle");
    assert!(closed.get("location").is_none());
    assert_ne!(closed["status_since"], before["status_since"]);
    let closed_list =
        app.get(&format!("/v1/sites/{site_id}/spaces?status=closed"), &tenant.admin_key).await.expect(200);
    assert_eq!(closed_list["items"].as_array().unwrap().len(), 1);
    let motorcycles = app.get("/v1/spaces?vehicle_type=motorcycle", &tenant.admin_key).await.expect(200);
    assert_eq!(motorcycles["items"].as_array().unwrap().len(), 1);

    // Renaming onto an existing code is a conflict.
    app.patch(&space_path, &tenant.admin_key, json!({"code": "P-0002"})).await.problem(409);

    app.delete(&space_path, &tenant.admin_key).await.expect(204);
    app.get(&space_path, &tenant.admin_key).await.problem(404);
    app.delete(&space_path, &tenant.admin_key).await.problem(404);
}
