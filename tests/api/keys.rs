//! Operators and API keys: creation, roles, listing, revocation, and how keys are stored.

use serde_json::json;

use crate::helpers::{ADMIN_KEY, TestApp};
use crate::on_each_backend;

on_each_backend!(operator_lifecycle_and_roles, keys_are_shown_once_and_revocable, platform_admin_keys_from_the_api);

async fn operator_lifecycle_and_roles(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let listed = app.get("/v1/operators", ADMIN_KEY).await.expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["slug"], "acme");

    // The same slug twice is a conflict.
    app.post("/v1/operators", ADMIN_KEY, json!({"name": "Other", "slug": "acme"})).await.problem(409);

    // An operator reads its own operator record; staff keys cannot write.
    app.get(&format!("/v1/operators/{}", tenant.operator_id), &tenant.staff_key).await.expect(200);
    let problem = app.post("/v1/sites", &tenant.staff_key, crate::helpers::porto_site("x")).await.problem(403);
    assert!(problem["detail"].as_str().unwrap().contains("read-only"), "{problem}");
    // Integration keys push data only.
    app.get("/v1/sites", &tenant.integration_key).await.problem(403);
    // Operators cannot list operators or create platform keys.
    app.get("/v1/operators", &tenant.admin_key).await.problem(403);
    app.post("/v1/keys", &tenant.admin_key, json!({"name": "x", "kind": "platform_admin"})).await.problem(403);
}

async fn keys_are_shown_once_and_revocable(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let created =
        app.post("/v1/keys", &tenant.admin_key, json!({"name": "back office", "kind": "operator"})).await.expect(201);
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("berth_op_"));
    assert_eq!(created["key"]["role"], "operator_staff", "operator keys default to read-only");
    assert!(token.starts_with(created["key"]["prefix"].as_str().unwrap()));

    let listed = app.get("/v1/keys", &tenant.admin_key).await.expect(200);
    let listed_text = listed.to_string();
    assert_eq!(listed["items"].as_array().unwrap().len(), 4);
    assert!(!listed_text.contains(&token), "a listing must never contain a token");

    app.get("/v1/sites", &token).await.expect(200);
    let key_id = created["key"]["id"].as_str().unwrap();
    let revoked = app.delete(&format!("/v1/keys/{key_id}"), &tenant.admin_key).await.expect(200);
    assert!(revoked["revoked_at"].is_string());
    let problem = app.get("/v1/sites", &token).await.problem(401);
    assert_eq!(problem["detail"], "invalid or revoked API key");
    // Revoking again is harmless.
    app.delete(&format!("/v1/keys/{key_id}"), &tenant.admin_key).await.expect(200);
    // A made-up key of the right shape is rejected the same way.
    app.get("/v1/sites", "berth_op_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await.problem(401);
}

async fn platform_admin_keys_from_the_api(app: &TestApp) {
    let created = app.post("/v1/keys", ADMIN_KEY, json!({"name": "ops", "kind": "platform_admin"})).await.expect(201);
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("berth_adm_"));
    app.post("/v1/operators", token, json!({"name": "Zed", "slug": "zed"})).await.expect(201);
    let listed = app.get("/v1/keys", ADMIN_KEY).await.expect(200);
    assert_eq!(listed["items"][0]["kind"], "platform_admin");
    // Platform keys may not carry an operator role.
    app.post("/v1/keys", ADMIN_KEY, json!({"name": "x", "kind": "platform_admin", "role": "operator_admin"}))
        .await
        .problem(422);
    // Keys for an operator that does not exist.
    app.post(
        &format!("/v1/operators/{}/keys", uuid::Uuid::now_v7()),
        ADMIN_KEY,
        json!({"name": "x", "kind": "operator"}),
    )
    .await
    .problem(404);
}
