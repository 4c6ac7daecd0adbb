//! Sites: create, read, partial update, filters, pagination, delete rules.

use serde_json::json;

use crate::helpers::{TestApp, porto_site};
use crate::on_each_backend;

on_each_backend!(site_crud, site_pagination_and_filters);

async fn site_crud(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let created = app.post("/v1/sites", &tenant.admin_key, porto_site("Trindade")).await.expect(201);
    let site_id = created["id"].as_str().unwrap();
    assert_eq!(created["operator_id"], tenant.operator_id.as_str());
    assert_eq!(created["timezone"], "Europe/Lisbon");
    assert_eq!(created["opening_hours"][0]["days"], json!(["mon", "tue", "wed", "thu", "fri"]));
    assert_eq!(created["allowed_vehicle_types"], json!(["car", "motorcycle"]));

    let fetched = app.get(&format!("/v1/sites/{site_id}"), &tenant.staff_key).await.expect(200);
    assert_eq!(fetched, created);

    // Absent fields stay, null clears, values replace.
    let updated = app
        .patch(
            &format!("/v1/sites/{site_id}"),
            &tenant.admin_key,
            json!({"name": "Trindade Garage", "max_height_cm": null, "opening_hours": []}),
        )
        .await
        .expect(200);
    assert_eq!(updated["name"], "Trindade Garage");
    assert!(updated.get("max_height_cm").is_none(), "{updated}");
    assert_eq!(updated["opening_hours"], json!([]));
    assert_eq!(updated["max_stay_minutes"], 480);
    assert_eq!(updated["created_at"], created["created_at"]);

    // An invalid patch changes nothing.
    app.patch(&format!("/v1/sites/{site_id}"), &tenant.admin_key, json!({"timezone": "Europe/Atlantis"}))
        .await
        .problem(422);
    let unchanged = app.get(&format!("/v1/sites/{site_id}"), &tenant.admin_key).await.expect(200);
    assert_eq!(unchanged["timezone"], "Europe/Lisbon");
    assert_eq!(unchanged, updated, "the accepted patch was stored");

    // A site with spaces is not deleted; an empty one is.
    app.post(&format!("/v1/sites/{site_id}/spaces"), &tenant.admin_key, json!({"code": "A1"})).await.expect(201);
    let problem = app.delete(&format!("/v1/sites/{site_id}"), &tenant.admin_key).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("1 spaces"), "{problem}");
    let empty_site = tenant.create_site(app, "Empty").await;
    app.delete(&format!("/v1/sites/{empty_site}"), &tenant.admin_key).await.expect(204);
    app.get(&format!("/v1/sites/{empty_site}"), &tenant.admin_key).await.problem(404);
}

async fn site_pagination_and_filters(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    for idx in 0..5 {
        tenant.create_site(app, &format!("Lot {idx}")).await;
    }
    let mut zone = porto_site("Zone");
    zone["kind"] = json!("on_street");
    app.post("/v1/sites", &tenant.admin_key, zone).await.expect(201);

    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let page = app.get(&format!("/v1/sites?limit=2&after={after}"), &tenant.admin_key).await.expect(200);
        names.extend(page["items"].as_array().unwrap().iter().map(|site| site["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => after = cursor.to_owned(),
            None => break,
        }
    }
    assert_eq!(names, ["Lot 0", "Lot 1", "Lot 2", "Lot 3", "Lot 4", "Zone"]);

    let zones = app.get("/v1/sites?kind=on_street", &tenant.admin_key).await.expect(200);
    assert_eq!(zones["items"].as_array().unwrap().len(), 1);
    assert_eq!(zones["items"][0]["name"], "Zone");
}
