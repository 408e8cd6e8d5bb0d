//! Per-operation counters and latency of the gateway, kept in memory for
//! the access log's summaries now and for the metrics exporter later: for
//! each S3 operation (as s3s names it: `PutObject`, `ListObjectsV2`, …) the
//! requests, the client and server errors, and a latency histogram with
//! power-of-two millisecond buckets.
//!
//! The operation is only known inside s3s, after routing: [`OpSlot`] travels
//! in the request's extensions and [`NameOps`] (s3s's access hook, which
//! sees the operation) fills it in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use s3s::access::{S3Access, S3AccessContext};
use s3s::{S3Error, S3ErrorCode, S3Result};

/// Latency buckets: under 1 ms, under 2 ms, … under 2^(BUCKETS-2) ms, and the rest.
pub const BUCKETS: usize = 16;

/// One operation's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpStats {
    pub requests: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub total_us: u64,
    /// Requests per latency bucket (see [`BUCKETS`]).
    pub latency: [u64; BUCKETS],
}

impl OpStats {
    pub fn record(&mut self, status: u16, elapsed: Duration) {
        self.requests += 1;
        match status {
            400..=499 => self.client_errors += 1,
            500.. => self.server_errors += 1,
            _ => {}
        }
        self.total_us += elapsed.as_micros() as u64;
        self.latency[bucket(elapsed)] += 1;
    }

    /// The upper bound (ms) of the bucket holding the `q` quantile (0..=1);
    /// `None` without requests or when it falls in the open last bucket.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let rank = ((self.requests as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank && self.requests > 0 {
                return (i + 1 < BUCKETS).then_some(1 << i);
            }
        }
        None
    }
}

/// The bucket of a latency: 0 for under 1 ms, i for [2^(i-1), 2^i) ms.
fn bucket(elapsed: Duration) -> usize {
    let ms = elapsed.as_millis() as u64;
    if ms == 0 {
        return 0;
    }
    ((64 - ms.leading_zeros()) as usize).min(BUCKETS - 1)
}

/// Figures of every operation seen, by name.
#[derive(Debug, Default)]
pub struct Stats(Mutex<BTreeMap<String, OpStats>>);

impl Stats {
    pub fn record(&self, op: &str, status: u16, elapsed: Duration) {
        self.0.lock().expect("stats").entry(op.to_string()).or_default().record(status, elapsed);
    }

    pub fn snapshot(&self) -> BTreeMap<String, OpStats> {
        self.0.lock().expect("stats").clone()
    }
}

/// Where s3s's access hook writes the operation of one request.
#[derive(Debug, Clone, Default)]
pub struct OpSlot(Arc<Mutex<Option<String>>>);

impl OpSlot {
    /// The operation, or `Unrouted` for a request s3s refused before routing it.
    pub fn name(&self) -> String {
        self.0.lock().expect("op slot").clone().unwrap_or_else(|| "Unrouted".to_string())
    }
}

/// s3s's access hook: names the operation in the request's [`OpSlot`], and
/// refuses anonymous requests (what s3s's default hook does).
pub struct NameOps;

#[async_trait::async_trait]
impl S3Access for NameOps {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name().to_string();
        if let Some(slot) = cx.extensions_mut().get::<OpSlot>() {
            *slot.0.lock().expect("op slot") = Some(op);
        }
        if cx.credentials().is_none() {
            return Err(S3Error::with_message(S3ErrorCode::AccessDenied, "anonymous requests are not allowed"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_power_of_two_buckets_and_quantiles_follow() {
        assert_eq!(bucket(Duration::from_micros(999)), 0);
        assert_eq!(bucket(Duration::from_millis(1)), 1);
        assert_eq!(bucket(Duration::from_millis(3)), 2);
        assert_eq!(bucket(Duration::from_millis(4)), 3);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
        let mut stats = OpStats::default();
        assert_eq!(stats.quantile_ms(0.5), None);
        for _ in 0..98 {
            stats.record(200, Duration::from_micros(500));
        }
        stats.record(404, Duration::from_millis(5));
        stats.record(503, Duration::from_millis(100));
        assert_eq!((stats.requests, stats.client_errors, stats.server_errors), (100, 1, 1));
        assert_eq!(stats.quantile_ms(0.5), Some(1));
        assert_eq!(stats.quantile_ms(0.99), Some(8));
        assert_eq!(stats.quantile_ms(1.0), Some(128));
    }
}
