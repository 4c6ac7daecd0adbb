//! Drivers: registration, login, tokens (berth's own and an external OIDC issuer's), vehicles.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::on_each_backend;

on_each_backend!(driver_accounts_and_vehicles);

async fn driver_accounts_and_vehicles(app: &TestApp) {
    let register = |body| app.request(Method::POST, "/v1/drivers", None, Some(body));
    let created =
        register(json!({"email": "Ana@Example.com", "password": "correct horse battery", "display_name": "Ana"}))
            .await
            .expect(201);
    assert_eq!(created["email"], "ana@example.com");
    assert!(created.get("password").is_none() && !created.to_string().contains("argon2"));
    register(json!({"email": "ana@example.com", "password": "another long password"})).await.problem(409);
    let problem = register(json!({"email": "bo@example.com", "password": "short"})).await.problem(422);
    assert_eq!(problem["field"], "password");

    let login = |email: &str, password: &str| {
        app.request(Method::POST, "/v1/drivers/login", None, Some(json!({"email": email, "password": password})))
    };
    let wrong_password = login("ana@example.com", "wrong horse battery").await.problem(401);
    let unknown_email = login("nobody@example.com", "correct horse battery").await.problem(401);
    assert_eq!(wrong_password["detail"], unknown_email["detail"], "login must not reveal which accounts exist");

    let session = login("ANA@example.com", "correct horse battery").await.expect(200);
    assert_eq!(session["token_type"], "Bearer");
    let token = session["access_token"].as_str().unwrap();
    let me = app.get("/v1/drivers/me", token).await.expect(200);
    assert_eq!(me["id"], created["id"]);

    let vehicle = app
        .post("/v1/drivers/me/vehicles", token, json!({"plate": "ab-12 cd", "vehicle_type": "van", "label": "work"}))
        .await
        .expect(201);
    assert_eq!(vehicle["plate"], "AB12CD");
    app.post("/v1/drivers/me/vehicles", token, json!({"plate": "AB 12 CD"})).await.problem(409);
    let problem = app.post("/v1/drivers/me/vehicles", token, json!({"plate": "AB/12"})).await.problem(422);
    assert_eq!(problem["field"], "plate");

    // Another driver sees none of it.
    let other = app.new_driver("bo@example.com").await;
    let vehicle_path = format!("/v1/drivers/me/vehicles/{}", vehicle["id"].as_str().unwrap());
    app.get(&vehicle_path, &other).await.problem(404);
    app.delete(&vehicle_path, &other).await.problem(404);
    assert_eq!(app.get("/v1/drivers/me/vehicles", &other).await.expect(200)["items"], json!([]));
    app.get(&vehicle_path, token).await.expect(200);
    app.delete(&vehicle_path, token).await.expect(204);

    // Tampered and foreign tokens are refused.
    let mut tampered = token.to_owned();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    app.get("/v1/drivers/me", &tampered).await.problem(401);
}

fn external_token(claims: serde_json::Value, kid: &str) -> String {
    let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/oidc/private.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// Tokens from an external OIDC issuer (configured with a local JWK set file) sign drivers in;
/// the first token creates the driver, later ones find the same driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_oidc_tokens() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.auth.oidc = Some(berth::config::OidcConfig {
            jwks: concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/oidc/jwks.json").to_owned(),
            issuer: "https://id.example.com/".to_owned(),
            audience: "berth-api".to_owned(),
        });
    })
    .await;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |iss: &str, aud: &str, exp: u64| {
        json!({"sub": "auth0|12345", "iss": iss, "aud": aud, "exp": exp, "iat": now,
               "email": "ext@example.com", "email_verified": true})
    };
    let good = external_token(claims("https://id.example.com/", "berth-api", now + 600), "test-key-1");
    let me = app.get("/v1/drivers/me", &good).await.expect(200);
    assert_eq!(me["email"], "ext@example.com");
    let again = app.get("/v1/drivers/me", &good).await.expect(200);
    assert_eq!(again["id"], me["id"], "the same subject is the same driver");

    for (label, token) in [
        ("wrong issuer", external_token(claims("https://evil.example.com/", "berth-api", now + 600), "test-key-1")),
        ("wrong audience", external_token(claims("https://id.example.com/", "other", now + 600), "test-key-1")),
        ("expired", external_token(claims("https://id.example.com/", "berth-api", now - 3600), "test-key-1")),
        ("unknown key", external_token(claims("https://id.example.com/", "berth-api", now + 600), "other-key")),
    ] {
        let resp = app.get("/v1/drivers/me", &token).await;
        assert_eq!(resp.status, 401, "{label}: {}", resp.text);
    }
    // An external driver cannot touch operator data.
    app.get("/v1/sites", &good).await.problem(403);
    app.cleanup().await;
}
