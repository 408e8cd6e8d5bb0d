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
        upload_expiry: Duration::from_secs(7 * 24 * 3600),
    };
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    println!("s3 gateway listening on http://{}", listener.local_addr()?);
    strata_s3_gateway::serve(listener, config, args.domain, crate::serve::shutdown_signal()).await
}
