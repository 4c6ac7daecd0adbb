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

const JWKS_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/oidc/jwks.json");

/// A minimal identity provider endpoint on loopback that serves the JWK set over HTTP.
async fn serve_jwks() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = std::fs::read_to_string(JWKS_FILE).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/.well-known/jwks.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_oidc_tokens_with_jwks_file() {
    external_oidc_tokens(JWKS_FILE.to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_oidc_tokens_with_jwks_url() {
    external_oidc_tokens(serve_jwks().await).await;
}

/// Tokens from an external OIDC issuer (a local key set) sign drivers in; the first token
/// creates the driver, later ones find the same driver; bad tokens say why they were refused.
async fn external_oidc_tokens(jwks: String) {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.auth.oidc = Some(berth::config::OidcConfig {
            jwks,
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

    for (expected, token) in [
        (
            "token issuer not accepted",
            external_token(claims("https://evil.example.com/", "berth-api", now + 600), "test-key-1"),
        ),
        (
            "token audience not accepted",
            external_token(claims("https://id.example.com/", "other", now + 600), "test-key-1"),
        ),
        ("token expired", external_token(claims("https://id.example.com/", "berth-api", now - 3600), "test-key-1")),
        (
            "unknown key id 'other-key'",
            external_token(claims("https://id.example.com/", "berth-api", now + 600), "other-key"),
        ),
    ] {
        let problem = app.get("/v1/drivers/me", &token).await.problem(401);
        assert_eq!(problem["detail"], format!("invalid token: {expected}"));
    }
    // An external driver cannot touch operator data.
    app.get("/v1/sites", &good).await.problem(403);
    app.cleanup().await;
}
