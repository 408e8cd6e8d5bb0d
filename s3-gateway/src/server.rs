//! The HTTP side: a TCP listener, HTTP/1.1 with keep-alive (and HTTP/2),
//! s3s's service for routing, XML and SigV4, and the background sweep of
//! abandoned uploads' temporaries.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::host::SingleDomain;
use s3s::service::S3ServiceBuilder;
use strata_sdk::MasterClient;
use tokio::net::TcpListener;

use crate::auth::{Auth, MasterKeys};
use crate::gateway::{Gateway, GatewayConfig};

/// A client that has not sent a request's headers within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often temporaries of dead uploads are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How the listener is served besides the gateway's configuration.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Base domain for virtual-host addressing (`BUCKET.DOMAIN`).
    pub domain: Option<String>,
    /// HTTPS instead of HTTP ([`crate::tls::acceptor`]).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serves S3 on `listener` until `shutdown` resolves; connections still open
/// then get a moment to finish their requests.
pub async fn serve(
    listener: TcpListener,
    config: GatewayConfig,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let master = MasterClient::new(config.masters.clone())?;
    let keys = MasterKeys::new(MasterClient::new(config.masters.clone())?);
    let gateway = Gateway::new(config, master, keys.clone());
    let mut builder = S3ServiceBuilder::new(gateway.clone());
    builder.set_auth(Auth(keys));
    builder.set_access(crate::stats::NameOps);
    if let Some(domain) = &options.domain {
        let host = SingleDomain::new(domain).map_err(|e| anyhow::anyhow!("--domain {domain:?}: {e}"))?;
        builder.set_host(host);
    }
    let counters = std::sync::Arc::new(crate::access_log::Counters::default());
    let stats = std::sync::Arc::new(crate::stats::Stats::default());
    let service = crate::access_log::Logged::new(builder.build(), counters.clone(), stats.clone());
    let sweeper = tokio::spawn(sweep(gateway.clone()));

    let mut http = ConnBuilder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(address = %listener.local_addr()?, tls = options.tls.is_some(), "s3 gateway listening");
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let _ = stream.set_nodelay(true);
        let (http, service, watcher) = (http.clone(), service.clone(), graceful.watcher());
        let tls = options.tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => watcher.watch(http.serve_connection(TokioIo::new(stream), service).into_owned()).await,
                Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        watcher.watch(http.serve_connection(TokioIo::new(stream), service).into_owned()).await
                    }
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "a tls handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "a tls handshake timed out"),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "an s3 connection ended with an error");
            }
        });
    }
    sweeper.abort();
    let served = counters.requests.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(served, "s3 gateway stopping");
    for (op, figures) in stats.snapshot() {
        tracing::info!(
            op = %op,
            requests = figures.requests,
            client_errors = figures.client_errors,
            server_errors = figures.server_errors,
            mean_ms = figures.total_us as f64 / figures.requests.max(1) as f64 / 1000.0,
            p50_under_ms = figures.quantile_ms(0.5),
            p99_under_ms = figures.quantile_ms(0.99),
            "s3 operation summary"
        );
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("s3 connections still open at shutdown were cut"),
    }
    Ok(())
}

/// Removes temporaries of uploads whose writer died and multipart uploads
/// past the expiry, in every open bucket.
async fn sweep(gateway: Gateway) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        for (name, bucket) in gateway.open_buckets() {
            match bucket.volume.reclaim_temporaries(strata_sdk::fs::TEMP_GRACE).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(bucket = name, removed, "abandoned upload temporaries reclaimed"),
                Err(e) => tracing::warn!(bucket = name, error = %e, "reclaiming upload temporaries failed"),
            }
            match crate::multipart::expire(&bucket.volume, gateway.config.upload_expiry).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(bucket = name, removed, "expired multipart uploads aborted"),
                Err(e) => tracing::warn!(bucket = name, error = %e, "aborting expired multipart uploads failed"),
            }
        }
    }
}
