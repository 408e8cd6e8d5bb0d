//! Metrics every role records, through the `metrics` facade: the libraries
//! only record, the binary decides where the numbers go (`strata … --metrics
//! ADDR` serves them to Prometheus). This module holds what more than one
//! crate records — the request counters and latency histograms of a service
//! (gRPC, framed, S3, FUSE), and a tower layer that records them for every
//! gRPC method a tonic server routes — so every front end and node names
//! them the same way.
//!
//! Naming follows Prometheus conventions: `strata_<what>_total` for
//! counters, `_seconds` and `_bytes` for units. Label values come from fixed
//! sets (service and method names, error-code names, roles): never an inode,
//! blob, path or key.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::SharedString;

use crate::error::{CODE_METADATA_KEY, ErrorCode};

/// Requests a service answered, by `service`, `op` and `code` (`ok` or an
/// [`ErrorCode`] name).
pub const REQUESTS_TOTAL: &str = "strata_requests_total";
/// Time from a request's arrival to its answer, by `service` and `op`.
pub const REQUEST_SECONDS: &str = "strata_request_duration_seconds";
/// Payload bytes received by a service, by `service` and `op`.
pub const RECEIVED_BYTES: &str = "strata_received_bytes_total";
/// Payload bytes sent by a service, by `service` and `op`.
pub const SENT_BYTES: &str = "strata_sent_bytes_total";

/// Errors a front end answered whose requests are not counted one by one
/// with their outcome (the mount's), by `service` and `code`.
pub const ERRORS_TOTAL: &str = "strata_errors_total";

/// The label value of a successful request's code.
pub const CODE_OK: &str = "ok";

/// Records one answered request of `service` (`grpc`, `framed`, `s3`, …):
/// its count by outcome and its latency. `op` and `code` come from fixed
/// sets (method or operation names, error-code names, HTTP statuses).
pub fn record_request(
    service: &'static str,
    op: impl Into<SharedString>,
    code: impl Into<SharedString>,
    started: Instant,
) {
    let op = op.into();
    metrics::counter!(REQUESTS_TOTAL, "service" => service, "op" => op.clone(), "code" => code.into()).increment(1);
    record_latency(service, op, started);
}

/// Records only the latency of a request of `service`/`op` (its count is
/// the histogram's `_count`), for front ends that count errors apart.
pub fn record_latency(service: &'static str, op: impl Into<SharedString>, started: Instant) {
    metrics::histogram!(REQUEST_SECONDS, "service" => service, "op" => op.into())
        .record(started.elapsed().as_secs_f64());
}

/// Records payload bytes a request of `service`/`op` carried in and out.
pub fn record_bytes(service: &'static str, op: impl Into<SharedString>, received: u64, sent: u64) {
    let op = op.into();
    if received > 0 {
        metrics::counter!(RECEIVED_BYTES, "service" => service, "op" => op.clone()).increment(received);
    }
    if sent > 0 {
        metrics::counter!(SENT_BYTES, "service" => service, "op" => op).increment(sent);
    }
}

/// The outcome label of a result: `ok` or its error code's name.
pub fn code_label<T>(result: &Result<T, crate::StrataError>) -> &'static str {
    match result {
        Ok(_) => CODE_OK,
        Err(e) => e.code.name(),
    }
}

/// A tower layer for tonic servers (`Server::builder().layer(GrpcMetrics)`)
/// recording every call as service `grpc`, op `<Service>/<Method>`, with the
/// [`ErrorCode`] the handler answered (read from the `strata-code` header of
/// an error answer; a plain gRPC error counts as `grpc_<code>`).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetrics;

/// A tonic router whose services are wrapped in [`GrpcMetrics`]
/// (`Server::builder().layer(GrpcMetrics)…`).
pub type MeteredRouter = tonic::transport::server::Router<tower_layer::Stack<GrpcMetrics, tower_layer::Identity>>;

impl<S> tower_layer::Layer<S> for GrpcMetrics {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let op = grpc_op(request.uri().path());
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            let code = match &response {
                Ok(response) => grpc_outcome(response.headers()),
                Err(_) => "transport",
            };
            record_request("grpc", op, code, started);
            response
        })
    }
}

/// `<Service>/<Method>` of a gRPC path (`/strata.master.Master/CreateVolume`
/// → `Master/CreateVolume`); a path that is not a gRPC method counts as
/// `unknown`. Cached by path, so a known method costs one lookup under a
/// read lock and no allocation.
fn grpc_op(path: &str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};
    static LABELS: OnceLock<RwLock<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let labels = LABELS.get_or_init(Default::default);
    if let Some(label) = labels.read().unwrap_or_else(|e| e.into_inner()).get(path) {
        return label;
    }
    let Some(label) = op_label(path) else { return "unknown" };
    let mut labels = labels.write().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = labels.get(path) {
        return known;
    }
    // Bounded: a client inventing method paths must not grow this forever.
    if labels.len() >= 1024 {
        return "unknown";
    }
    // Leaked once per method of the compiled-in services, so labels stay `'static`.
    let label: &'static str = Box::leak(label.into_boxed_str());
    labels.insert(Box::leak(path.to_owned().into_boxed_str()), label);
    label
}

/// The label of a gRPC path, if it is one.
fn op_label(path: &str) -> Option<String> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    let service = service.rsplit('.').next().unwrap_or(service);
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some(format!("{service}/{method}"))
}

/// The outcome of a gRPC answer from its headers: an error answer without a
/// body carries `grpc-status` there (a success carries it in the trailers).
fn grpc_outcome(headers: &http::HeaderMap) -> &'static str {
    if let Some(code) = headers.get(CODE_METADATA_KEY).and_then(|v| v.to_str().ok()).and_then(ErrorCode::from_name) {
        return code.name();
    }
    match headers.get("grpc-status").and_then(|v| v.to_str().ok()) {
        None | Some("0") => CODE_OK,
        Some(status) => grpc_status_label(status),
    }
}

/// `grpc_<status>` for a plain gRPC status code (0–16; others `grpc_other`).
fn grpc_status_label(status: &str) -> &'static str {
    const LABELS: [&str; 17] = [
        "grpc_0", "grpc_1", "grpc_2", "grpc_3", "grpc_4", "grpc_5", "grpc_6", "grpc_7", "grpc_8", "grpc_9", "grpc_10",
        "grpc_11", "grpc_12", "grpc_13", "grpc_14", "grpc_15", "grpc_16",
    ];
    status.parse::<usize>().ok().and_then(|n| LABELS.get(n)).copied().unwrap_or("grpc_other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_become_bounded_op_labels() {
        assert_eq!(grpc_op("/strata.master.Master/CreateVolume"), "Master/CreateVolume");
        assert_eq!(grpc_op("/Node/Info"), "Node/Info");
        assert_eq!(grpc_op("/"), "unknown");
        assert_eq!(grpc_op("/a/b/c"), "unknown");
        assert!(std::ptr::eq(grpc_op("/x.Y/Z"), grpc_op("/x.Y/Z")), "interned once");
    }

    #[test]
    fn grpc_outcome_prefers_the_strata_code() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_outcome(&headers), CODE_OK);
        headers.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(grpc_outcome(&headers), "grpc_14");
        headers.insert(CODE_METADATA_KEY, "not_leader".parse().unwrap());
        assert_eq!(grpc_outcome(&headers), "not_leader");
    }
}
