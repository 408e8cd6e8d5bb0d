//! Every request gets an id (`x-amz-request-id`, and `<RequestId>` in an
//! error's XML, which s3s leaves out of the errors it makes itself), a
//! structured access-log line naming the operation, and a count in
//! [`Counters`] and per operation in [`Stats`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use s3s::service::S3Service;
use s3s::{Body, HttpError};

use crate::stats::{OpSlot, Stats};

/// Requests served, by outcome (ready for the metrics issue).
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    /// Sum of request latencies in microseconds (to the response head).
    pub latency_us: AtomicU64,
}

/// The S3 service with request ids and access logs.
#[derive(Clone)]
pub struct Logged {
    inner: S3Service,
    counters: Arc<Counters>,
    stats: Arc<Stats>,
    /// This process's prefix of request ids.
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Logged {
    /// `inner` must have [`crate::stats::NameOps`] as its access hook for
    /// requests to be counted under their operation.
    pub fn new(inner: S3Service, counters: Arc<Counters>, stats: Arc<Stats>) -> Logged {
        let prefix = format!("{:08X}", rand::random::<u32>()).into();
        Logged { inner, counters, stats, prefix, next: Arc::default() }
    }
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Logged {
    type Response = http::Response<Body>;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, HttpError>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let id = format!("{}{:08X}", this.prefix, this.next.fetch_add(1, Ordering::Relaxed));
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let started = Instant::now();
            let slot = OpSlot::default();
            let mut req = req;
            req.extensions_mut().insert(slot.clone());
            let mut response = this.inner.call(req.map(Body::from)).await?;
            let status = response.status().as_u16();
            if let Ok(value) = http::HeaderValue::from_str(&id) {
                response.headers_mut().insert("x-amz-request-id", value);
            }
            if status >= 400 {
                add_request_id(&mut response, &id);
            }
            let elapsed = started.elapsed();
            let counters = &this.counters;
            counters.requests.fetch_add(1, Ordering::Relaxed);
            counters.latency_us.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
            match status {
                400..=499 => counters.client_errors.fetch_add(1, Ordering::Relaxed),
                500.. => counters.server_errors.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            let op = slot.name();
            this.stats.record(&op, status, elapsed);
            strata_common::telemetry::record_request("s3", op.clone(), status.to_string(), started);
            tracing::info!(
                target: "s3_access",
                request_id = %id,
                op = %op,
                method = %method,
                path = %path,
                status,
                elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                "s3 request"
            );
            Ok(response)
        })
    }
}

/// Puts `<RequestId>` into an error's XML body if it has none.
fn add_request_id(response: &mut http::Response<Body>, id: &str) {
    let Some(body) = response.body().bytes() else { return };
    let Some(with_id) = with_request_id(&body, id) else { return };
    let length = with_id.len();
    *response.body_mut() = Body::from(with_id);
    if let Ok(value) = http::HeaderValue::from_str(&length.to_string()) {
        response.headers_mut().insert(http::header::CONTENT_LENGTH, value);
    }
}

fn with_request_id(body: &[u8], id: &str) -> Option<Bytes> {
    const END: &[u8] = b"</Error>";
    if body.windows(b"<RequestId>".len()).any(|w| w == b"<RequestId>") {
        return None;
    }
    let at = body.windows(END.len()).rposition(|w| w == END)?;
    let mut out = Vec::with_capacity(body.len() + id.len() + 24);
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(format!("<RequestId>{id}</RequestId>").as_bytes());
    out.extend_from_slice(&body[at..]);
    Some(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_gain_the_request_id_once() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>";
        let out = with_request_id(body, "ABC").unwrap();
        assert_eq!(
            &out[..],
            &b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><RequestId>ABC</RequestId></Error>"[..]
        );
        assert_eq!(with_request_id(&out, "DEF"), None);
        assert_eq!(with_request_id(b"not xml", "X"), None);
    }
}
