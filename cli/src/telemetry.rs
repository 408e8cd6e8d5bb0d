//! `--metrics ADDR`: where a process's metrics go. The libraries record
//! through the `metrics` facade (`strata_common::telemetry` names the shared
//! ones); this installs the Prometheus exporter as the recorder, serving
//! `GET /metrics` on ADDR, with every series labelled by the process's
//! `role`, latencies as histograms, and the process's own figures (memory,
//! CPU, open files) next to them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;

/// Histogram buckets of every `_seconds` metric: 50 µs to 20 s.
const SECONDS_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 20.0];
/// How often the process figures and build info are refreshed.
const PROCESS_EVERY: Duration = Duration::from_secs(5);
/// A gauge not set for this long is dropped (a Raft group removed from this
/// node, a disk gone): samplers refresh the live ones every few seconds.
const GAUGE_IDLE: Duration = Duration::from_secs(60);

/// Serves this process's metrics on `listen` (if given) as role `role`.
/// Must run inside the tokio runtime, which hosts the listener.
pub fn serve(listen: Option<&str>, role: &'static str) -> anyhow::Result<()> {
    let Some(listen) = listen else {
        return Ok(());
    };
    let address: SocketAddr = listen.parse().with_context(|| format!("--metrics {listen}: not an IP:PORT"))?;
    PrometheusBuilder::new()
        .with_http_listener(address)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .context("setting the latency histogram buckets")?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .add_global_label("role", role)
        .install()
        .with_context(|| format!("serving metrics on {address}"))?;
    tokio::spawn(process_figures());
    tracing::info!(%address, role, "serving prometheus metrics");
    Ok(())
}

/// The process's build, memory, CPU time and open files, refreshed forever.
async fn process_figures() {
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let mut tick = tokio::time::interval(PROCESS_EVERY);
    loop {
        tick.tick().await;
        metrics::gauge!("strata_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        metrics::gauge!("process_start_time_seconds").set(started.as_secs_f64());
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some((cpu_ticks, resident_pages)) = parse_stat(&stat)
        {
            // A gauge holding a counter's value: `metrics` counters are whole
            // numbers, CPU time is not (rate() reads either the same).
            metrics::gauge!("process_cpu_seconds_total").set(cpu_ticks as f64 / ticks_per_second);
            metrics::gauge!("process_resident_memory_bytes").set(resident_pages as f64 * page_size);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            metrics::gauge!("process_open_fds").set(fds.count() as f64);
        }
    }
}

/// User plus system CPU ticks and resident pages from `/proc/self/stat`
/// (fields 14, 15 and 24, counted after the parenthesised command name,
/// which may itself hold spaces).
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some((field(14)? + field(15)?, field(24)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_read_after_the_command_name() {
        let stat = "42 (strata (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 123456 789 \
                    18446744073709551615";
        assert_eq!(parse_stat(stat), Some((300, 789)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
