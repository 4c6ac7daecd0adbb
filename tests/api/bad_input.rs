//! Bad input of every kind gets a 4xx `application/problem+json` with a useful detail, never a
//! 5xx. Cases are data: (method, path, content type, body) → (status, field, detail fragment).

use reqwest::Method;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, TestApp};
use crate::on_each_backend;

on_each_backend!(bad_requests_are_clear_problems);

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    content_type: &'static str,
    body: String,
    status: u16,
    field: Option<&'static str>,
    detail_contains: &'static str,
}

async fn bad_requests_are_clear_problems(app: &TestApp) {
    let tenant = app.new_tenant("acme").await;
    let site_id = tenant.create_site(app, "Lot").await;
    let unknown = uuid::Uuid::now_v7();
    let site = |patch: serde_json::Value| {
        let mut body = crate::helpers::porto_site("Lot");
        for (key, value) in patch.as_object().unwrap() {
            body[key] = value.clone();
        }
        body.to_string()
    };
    let json_ct = "application/json";
    let case = |name, method, path: &str, body: String, status, field, detail_contains| Case {
        name,
        method,
        path: path.to_owned(),
        content_type: json_ct,
        body,
        status,
        field,
        detail_contains,
    };
    let spaces_path = format!("/v1/sites/{site_id}/spaces");
    let cases = vec![
        case("malformed json", Method::POST, "/v1/sites", "{\"kind\": ".into(), 400, None, "parse"),
        case("not an object", Method::POST, "/v1/sites", "[1,2]".into(), 400, None, "SiteCreate"),
        case(
            "wrong type",
            Method::POST,
            "/v1/sites",
            site(json!({"max_stay_minutes": "ten"})),
            400,
            Some("max_stay_minutes"),
            "max_stay_minutes",
        ),
        case(
            "object for string",
            Method::POST,
            "/v1/sites",
            site(json!({"name": {"first": "x"}})),
            400,
            Some("name"),
            "name",
        ),
        case(
            "missing field",
            Method::POST,
            "/v1/sites",
            json!({"kind": "off_street"}).to_string(),
            400,
            Some("name"),
            "name",
        ),
        case(
            "unknown enum",
            Method::POST,
            "/v1/sites",
            site(json!({"kind": "floating"})),
            400,
            Some("kind"),
            "floating",
        ),
        case(
            "latitude out of range",
            Method::POST,
            "/v1/sites",
            site(json!({"location": {"lat": 91.0, "lon": 0.0}})),
            422,
            Some("location.lat"),
            "between -90 and 90",
        ),
        case(
            "longitude out of range",
            Method::POST,
            "/v1/sites",
            site(json!({"location": {"lat": 0.0, "lon": 181.0}})),
            422,
            Some("location.lon"),
            "between -180 and 180",
        ),
        case(
            "overlong name",
            Method::POST,
            "/v1/sites",
            site(json!({"name": "x".repeat(201)})),
            422,
            Some("name"),
            "at most 200 characters",
        ),
        case(
            "blank name",
            Method::POST,
            "/v1/sites",
            site(json!({"name": "   "})),
            422,
            Some("name"),
            "must not be empty",
        ),
        case(
            "unknown time zone",
            Method::POST,
            "/v1/sites",
            site(json!({"timezone": "Mars/Olympus"})),
            422,
            Some("timezone"),
            "Mars/Olympus",
        ),
        case(
            "unknown currency",
            Method::POST,
            "/v1/sites",
            site(json!({"currency": "XXQ"})),
            422,
            Some("currency"),
            "ISO 4217",
        ),
        case(
            "bad opening time",
            Method::POST,
            "/v1/sites",
            site(json!({"opening_hours": [{"days": ["mon"], "opens": "25:00", "closes": "26:00"}]})),
            422,
            Some("opening_hours[0].opens"),
            "HH:MM",
        ),
        case(
            "bad weekday",
            Method::POST,
            "/v1/sites",
            site(json!({"opening_hours": [{"days": ["funday"], "opens": "08:00", "closes": "18:00"}]})),
            422,
            Some("opening_hours[0].days"),
            "funday",
        ),
        case(
            "negative number",
            Method::POST,
            "/v1/sites",
            site(json!({"max_stay_minutes": -5})),
            400,
            Some("max_stay_minutes"),
            "max_stay_minutes",
        ),
        case(
            "absurd height",
            Method::POST,
            "/v1/sites",
            site(json!({"max_height_cm": 21000})),
            422,
            Some("max_height_cm"),
            "centimetres",
        ),
        case(
            "overlong space code",
            Method::POST,
            &spaces_path,
            json!({"code": "C".repeat(33)}).to_string(),
            422,
            Some("spaces[0].code"),
            "at most 32",
        ),
        case("unknown site", Method::GET, &format!("/v1/sites/{unknown}"), String::new(), 404, None, "site not found"),
        case(
            "unknown space",
            Method::PATCH,
            &format!("/v1/spaces/{unknown}"),
            json!({"code": "x"}).to_string(),
            404,
            None,
            "space not found",
        ),
        case(
            "unknown device",
            Method::DELETE,
            &format!("/v1/devices/{unknown}"),
            String::new(),
            404,
            None,
            "device not found",
        ),
        case("malformed id", Method::GET, "/v1/sites/not-a-uuid", String::new(), 400, Some("site_id"), "site_id"),
        case("bad cursor", Method::GET, "/v1/sites?after=zzz", String::new(), 400, None, "next_cursor"),
        case("limit too large", Method::GET, "/v1/sites?limit=100000", String::new(), 400, None, "between 1 and 1000"),
        case("limit not a number", Method::GET, "/v1/sites?limit=ten", String::new(), 400, Some("limit"), "limit"),
        case(
            "bad filter value",
            Method::GET,
            "/v1/spaces?status=parked",
            String::new(),
            400,
            Some("status"),
            "one of: free, occupied, closed, unknown",
        ),
        case("unknown route", Method::GET, "/v1/nothing-here", String::new(), 404, None, "no such endpoint"),
        case("wrong method", Method::PUT, "/v1/sites", "{}".into(), 405, None, "method"),
        Case {
            content_type: "text/plain",
            ..case("wrong content type", Method::POST, "/v1/sites", "hello".into(), 415, None, "is not supported")
        },
        Case {
            content_type: "application/json",
            ..case(
                "csv as json",
                Method::POST,
                &format!("{spaces_path}/import"),
                "{}".into(),
                415,
                None,
                "is not supported",
            )
        },
        case(
            "bad email",
            Method::POST,
            "/v1/drivers",
            json!({"email": "nope", "password": "long enough password"}).to_string(),
            422,
            Some("email"),
            "e-mail",
        ),
    ];
    for case in cases {
        let mut request = app
            .client
            .request(case.method.clone(), format!("{}{}", app.base_url, case.path))
            .bearer_auth(&tenant.admin_key);
        if !case.body.is_empty() {
            request = request.header("content-type", case.content_type).body(case.body.clone());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let text = response.text().await.unwrap();
        let context = format!("case '{}': {status} {text}", case.name);
        assert_eq!(status, case.status, "{context}");
        assert_eq!(content_type, "application/problem+json", "{context}");
        let problem: serde_json::Value = serde_json::from_str(&text).expect("problem body is JSON");
        assert_eq!(problem["status"], case.status, "{context}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.to_lowercase().contains(&case.detail_contains.to_lowercase()),
            "detail should mention '{}': {context}",
            case.detail_contains
        );
        if let Some(field) = case.field {
            assert_eq!(problem["field"], field, "{context}");
        }
    }

    // No credentials, garbage credentials.
    let resp = app.request(Method::GET, "/v1/sites", None, None).await;
    assert!(resp.problem(401)["detail"].as_str().unwrap().contains("Authorization: Bearer"));
    app.get("/v1/sites", "not-a-token").await.problem(401);
    app.get("/v1/operators", ADMIN_KEY).await.expect(200);
}

/// Body limits are about HTTP, not storage: one backend is enough. A small limit keeps the
/// oversized body within socket buffers, so the client finishes sending and reads the 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_rejected() {
    let app =
        &TestApp::spawn_with(crate::helpers::Backend::Sqlite, |config| config.http.max_body_bytes = 64 * 1024).await;
    let tenant = app.new_tenant("acme").await;
    let site_id = tenant.create_site(app, "Lot").await;
    let path = format!("/v1/sites/{site_id}/spaces/bulk");
    let limit = app.config.http.max_body_bytes;
    let huge = format!("[{}]", vec!["{\"code\":\"X\"}"; limit / 12 + 10].join(","));
    assert!(huge.len() > limit);
    let problem =
        app.raw(Method::POST, &path, Some(&tenant.admin_key), "application/json", huge.clone()).await.problem(413);
    assert!(problem["detail"].as_str().unwrap().contains("too large"), "{problem}");

    // Without Content-Length (chunked), the limit still holds.
    let chunks =
        huge.into_bytes().chunks(64 * 1024).map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec())).collect::<Vec<_>>();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    // The server answers 413 as soon as the count passes the limit; a client still sending may
    // see that answer or, when the server closes first, a reset. Either way nothing is stored.
    let sent = app
        .client
        .post(format!("{}{path}", app.base_url))
        .header("content-type", "application/json")
        .bearer_auth(&tenant.admin_key)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            assert_eq!(response.status().as_u16(), 413);
            let problem: serde_json::Value = response.json().await.unwrap();
            assert!(problem["detail"].as_str().unwrap().contains("too large"), "{problem}");
        }
        Err(error) => assert!(error.is_request() || error.is_body(), "{error}"),
    }
    let listed = app.get(&format!("/v1/sites/{site_id}/spaces"), &tenant.admin_key).await.expect(200);
    assert_eq!(listed["items"], json!([]));
    // Just under the limit is accepted.
    let fits = format!("[{}]", (0..2000).map(|idx| format!("{{\"code\":\"F{idx}\"}}")).collect::<Vec<_>>().join(","));
    assert!(fits.len() < limit);
    app.raw(Method::POST, &path, Some(&tenant.admin_key), "application/json", fits).await.expect(201);
}
