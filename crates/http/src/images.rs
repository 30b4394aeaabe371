//! Image parts of chat messages: where the bytes come from (data: URLs; http(s)
//! only from hosts the operator allowed; never file:) and the hook that turns
//! them into model inputs.

use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine as _;
use medgemma_core::Prompt;
use medgemma_preprocess::{ImageError, ImageProcessor, ImageTokens, TextProcessor};

use crate::error::ApiError;

/// Operator settings for images.
#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// Hosts http(s) image URLs may name; empty: remote URLs are refused.
    pub allowed_hosts: Vec<String>,
    /// Largest encoded image accepted.
    pub max_bytes: usize,
    /// Time limit of one remote image fetch.
    pub fetch_timeout: std::time::Duration,
}

impl Default for ImageSettings {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            max_bytes: 20 * 1024 * 1024,
            fetch_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// An image of a request: its bytes and the request field that named it.
#[derive(Debug, Clone)]
pub struct RequestImage {
    pub bytes: Vec<u8>,
    /// e.g. `messages[0].content[1].image_url.url`, for errors.
    pub param: String,
}

/// Turns a rendered chat prompt and its images into token ids and pixels.
pub trait ImagePreprocessor: Send + Sync {
    /// `rendered` holds one image marker per image, in order.
    fn build_prompt(
        &self,
        rendered: &str,
        images: &[RequestImage],
        pan_and_scan: Option<bool>,
    ) -> Result<Prompt, ApiError>;

    /// The id of the image soft token, which only an image's placeholder may hold.
    fn image_token_id(&self) -> u32;
}

/// The checkpoint's image processor and image tokens.
pub struct CheckpointImages {
    pub processor: ImageProcessor,
    pub tokens: ImageTokens,
    pub text: Arc<TextProcessor>,
}

impl ImagePreprocessor for CheckpointImages {
    fn build_prompt(
        &self,
        rendered: &str,
        images: &[RequestImage],
        pan_and_scan: Option<bool>,
    ) -> Result<Prompt, ApiError> {
        let mut pixels = Vec::with_capacity(images.len());
        for (i, image) in images.iter().enumerate() {
            let p = self
                .processor
                .process(&image.bytes, pan_and_scan)
                .map_err(|e| image_error(i, &image.param, e))?;
            pixels.push(p);
        }
        self.tokens
            .build_prompt(&self.text, rendered, pixels)
            .map_err(ApiError::from)
    }

    fn image_token_id(&self) -> u32 {
        self.tokens.image_token_id
    }
}

fn image_error(index: usize, param: &str, e: ImageError) -> ApiError {
    let status = match e {
        ImageError::TooManyBytes { .. } | ImageError::TooManyPixels { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError {
        param: Some(param.into()),
        ..ApiError::new(status, format!("image {index}: {e}"))
    }
}

/// The bytes an `image_url` part names.
pub fn image_bytes(url: &str, settings: &ImageSettings, param: &str) -> Result<Vec<u8>, ApiError> {
    let bad = |msg: String| ApiError::bad_request(msg, Some(param));
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("the data: URL has no ',' before its payload".into()))?;
        if !meta.ends_with(";base64") {
            return Err(bad("only base64 data: URLs are accepted for images".into()));
        }
        if data.len() / 4 * 3 > settings.max_bytes + 3 {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the image is larger than the limit of {} bytes",
                    settings.max_bytes
                ),
            ));
        }
        let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        return base64::engine::general_purpose::STANDARD
            .decode(cleaned.as_bytes())
            .map_err(|e| bad(format!("the image's base64 payload is invalid: {e}")));
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let host = host_of(url);
        if settings.allowed_hosts.is_empty()
            || !settings
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host))
        {
            return Err(bad(
                "remote image URLs are disabled on this server; send the image as a base64 data: URL".into(),
            ));
        }
        return fetch(url, settings).map_err(bad);
    }
    if lower.starts_with("file:") {
        return Err(bad(
            "file: URLs are never accepted; send the image as a base64 data: URL".into(),
        ));
    }
    Err(bad("image_url must be a base64 data: URL".into()))
}

/// Fetches an image from an allowed host: no redirects (they could leave the
/// allowed hosts), a time limit, and a size limit enforced while reading.
fn fetch(url: &str, settings: &ImageSettings) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(settings.fetch_timeout)
        .build();
    let resp = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Status(code, _) => format!("the image host answered {code}"),
        ureq::Error::Transport(t) => format!("the image could not be fetched: {}", t.kind()),
    })?;
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(settings.max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("the image could not be read: {e}"))?;
    if bytes.len() > settings.max_bytes {
        return Err(format!(
            "the image is larger than the limit of {} bytes",
            settings.max_bytes
        ));
    }
    Ok(bytes)
}

fn host_of(url: &str) -> &str {
    let after = url.split_once("://").map(|x| x.1).unwrap_or("");
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    host_port.split(':').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_decode_and_others_are_refused() {
        let s = ImageSettings::default();
        assert_eq!(
            image_bytes("data:image/png;base64,aGk=", &s, "p").unwrap(),
            b"hi"
        );
        for url in [
            "data:image/png;base64,@@@",
            "data:image/png,raw",
            "file:///etc/passwd",
            "http://x/y.png",
            "ftp://x",
        ] {
            let e = image_bytes(url, &s, "p").unwrap_err();
            assert_eq!(e.status, 400, "{url}");
        }
        assert_eq!(host_of("https://user@pacs.local:8443/a.png"), "pacs.local");
    }
}
