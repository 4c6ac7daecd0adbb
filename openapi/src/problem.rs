//! The one place that maps errors to HTTP: RFC 9457 `application/problem+json` bodies.

use berth_kernel::KernelError;
use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

/// An RFC 9457 problem detail.
#[derive(Debug, Clone, Object)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[oai(rename = "type")]
    pub problem_type: String,
    /// Short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, in words a developer can act on.
    pub detail: String,
    /// For validation problems: the offending field (`location.lat`, `spaces[3].code`).
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        let problem_type = match status {
            StatusCode::UNPROCESSABLE_ENTITY => "https://berth.dev/problems/validation",
            StatusCode::CONFLICT => "https://berth.dev/problems/conflict",
            _ => "about:blank",
        };
        Self {
            problem_type: problem_type.to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The problem as an `application/problem+json` response, for endpoints outside the
    /// OpenAPI operations (where [`ApiError`] does this).
    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::json!({
            "type": self.problem_type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        });
        if let Some(field) = self.field {
            body["field"] = serde_json::Value::String(field);
        }
        poem::web::Json(body).with_status(status).with_content_type("application/problem+json").into_response()
    }
}

/// Every error an operation can answer with. Listed in each operation of the spec.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed (bad JSON, wrong types, bad parameters).
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Missing, malformed, expired or revoked credentials.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// The credentials are valid but may not do this.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such resource for this caller (other tenants' resources answer this too).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The request conflicts with existing data (duplicate slug, code, e-mail...).
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The request is well-formed but a field is invalid; `field` names it.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// The server cannot answer now (its database is busy or unreachable); retry later.
    /// `Retry-After` gives seconds to wait (add some jitter).
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>, #[oai(header = "Retry-After")] u64),
}

/// The `Retry-After` of a 503, in seconds.
pub const RETRY_AFTER_SECS: u64 = 2;

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::BadRequest(Json(Problem::new(StatusCode::BAD_REQUEST, detail)))
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError::Unauthorized(Json(Problem::new(StatusCode::UNAUTHORIZED, detail)), "Bearer".to_owned())
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError::Unavailable(Json(Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)), RETRY_AFTER_SECS)
    }

    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Unprocessable(Json(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail).with_field(field)))
    }
}

impl From<KernelError> for ApiError {
    fn from(error: KernelError) -> Self {
        match error {
            KernelError::Validation(validation) => {
                let detail = validation.to_string();
                ApiError::validation(validation.field, detail)
            }
            KernelError::NotFound { .. } => {
                ApiError::NotFound(Json(Problem::new(StatusCode::NOT_FOUND, error.to_string())))
            }
            KernelError::Conflict(message) => ApiError::Conflict(Json(Problem::new(StatusCode::CONFLICT, message))),
            KernelError::Forbidden(message) => ApiError::Forbidden(Json(Problem::new(StatusCode::FORBIDDEN, message))),
            KernelError::Unauthenticated(message) => ApiError::unauthorized(message),
            KernelError::Store(store_error) => {
                // The cause goes to the log, not to the client.
                tracing::error!(error = %store_error, "storage failure");
                ApiError::unavailable("the database is unavailable; retry later")
            }
            KernelError::Unavailable(message) => ApiError::unavailable(message),
            KernelError::NotAllowed(reason) => {
                let mut problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, reason);
                problem.problem_type = "https://berth.dev/problems/not-allowed".to_owned();
                ApiError::Unprocessable(Json(problem))
            }
            KernelError::RuleFailed(detail) => {
                let mut problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail);
                problem.problem_type = "https://berth.dev/problems/rule-failed".to_owned();
                ApiError::Unprocessable(Json(problem))
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Turns any error that escaped the operations (routing 404/405, body limits, poem-openapi
/// parse errors) into problem+json, and rewrites poem's terse messages into useful ones.
pub async fn error_to_problem(error: poem::Error) -> Response {
    if error.is_from_response() {
        return error.into_response();
    }
    let status = error.status();
    let message = error.to_string();
    let detail = match status {
        StatusCode::NOT_FOUND => "no such endpoint; see /openapi.json for the API".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "this endpoint does not support this HTTP method".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => format!("request body too large ({message})"),
        StatusCode::LENGTH_REQUIRED => "send a Content-Length header with the request body".to_owned(),
        StatusCode::UNAUTHORIZED => {
            "missing or malformed credentials: send 'Authorization: Bearer <API key or token>'".to_owned()
        }
        _ => message,
    };
    let mut detail = detail;
    if let Some(operation) = error.data::<poem_openapi::OperationId>() {
        detail = name_path_parameters(&detail, operation.0);
    }
    if detail.contains("valid enumeration value")
        && let Some(values) = schema_in_error(&detail.replace("failed to parse \"", "occurred while parsing \""))
            .and_then(|schema| schema.get("enum"))
            .and_then(|values| values.as_array())
    {
        let values: Vec<&str> = values.iter().filter_map(|value| value.as_str()).collect();
        detail = format!("{detail}; expected one of: {}", values.join(", "));
    }
    let hint = error.data::<FieldHint>().map(|hint| hint.0.clone());
    let (detail, field) = match (field_from_parse_error(&detail), hint) {
        (Some(field), _) => (detail, Some(field)),
        (None, Some(field)) => (format!("{field}: {detail}"), Some(field)),
        (None, None) => (detail, None),
    };
    let mut problem = Problem::new(status, detail);
    if let Some(field) = field {
        problem = problem.with_field(field);
    }
    let mut response = problem.into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(poem::http::header::WWW_AUTHENTICATE, poem::http::HeaderValue::from_static("Bearer"));
    }
    response
}

/// The JSON path of the value a payload parse error complained about.
#[derive(Debug, Clone)]
pub struct FieldHint(pub String);

/// poem-openapi reports type errors as `found <json value>` without the field; find where in
/// the request body that value sits (first match, depth-first) to name the field.
pub fn locate_json_type_error(message: &str, body: &[u8]) -> Option<String> {
    let Some(found) = message.split("found ").nth(1) else {
        return locate_json_value_error(message, body);
    };
    let found = found.split(". (occurred while").next()?.trim_end_matches('.');
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    fn walk(value: &serde_json::Value, found: &str, path: &str) -> Option<String> {
        match value {
            serde_json::Value::Object(map) => map.iter().find_map(|(key, child)| {
                let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                if serde_json::to_string(child).ok().as_deref() == Some(found) {
                    return Some(child_path);
                }
                walk(child, found, &child_path)
            }),
            serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(idx, child)| {
                let child_path = format!("{path}[{idx}]");
                if serde_json::to_string(child).ok().as_deref() == Some(found) && !path.is_empty() {
                    return Some(child_path);
                }
                walk(child, found, &child_path)
            }),
            _ => None,
        }
    }
    walk(&value, found, "").or_else(|| if found == "null" { missing_required_field(message, &value) } else { None })
}

fn own_spec() -> &'static serde_json::Value {
    static SPEC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| serde_json::from_str(&crate::server::spec_json()).unwrap_or_default())
}

/// poem reports path parameters by position (`param0`); use the names from the spec.
fn name_path_parameters(message: &str, operation_id: &str) -> String {
    let Some(paths) = own_spec().get("paths").and_then(|paths| paths.as_object()) else {
        return message.to_owned();
    };
    let operation = paths
        .values()
        .filter_map(|item| item.as_object())
        .flat_map(|item| item.values())
        .find(|operation| operation.get("operationId").and_then(|id| id.as_str()) == Some(operation_id));
    let Some(parameters) = operation.and_then(|operation| operation.get("parameters")).and_then(|p| p.as_array())
    else {
        return message.to_owned();
    };
    let path_names = parameters.iter().filter(|parameter| parameter["in"] == "path").filter_map(|p| p["name"].as_str());
    let mut message = message.to_owned();
    for (idx, name) in path_names.enumerate() {
        message = message.replace(&format!("`param{idx}`"), &format!("`{name}`"));
    }
    message
}

/// The schema (from our own OpenAPI document) of the innermost named type in a parse error.
fn schema_in_error(message: &str) -> Option<&'static serde_json::Value> {
    let schemas = own_spec().get("components")?.get("schemas")?;
    message
        .split("occurred while parsing \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find_map(|name| schemas.get(name))
}

/// Applies `check` to the body object, or to each object of a body array, naming the field.
fn find_in_body(
    body: &serde_json::Value,
    check: impl Fn(&serde_json::Map<String, serde_json::Value>) -> Option<String>,
) -> Option<String> {
    match body {
        serde_json::Value::Object(object) => check(object),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(idx, item)| item.as_object().and_then(&check).map(|name| format!("[{idx}].{name}"))),
        _ => None,
    }
}

/// For errors without a `found` value (`invalid integer`): the first top-level field whose
/// value does not fit its schema type.
pub fn locate_json_value_error(message: &str, body: &[u8]) -> Option<String> {
    let schema = schema_in_error(message)?;
    let properties = schema.get("properties")?.as_object()?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    find_in_body(&value, |object| {
        properties.iter().find_map(|(name, property)| {
            let value = object.get(name).filter(|value| !value.is_null())?;
            let fits = match property.get("type").and_then(|ty| ty.as_str()) {
                Some("integer") => match property.get("format").and_then(|format| format.as_str()) {
                    Some(format) if format.starts_with("uint") => {
                        value.as_u64().is_some_and(|n| n <= u64::from(u32::MAX))
                    }
                    _ => value.as_i64().is_some(),
                },
                Some("number") => value.is_number(),
                Some("string") => match property.get("format").and_then(|format| format.as_str()) {
                    Some("date-time") => {
                        value.as_str().is_some_and(|text| chrono::DateTime::parse_from_rfc3339(text).is_ok())
                    }
                    _ => value.is_string(),
                },
                Some("boolean") => value.is_boolean(),
                Some("array") => value.is_array(),
                _ => true,
            };
            (!fits).then(|| name.clone())
        })
    })
}

/// For `found null` with no null in the body: a required field is absent. Name the first one
/// missing, using the schema (from our own OpenAPI document) of the type being parsed.
fn missing_required_field(message: &str, body: &serde_json::Value) -> Option<String> {
    let required = schema_in_error(message)?.get("required")?.as_array()?;
    find_in_body(body, |object| {
        required.iter().filter_map(|name| name.as_str()).find(|name| !object.contains_key(*name)).map(str::to_owned)
    })
}

/// poem-openapi names the offending field as ``field `name` `` or `` parameter `name` ``.
fn field_from_parse_error(message: &str) -> Option<String> {
    for marker in ["field `", "parameter `", "path `"] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            return rest.find('`').map(|end| rest[..end].to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_type_errors_in_the_body() {
        let message = "parse request payload error: Expected input type \"integer(uint32)\", found \"ten\". \
                       (occurred while parsing \"SiteCreate\")";
        let body = br#"{"name": "x", "location": {"lat": 1}, "max_stay_minutes": "ten"}"#;
        assert_eq!(locate_json_type_error(message, body).as_deref(), Some("max_stay_minutes"));
        let body = br#"[{"code": "a"}, {"code": {"x": 1}}]"#;
        let message = "Expected input type \"string\", found {\"x\":1}. (occurred while parsing \"SpaceCreate\")";
        assert_eq!(locate_json_type_error(message, body).as_deref(), Some("[1].code"));
    }

    #[test]
    fn extracts_field_names_from_parse_errors() {
        assert_eq!(field_from_parse_error("failed to parse \"SiteCreate\": field `lat` ... ").as_deref(), Some("lat"));
        assert_eq!(field_from_parse_error("failed to parse parameter `limit`").as_deref(), Some("limit"));
        assert_eq!(field_from_parse_error("expected object"), None);
    }
}
