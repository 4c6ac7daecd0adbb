//! Devices: registration, DevEUI normalisation, binding to spaces (one device per space).

use serde_json::json;

use crate::helpers::TestApp;
use crate::on_each_backend;

on_each_backend!(device_registration_and_binding);

async fn device_registration_and_binding(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let (_, space_ids) = tenant.site_with_spaces(app, "Lot", 3).await;
    let key = &tenant.admin_key;

    let device = app
        .post("/v1/devices", key, json!({"external_id": "70b3d57ed0001a2b", "vendor": "Browan", "model": "tbms100", "space_id": space_ids[0]}))
        .await
        .expect(201);
    assert_eq!(device["external_id"], "70B3D57ED0001A2B");
    assert_eq!(device["vendor"], "browan");
    assert_eq!(device["space_id"], space_ids[0].as_str());
    let device_id = device["id"].as_str().unwrap();

    // The same DevEUI in another spelling is the same device.
    let problem = app
        .post("/v1/devices", key, json!({"external_id": "70B3D57ED0001A2B", "vendor": "browan", "model": "tbms100"}))
        .await
        .problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("70B3D57ED0001A2B"), "{problem}");

    // A second device cannot take an occupied space; moving the first one frees it.
    let second = app
        .post("/v1/devices", key, json!({"external_id": "70B3D57ED0001A2C", "vendor": "nwave", "model": "nps"}))
        .await
        .expect(201);
    let second_id = second["id"].as_str().unwrap();
    let bind = format!("/v1/devices/{second_id}/space");
    app.put(&bind, key, json!({"space_id": space_ids[0]})).await.problem(409);
    app.put(&format!("/v1/devices/{device_id}/space"), key, json!({"space_id": space_ids[1]})).await.expect(200);
    app.put(&bind, key, json!({"space_id": space_ids[0]})).await.expect(200);

    // Binding to a space that does not exist names the field.
    let problem = app.put(&bind, key, json!({"space_id": uuid::Uuid::now_v7()})).await.problem(422);
    assert_eq!(problem["field"], "space_id");

    let unbound = app.get("/v1/devices?bound=false", key).await.expect(200);
    assert_eq!(unbound["items"].as_array().unwrap().len(), 0);
    let on_space = app.get(&format!("/v1/devices?space_id={}", space_ids[0]), key).await.expect(200);
    assert_eq!(on_space["items"][0]["id"], second_id);
    let by_vendor = app.get("/v1/devices?vendor=browan", key).await.expect(200);
    assert_eq!(by_vendor["items"].as_array().unwrap().len(), 1);

    // Deleting a space unbinds its device; unbinding explicitly works too.
    app.delete(&format!("/v1/spaces/{}", space_ids[0]), key).await.expect(204);
    let second = app.get(&format!("/v1/devices/{second_id}"), key).await.expect(200);
    assert!(second.get("space_id").is_none(), "{second}");
    let first = app.put(&format!("/v1/devices/{device_id}/space"), key, json!({"space_id": null})).await.expect(200);
    assert!(first.get("space_id").is_none());

    app.delete(&format!("/v1/devices/{device_id}"), key).await.expect(204);
    app.get(&format!("/v1/devices/{device_id}"), key).await.problem(404);
}
