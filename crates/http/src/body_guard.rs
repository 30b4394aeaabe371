//! A response body that holds a value until the body is dropped: sent whole, or
//! its client gone. Frames, length and end pass through unchanged. The quota
//! layer holds a generation's place this way, the access log its line until a
//! stream's last token is counted.

use axum::body::Body;
use axum::response::Response;

/// `resp` with `guard` dropped only when its body is.
pub fn hold<G: Send + Unpin + 'static>(resp: Response, guard: G) -> Response {
    resp.map(|inner| {
        Body::new(Guarded {
            inner,
            _guard: guard,
        })
    })
}

struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
