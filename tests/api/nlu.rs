//! Language understanding over HTTP: `POST /v1/nlu/parse` answers Rasa's shape with normalised
//! values in the caller's timezone; bad requests are problems that say what to fix.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, Backend, TestApp};

#[tokio::test]
async fn messages_parse_into_intents_and_normalised_entities() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    check_parse(&app).await;
    app.cleanup().await;
}

async fn check_parse(app: &TestApp) {
    let driver = app.new_driver("nlu@example.com").await;
    let parse = |token: &str, body| {
        let token = token.to_owned();
        async move { app.post("/v1/nlu/parse", &token, body).await }
    };

    // Thursday 26 November 2026, 14:10 UTC, in London.
    let answer = parse(
        &driver,
        json!({"text": "book a space near Euston tomorrow at 9 for 2 hours",
               "reference_time": "2026-11-26T14:10:00Z", "timezone": "Europe/London"}),
    )
    .await
    .expect(200);
    assert_eq!(answer["intent"]["name"], "book_parking", "{answer}");
    assert!(answer["intent"]["confidence"].as_f64().unwrap() > 0.3, "{answer}");
    assert_eq!(answer["intent_ranking"][0]["name"], "book_parking");
    let entity = |name: &str| {
        answer["entities"].as_array().unwrap().iter().find(|entity| entity["entity"] == name).cloned().unwrap()
    };
    assert_eq!(entity("location")["value"], "Euston");
    assert_eq!((entity("location")["start"].as_u64(), entity("location")["end"].as_u64()), (Some(18), Some(24)));
    assert_eq!(entity("start_time")["value"], "2026-11-27T09:00:00+00:00");
    assert_eq!(entity("duration")["value"], "PT2H");

    // The same words for a user in New York resolve in their zone; operator keys may parse too.
    let tenant = app.new_tenant("nlu-op").await;
    let answer = parse(
        &tenant.admin_key,
        json!({"text": "cancel my booking for tomorrow", "reference_time": "2026-11-26T14:10:00Z",
               "timezone": "America/New_York"}),
    )
    .await
    .expect(200);
    assert_eq!(answer["intent"]["name"], "cancel_booking", "{answer}");

    // Plates and prices come normalised whichever extractor found them.
    let answer = parse(ADMIN_KEY, json!({"text": "my reg is ab12 cde", "timezone": "UTC"})).await.expect(200);
    let plate = answer["entities"].as_array().unwrap().iter().find(|entity| entity["entity"] == "vehicle_plate");
    assert_eq!(plate.map(|plate| plate["value"].clone()), Some(json!("AB12CDE")), "{answer}");

    // Nothing to go on: the fallback intent, not a guess.
    let answer = parse(&driver, json!({"text": ""})).await.expect(200);
    assert_eq!(answer["intent"]["name"], "nlu_fallback");

    let problem = parse(&driver, json!({"text": "hi", "timezone": "Mars/Olympus"})).await.problem(422);
    assert_eq!(problem["field"], "timezone");
    let problem = parse(&driver, json!({"text": "a".repeat(2_001)})).await.problem(422);
    assert_eq!(problem["field"], "text");
    let problem = parse(&driver, json!({"text": "hi", "reference_time": "yesterday"})).await.problem(400);
    assert!(problem["detail"].as_str().unwrap().contains("reference_time"), "{problem}");
    app.request(Method::POST, "/v1/nlu/parse", None, Some(json!({"text": "hi"}))).await.problem(401);
}
