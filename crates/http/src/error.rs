//! Every error the API returns, mapped once to a status and the OpenAI body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use medgemma_protocol::{ErrorBody, ErrorDetail, ProtocolError};
use medgemma_scheduler::SubmitError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            param: param.map(String::from),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is still loading; retry shortly",
        )
        .with_code("model_not_ready")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 413 | 415 | 422 => "invalid_request_error",
            401 | 403 => "authentication_error",
            429 => "rate_limit_error",
            503 => "service_unavailable",
            _ => "server_error",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind().into(),
                param: self.param.clone(),
                code: self.code.map(String::from),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        Self {
            param: e.param,
            ..Self::new(StatusCode::BAD_REQUEST, e.message)
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).with_code("queue_full")
            }
            SubmitError::Stopped => Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            SubmitError::Invalid(m) => Self::bad_request(m, None),
        }
    }
}

impl From<medgemma_preprocess::PreprocessError> for ApiError {
    fn from(e: medgemma_preprocess::PreprocessError) -> Self {
        use medgemma_preprocess::PreprocessError as P;
        match e {
            P::Template { at, msg } => Self::bad_request(
                match at {
                    Some(k) => {
                        format!("the chat template rejected the messages: messages[{k}]: {msg}")
                    }
                    None => format!("the chat template rejected the messages: {msg}"),
                },
                Some("messages"),
            ),
            P::NoChatTemplate
            | P::ImageCount { .. }
            | P::ImagePlaceholders { .. }
            | P::Image(_) => Self::bad_request(e.to_string(), Some("messages")),
            other => Self::internal(other.to_string()),
        }
    }
}

/// Rewrites error responses that did not come from our handlers (axum's own 405,
/// 413 and 415 rejections) into the OpenAI error shape.
pub async fn openai_shaped_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/event-stream"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than this server accepts".to_string()
        }
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "the body must be JSON".to_string(),
        other => other.canonical_reason().unwrap_or("error").to_string(),
    };
    ApiError::new(status, message).into_response()
}
