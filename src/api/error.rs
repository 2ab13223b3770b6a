//! API errors as Kubernetes `kind: Status` bodies; the one place store errors become HTTP codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tend_schema::decode::DecodeError;
use tend_schema::store::{ApplyError, StoreError};
use tend_schema::{FieldError, FieldErrors};

/// An HTTP failure: status code, Kubernetes reason, message and (for bad fields) causes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: StatusCode,
    /// Kubernetes `Status.reason`: NotFound, AlreadyExists, Conflict, Invalid, BadRequest…
    pub reason: &'static str,
    pub message: String,
    /// Field paths for `Invalid` (`details.causes[].field`).
    pub causes: Vec<FieldError>,
}

impl ApiError {
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            causes: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid bearer token is required (tend token create; tend kubeconfig)",
        )
    }

    pub fn unsupported_media(content_type: &str, allowed: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format {content_type:?}; accepted media types: {allowed}"),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 422 with one cause per invalid field.
    pub fn invalid(errs: FieldErrors) -> Self {
        Self {
            code: StatusCode::UNPROCESSABLE_ENTITY,
            reason: "Invalid",
            message: errs.to_string(),
            causes: errs.0,
        }
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    /// The `kind: Status` body Kubernetes clients parse.
    pub fn status_body(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if !self.causes.is_empty() {
            let why = if self.reason == "Forbidden" {
                "FieldValueForbidden"
            } else {
                "FieldValueInvalid"
            };
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": why, "message": c.message, "field": c.field}))
                .collect();
            body["details"] = json!({ "group": tend_schema::API_GROUP, "causes": causes });
        }
        body
    }
}

/// A policy refusal: 403 `Forbidden`, the field as the cause.
impl From<tend_schema::policy::Forbidden> for ApiError {
    fn from(f: tend_schema::policy::Forbidden) -> Self {
        Self {
            code: StatusCode::FORBIDDEN,
            reason: "Forbidden",
            message: f.to_string(),
            causes: vec![FieldError::new(f.field, f.message)],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.status_body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::NotFound(_) => Self::not_found(msg),
            StoreError::AlreadyExists(_) => Self::new(StatusCode::CONFLICT, "AlreadyExists", msg),
            StoreError::Conflict { .. } | StoreError::Precondition { .. } => {
                Self::new(StatusCode::CONFLICT, "Conflict", msg)
            }
            StoreError::Invalid(errs) => Self::invalid(errs),
            StoreError::TooOld { .. } => Self::gone(msg),
            ref busy if busy.is_busy() => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", msg)
            }
            _ => {
                tracing::error!(error = %msg, "store failure");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", msg)
            }
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        (*e.error).into()
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Syntax(m) => Self::bad_request(format!("malformed body: {m}")),
            DecodeError::Invalid(errs) => Self::invalid(errs),
            dup @ DecodeError::Duplicate { .. } => Self::bad_request(dup.to_string()),
            too @ DecodeError::TooLarge(_) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                too.to_string(),
            ),
        }
    }
}

/// Results of API handlers.
pub type ApiResult<T> = Result<T, ApiError>;
