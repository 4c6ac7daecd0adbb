//! The committed OpenAPI document is what SDKs are built from: it must match the code and the
//! served document, and be valid OpenAPI 3.

use crate::helpers::{Backend, TestApp};

const COMMITTED: &str = include_str!("../../openapi/openapi.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_spec_matches_code_and_server() {
    let generated = berth_openapi::spec_json();
    let committed: serde_json::Value = serde_json::from_str(COMMITTED).expect("openapi/openapi.json is JSON");
    let from_code: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(
        committed == from_code,
        "openapi/openapi.json drifted from the code; regenerate with `cargo run -- openapi > openapi/openapi.json`"
    );

    let app = TestApp::spawn(Backend::Sqlite).await;
    let served: serde_json::Value =
        app.client.get(format!("{}/openapi.json", app.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(served, committed, "GET /openapi.json differs from the committed spec");
    let docs = app.client.get(format!("{}/docs", app.base_url)).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"), "/docs is not Swagger UI");
    app.cleanup().await;
}

#[test]
fn committed_spec_is_valid_openapi_3() {
    let spec: openapiv3::OpenAPI = serde_json::from_str(COMMITTED).expect("valid OpenAPI 3 document");
    assert!(spec.openapi.starts_with("3."), "version {}", spec.openapi);
    let mut operation_ids = std::collections::HashSet::new();
    for (path, item) in &spec.paths.paths {
        let item = item.as_item().expect("no $ref path items");
        for (method, operation) in item.iter() {
            let id = operation.operation_id.clone().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(operation_ids.insert(id.clone()), "duplicate operationId {id}");
            assert!(operation.summary.is_some() || operation.description.is_some(), "{id} is undocumented");
        }
    }
    assert!(spec.components.as_ref().unwrap().security_schemes.contains_key("BerthAuth"));
}
