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
    /// The server failed; the request may be retried.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::BadRequest(Json(Problem::new(StatusCode::BAD_REQUEST, detail)))
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError::Unauthorized(Json(Problem::new(StatusCode::UNAUTHORIZED, detail)), "Bearer".to_owned())
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
                ApiError::Unavailable(Json(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; retry later",
                )))
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
    let mut problem = Problem::new(status, detail);
    if let Some(field) = field_from_parse_error(&problem.detail) {
        problem = problem.with_field(field);
    }
    let body = serde_json::json!({
        "type": problem.problem_type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "field": problem.field,
    });
    let mut response = poem::web::Json(body).with_status(status).into_response();
    response
        .headers_mut()
        .insert(poem::http::header::CONTENT_TYPE, poem::http::HeaderValue::from_static("application/problem+json"));
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(poem::http::header::WWW_AUTHENTICATE, poem::http::HeaderValue::from_static("Bearer"));
    }
    response
}

/// poem-openapi names the offending field as ``field `name` `` or `` parameter `name` ``.
fn field_from_parse_error(message: &str) -> Option<String> {
    for marker in ["field `", "parameter `"] {
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
    fn extracts_field_names_from_parse_errors() {
        assert_eq!(field_from_parse_error("failed to parse \"SiteCreate\": field `lat` ... ").as_deref(), Some("lat"));
        assert_eq!(field_from_parse_error("failed to parse parameter `limit`").as_deref(), Some("limit"));
        assert_eq!(field_from_parse_error("expected object"), None);
    }
}
