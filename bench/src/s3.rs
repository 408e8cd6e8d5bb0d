//! `strata bench s3`: PUT, HEAD, GET, LIST and DELETE of objects of several
//! sizes, by one and by many clients, against several S3 endpoints in one
//! run (Strata's gateway next to another S3 server on the same machine).
//! Within each round the endpoints take turns on every cell, so a noisy
//! machine slows them alike; the report keeps each figure's median over
//! the rounds and its ratio to the first endpoint.
//!
//! Requests are signed in the URL (SigV4 query presigning, by `rusty-s3`)
//! and sent over plain HTTP/1.1 with keep-alive, so one client speaks to
//! any S3 server the same way. Every GET checks the bytes it got.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::{Deserialize, Serialize};
use strata_common::size::format_size;

use crate::median;

/// How long a signed URL stays valid: longer than any one request.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// A request taking longer than this fails the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// An S3 server to measure: `LABEL=URL,ACCESS_KEY,SECRET_KEY`. The secret
/// is never written into the report.
#[derive(Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub label: String,
    pub url: String,
    pub access_key: String,
    #[serde(skip)]
    secret_key: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={} (key {})", self.label, self.url, self.access_key)
    }
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Endpoint, String> {
        let bad = || format!("an endpoint is LABEL=URL,ACCESS_KEY,SECRET_KEY, not {:?}", text.split(',').next());
        let (label, rest) = text.split_once('=').ok_or_else(bad)?;
        let mut parts = rest.splitn(3, ',');
        let (Some(url), Some(key), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if label.is_empty() || url.is_empty() || key.is_empty() || secret.is_empty() {
            return Err(bad());
        }
        if !url.starts_with("http://") {
            return Err(format!("endpoint {label}: only http:// URLs are measured, not {url}"));
        }
        Ok(Endpoint { label: label.into(), url: url.into(), access_key: key.into(), secret_key: secret.into() })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3Config {
    /// Object sizes, one cell each.
    pub sizes: Vec<u64>,
    /// Concurrent clients, one cell each.
    pub clients: Vec<usize>,
    pub rounds: usize,
    /// Bytes each cell writes: objects = this / size, at least one per
    /// client and at most `max_objects`.
    pub bytes_per_cell: u64,
    pub max_objects: usize,
    /// Created on every endpoint if missing; objects go under a prefix per cell and are deleted.
    pub bucket: String,
    pub region: String,
}

impl S3Config {
    fn objects(&self, size: u64, clients: usize) -> usize {
        let by_bytes = (self.bytes_per_cell / size.max(1)) as usize;
        by_bytes.min(self.max_objects).max(clients).max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Put,
    Head,
    Get,
    List,
    Delete,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Put, Op::Head, Op::Get, Op::List, Op::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Head => "head",
            Op::Get => "get",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }

    /// LIST counts keys listed (pages hold up to 1,000), the others requests.
    pub fn unit(self) -> &'static str {
        match self {
            Op::List => "keys/s",
            _ => "ops/s",
        }
    }
}

/// One figure: an operation on objects of one size by some clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3Row {
    pub op: Op,
    pub size: u64,
    pub clients: usize,
    pub objects: usize,
    /// Per endpoint, in the order given: the median over rounds.
    pub medians: Vec<f64>,
    /// Per endpoint: MiB/s for PUT and GET (median), else 0.
    pub mib_per_sec: Vec<f64>,
}

impl S3Row {
    /// Median of endpoint `i` over the first endpoint's.
    pub fn ratio(&self, i: usize) -> f64 {
        if self.medians[0] > 0.0 { self.medians[i] / self.medians[0] } else { 0.0 }
    }

    pub fn name(&self) -> String {
        format!("{} {} ×{}", self.op.name(), format_size(self.size), self.clients)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3Report {
    pub endpoints: Vec<Endpoint>,
    pub config: S3Config,
    pub rows: Vec<S3Row>,
}

type Http = Client<HttpConnector, Full<Bytes>>;

/// One endpoint's bucket, credentials and connection pool.
struct Target {
    bucket: Bucket,
    credentials: Credentials,
    http: Http,
}

impl Target {
    fn new(endpoint: &Endpoint, config: &S3Config) -> anyhow::Result<Target> {
        let url = endpoint.url.parse().with_context(|| format!("endpoint {}: bad URL", endpoint.label))?;
        let bucket = Bucket::new(url, UrlStyle::Path, config.bucket.clone(), config.region.clone())
            .with_context(|| format!("endpoint {}: bucket {}", endpoint.label, config.bucket))?;
        let credentials = Credentials::new(endpoint.access_key.clone(), endpoint.secret_key.clone());
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(connector);
        Ok(Target { bucket, credentials, http })
    }

    /// Sends a signed request; returns the status and the whole body.
    async fn call(&self, method: Method, url: url::Url, body: Bytes) -> anyhow::Result<(StatusCode, Bytes)> {
        let request = hyper::Request::builder().method(method.clone()).uri(url.as_str()).body(Full::new(body))?;
        let exchange = async {
            let response = self.http.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{method} {}: no answer within {REQUEST_TIMEOUT:?}", url.path()))?
            .with_context(|| format!("{method} {}", url.path()))
    }

    async fn expect(&self, method: Method, url: url::Url, body: Bytes, ok: &[StatusCode]) -> anyhow::Result<Bytes> {
        let path = url.path().to_string();
        let (status, body) = self.call(method.clone(), url, body).await?;
        if !ok.contains(&status) {
            bail!("{method} {path}: {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        Ok(body)
    }

    async fn ensure_bucket(&self) -> anyhow::Result<()> {
        let url = self.bucket.create_bucket(&self.credentials).sign(SIGNED_FOR);
        // 409: BucketAlreadyOwnedByYou (or exists): either way it is there to use.
        self.expect(Method::PUT, url, Bytes::new(), &[StatusCode::OK, StatusCode::CONFLICT]).await.map(drop)
    }

    async fn put(&self, key: &str, body: Bytes) -> anyhow::Result<()> {
        let url = self.bucket.put_object(Some(&self.credentials), key).sign(SIGNED_FOR);
        self.expect(Method::PUT, url, body, &[StatusCode::OK]).await.map(drop)
    }

    async fn head(&self, key: &str) -> anyhow::Result<()> {
        let url = self.bucket.head_object(Some(&self.credentials), key).sign(SIGNED_FOR);
        self.expect(Method::HEAD, url, Bytes::new(), &[StatusCode::OK]).await.map(drop)
    }

    async fn get(&self, key: &str) -> anyhow::Result<Bytes> {
        let url = self.bucket.get_object(Some(&self.credentials), key).sign(SIGNED_FOR);
        self.expect(Method::GET, url, Bytes::new(), &[StatusCode::OK]).await
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let url = self.bucket.delete_object(Some(&self.credentials), key).sign(SIGNED_FOR);
        self.expect(Method::DELETE, url, Bytes::new(), &[StatusCode::NO_CONTENT, StatusCode::OK]).await.map(drop)
    }

    /// Lists every key under `prefix`, page by page; returns how many.
    async fn list(&self, prefix: &str) -> anyhow::Result<usize> {
        let mut keys = 0;
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix);
            action.with_max_keys(1000);
            if let Some(token) = &token {
                action.with_continuation_token(token.clone());
            }
            let body = self.expect(Method::GET, action.sign(SIGNED_FOR), Bytes::new(), &[StatusCode::OK]).await?;
            let page =
                ListObjectsV2::parse_response(std::str::from_utf8(&body).context("a listing that is not UTF-8")?)
                    .context("decoding a listing")?;
            keys += page.contents.len();
            match page.next_continuation_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(keys),
            }
        }
    }
}

/// The bytes of object `i` of a cell: distinct per object, so a GET that
/// returns another object's bytes is caught.
fn content(size: u64, i: usize) -> Bytes {
    let mut data = vec![0u8; size as usize];
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    Bytes::from(data)
}

/// Runs `work(i)` for every i in 0..n on `clients` tasks; returns the seconds taken.
async fn timed<F, Fut>(n: usize, clients: usize, work: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (work, next) = (work.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                work(i).await?;
            }
        }));
    }
    for task in tasks {
        task.await.context("a benchmark client panicked")??;
    }
    Ok(started.elapsed().as_secs_f64().max(1e-9))
}

/// One cell on one endpoint: rates per operation, in [`Op::ALL`]'s order.
async fn run_cell(
    target: &Arc<Target>,
    objects: &Arc<Vec<Bytes>>,
    prefix: &str,
    clients: usize,
) -> anyhow::Result<[f64; 5]> {
    let n = objects.len();
    let key = {
        let prefix = prefix.to_string();
        move |i: usize| format!("{prefix}{i:06}")
    };
    let (t, o, k) = (target.clone(), objects.clone(), key.clone());
    let put = timed(n, clients, move |i| {
        let (t, body, key) = (t.clone(), o[i].clone(), k(i));
        async move { t.put(&key, body).await }
    })
    .await?;
    let (t, k) = (target.clone(), key.clone());
    let head = timed(n, clients, move |i| {
        let (t, key) = (t.clone(), k(i));
        async move { t.head(&key).await }
    })
    .await?;
    let (t, o, k) = (target.clone(), objects.clone(), key.clone());
    let get = timed(n, clients, move |i| {
        let (t, expected, key) = (t.clone(), o[i].clone(), k(i));
        async move {
            let got = t.get(&key).await?;
            ensure!(got == expected, "GET {key}: {} bytes that are not the object's {}", got.len(), expected.len());
            Ok(())
        }
    })
    .await?;
    // Each client lists the whole prefix: enough listings for a second's work at least.
    let listings = clients * (1 + 2000 / n.max(1)).min(20);
    let (t, p) = (target.clone(), prefix.to_string());
    let list = timed(listings, clients, move |_| {
        let (t, p) = (t.clone(), p.clone());
        async move {
            let keys = t.list(&p).await?;
            ensure!(keys == n, "listing {p}: {keys} keys, not {n}");
            Ok(())
        }
    })
    .await?;
    let (t, k) = (target.clone(), key);
    let delete = timed(n, clients, move |i| {
        let (t, key) = (t.clone(), k(i));
        async move { t.delete(&key).await }
    })
    .await?;
    let rate = |secs: f64| n as f64 / secs;
    Ok([rate(put), rate(head), rate(get), (listings * n) as f64 / list, rate(delete)])
}

/// Every cell on every endpoint for `config.rounds` rounds.
pub async fn run(endpoints: Vec<Endpoint>, config: S3Config) -> anyhow::Result<S3Report> {
    ensure!(!endpoints.is_empty(), "no endpoint to measure");
    let targets =
        endpoints.iter().map(|e| Target::new(e, &config).map(Arc::new)).collect::<anyhow::Result<Vec<_>>>()?;
    for (endpoint, target) in endpoints.iter().zip(&targets) {
        target.ensure_bucket().await.with_context(|| format!("endpoint {}: making the bucket", endpoint.label))?;
    }
    let run_id = format!("{:08x}", rand_u32());
    // rates[cell][endpoint][op] = one value per round
    let cells: Vec<(u64, usize)> =
        config.sizes.iter().flat_map(|s| config.clients.iter().map(move |c| (*s, *c))).collect();
    let mut rates = vec![vec![vec![Vec::new(); Op::ALL.len()]; targets.len()]; cells.len()];
    for round in 0..config.rounds.max(1) {
        for (c, (size, clients)) in cells.iter().enumerate() {
            let n = config.objects(*size, *clients);
            let objects = Arc::new((0..n).map(|i| content(*size, i)).collect::<Vec<_>>());
            for (e, target) in targets.iter().enumerate() {
                let prefix = format!("strata-bench-{run_id}/r{round}-{size}-{clients}/");
                let figures = run_cell(target, &objects, &prefix, *clients).await.with_context(|| {
                    format!("endpoint {}: {} objects of {}", endpoints[e].label, n, format_size(*size))
                })?;
                eprintln!(
                    "round {} {} ×{clients} {}: put {:.0} head {:.0} get {:.0} list {:.0} delete {:.0}",
                    round + 1,
                    format_size(*size),
                    endpoints[e].label,
                    figures[0],
                    figures[1],
                    figures[2],
                    figures[3],
                    figures[4]
                );
                for (o, value) in figures.iter().enumerate() {
                    rates[c][e][o].push(*value);
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (c, (size, clients)) in cells.iter().enumerate() {
        for (o, op) in Op::ALL.iter().enumerate() {
            let medians: Vec<f64> = (0..targets.len()).map(|e| median(&rates[c][e][o])).collect();
            let moves_bytes = matches!(op, Op::Put | Op::Get);
            let mib_per_sec =
                medians.iter().map(|m| if moves_bytes { m * *size as f64 / (1 << 20) as f64 } else { 0.0 }).collect();
            rows.push(S3Row {
                op: *op,
                size: *size,
                clients: *clients,
                objects: config.objects(*size, *clients),
                medians,
                mib_per_sec,
            });
        }
    }
    Ok(S3Report { endpoints, config, rows })
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    nanos.subsec_nanos() ^ std::process::id().rotate_left(16)
}

pub fn print_table(report: &S3Report) {
    let labels: Vec<&str> = report.endpoints.iter().map(|e| e.label.as_str()).collect();
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(0).max(20);
    println!("{}", crate::report::ratio_header(format!("{:<20} {:<7}", "figure", "unit"), &labels, width));
    for row in &report.rows {
        let mut line = format!("{:<20} {:<7}", row.name(), row.op.unit());
        for (median, mib) in row.medians.iter().zip(&row.mib_per_sec) {
            let cell = if *mib > 0.0 { format!("{median:.0} ({mib:.0} MiB/s)") } else { format!("{median:.0}") };
            line.push_str(&format!(" {cell:>width$}"));
        }
        for i in 1..labels.len() {
            line.push_str(&format!(" {:>width$.3}", row.ratio(i)));
        }
        println!("{line}");
    }
    println!(
        "(medians of {} rounds; ratios are each endpoint over {}; every GET checked byte for byte)",
        report.config.rounds, labels[0]
    );
}

pub fn write_json(report: &S3Report, path: &std::path::Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The report as a chart (see [`crate::chart`]).
pub fn plot(report: &S3Report, path: &std::path::Path) -> anyhow::Result<()> {
    let rows: Vec<String> = report.rows.iter().map(|r| format!("{} ({})", r.name(), r.op.unit())).collect();
    let series: Vec<String> = report.endpoints.iter().map(|e| e.label.clone()).collect();
    let ratio = |row: usize, endpoint: usize| report.rows[row].ratio(endpoint);
    let caption = format!("strata bench s3: medians of {} rounds, as a ratio to {}", report.config.rounds, series[0]);
    crate::chart::ratio_chart(&crate::chart::RatioChart { caption, rows: &rows, series: &series, ratio: &ratio }, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_keep_their_secret_out_of_the_report() {
        let e: Endpoint = "strata=http://127.0.0.1:9000,AK,S/K=+".parse().unwrap();
        assert_eq!(
            (e.label.as_str(), e.url.as_str(), e.access_key.as_str()),
            ("strata", "http://127.0.0.1:9000", "AK")
        );
        assert_eq!(e.secret_key, "S/K=+");
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("S/K"), "{json}");
        assert!(!format!("{e:?}").contains("S/K"));
        assert!("strata=http://x,AK".parse::<Endpoint>().is_err());
        assert!("http://x,AK,SK".parse::<Endpoint>().is_err());
        assert!("s=https://x,AK,SK".parse::<Endpoint>().is_err());
    }

    #[test]
    fn cells_hold_one_object_per_client_at_least_and_objects_differ() {
        let config = S3Config {
            sizes: vec![],
            clients: vec![],
            rounds: 1,
            bytes_per_cell: 256 << 20,
            max_objects: 1000,
            bucket: "b".into(),
            region: "us-east-1".into(),
        };
        assert_eq!(config.objects(4 << 10, 1), 1000);
        assert_eq!(config.objects(1 << 20, 16), 256);
        assert_eq!(config.objects(64 << 20, 16), 16);
        assert_eq!(content(4096, 1).len(), 4096);
        assert_ne!(content(4096, 1), content(4096, 2));
        assert_eq!(content(4100, 3), content(4100, 3));
    }
}
