//! `strata s3`: the S3 gateway (crate `strata-s3-gateway`) as a process.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use strata_common::size::parse_size;
use strata_s3_gateway::GatewayConfig;

#[derive(Debug, Args)]
pub struct S3Args {
    /// Address to serve S3 on.
    #[arg(long, env = "STRATA_S3_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Base domain for virtual-host addressing (BUCKET.DOMAIN); path-style always works.
    #[arg(long)]
    pub domain: Option<String>,
    /// Region answered to clients (GetBucketLocation, x-amz-bucket-region).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Redundancy of buckets made by CreateBucket: replica:N or ec:K+M.
    #[arg(long, default_value = "replica:3")]
    pub redundancy: String,
    /// Capacity of buckets made by CreateBucket.
    #[arg(long, default_value = "100GiB")]
    pub bucket_capacity: String,
    /// Memory block cache per open bucket.
    #[arg(long, default_value = "64MiB")]
    pub cache_per_bucket: String,
    /// PEM certificate chain to serve HTTPS with (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Hours after which an unfinished multipart upload is aborted and its parts removed.
    #[arg(long, default_value_t = 7 * 24)]
    pub upload_expiry_hours: u64,
    /// Async worker threads; 0: one per core.
    #[arg(long, env = "STRATA_IO_THREADS", default_value_t = 0)]
    pub io_threads: usize,
}

pub async fn run(masters: Vec<String>, args: S3Args) -> anyhow::Result<()> {
    anyhow::ensure!(!masters.is_empty(), "strata s3 needs --master (or STRATA_MASTER)");
    let config = GatewayConfig {
        masters,
        region: args.region,
        redundancy: args.redundancy.parse().context("--redundancy")?,
        capacity_bytes: parse_size(&args.bucket_capacity).context("--bucket-capacity")?,
        cache_bytes_per_bucket: parse_size(&args.cache_per_bucket).context("--cache-per-bucket")?,
        upload_expiry: Duration::from_secs(args.upload_expiry_hours.saturating_mul(3600)),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(strata_s3_gateway::tls::acceptor(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    println!("s3 gateway listening on {scheme}://{}", listener.local_addr()?);
    let options = strata_s3_gateway::ServeOptions { domain: args.domain, tls };
    strata_s3_gateway::serve(listener, config, options, crate::serve::shutdown_signal()).await
}
