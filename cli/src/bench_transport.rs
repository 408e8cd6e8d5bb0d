//! `strata bench transport`: the bulk data path over gRPC (tonic, the `Data`
//! service) against the length-framed TCP protocol the data path uses, both
//! served on one port in front of the same real blob store on loopback, next
//! to calling the store directly. Rounds
//! alternate the three so that a noisy machine treats them alike; medians
//! are reported.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use strata_bench::data::ThroughputRow;
use strata_common::config::{RaftConfig, StoreConfig};
use strata_datanode::service::DataService;
use strata_datanode::store::Store;
use strata_datanode::store::record::PieceMeta;
use strata_sdk::data::framed::FramedPool;
use strata_sdk::data::node;
use strata_sdk::rpc::{Channels, WINDOW};

const BLOB: usize = 4 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Grpc,
    Framed,
}

struct Endpoints {
    store: Arc<Store>,
    grpc: String,
    framed: String,
}

/// A store served the way a datanode serves it: both protocols on one port.
async fn start(dir: &std::path::Path) -> anyhow::Result<Endpoints> {
    let config = StoreConfig { scrub_mb_per_sec: 0, ..Default::default() };
    let store = Store::open(dir, &config, &RaftConfig::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let service = Arc::new(DataService::new(store.clone()));
    let router = tonic::transport::Server::builder()
        .layer(strata_common::telemetry::GrpcMetrics)
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW * 4)
        .add_service(strata_datanode::data_server(service.clone()));
    tokio::spawn(strata_node::framed_server::serve_port(listener, service, router, std::future::pending()));
    Ok(Endpoints { store, grpc: address.clone(), framed: address })
}

/// Writes then reads `blobs` 4 MiB blobs over `path` with `streams` streams; (write, read) MiB/s.
async fn pass(
    e: &Arc<Endpoints>,
    path: Path,
    partition: u64,
    streams: usize,
    blobs: usize,
) -> anyhow::Result<(f64, f64)> {
    let payload = Bytes::from((0..BLOB).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>());
    let per_stream = blobs.div_ceil(streams);
    let mut results = Vec::new();
    for phase in ["write", "read"] {
        let started = Instant::now();
        let tasks: Vec<_> = (0..streams)
            .map(|s| {
                let (e, payload) = (e.clone(), payload.clone());
                tokio::spawn(async move {
                    let channels = Channels::default();
                    let pool = FramedPool::default();
                    for i in 0..per_stream {
                        let blob = (s * per_stream + i) as u64;
                        let meta = PieceMeta { blob_size: BLOB as u64, ..Default::default() };
                        match (phase, path) {
                            ("write", Path::Direct) => e.store.write(partition, blob, meta, payload.clone()).await?,
                            ("write", Path::Grpc) => {
                                let data = payload.clone();
                                node::grpc_write_piece(&channels, &e.grpc, partition, blob, meta.into(), data, vec![])
                                    .await?
                            }
                            ("write", Path::Framed) => {
                                pool.write(&e.framed, partition, blob, meta.into(), &payload, vec![]).await?
                            }
                            (_, Path::Direct) => {
                                e.store.read(partition, blob, 0, BLOB as u64).await?;
                            }
                            (_, Path::Grpc) => {
                                node::grpc_read_piece(&channels, &e.grpc, partition, blob, 0, BLOB as u64).await?;
                            }
                            (_, Path::Framed) => {
                                pool.read(&e.framed, partition, blob, 0, BLOB as u64, false).await?;
                            }
                        }
                    }
                    Ok::<(), anyhow::Error>(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        let bytes = (per_stream * streams * BLOB) as f64;
        results.push(bytes / (1 << 20) as f64 / started.elapsed().as_secs_f64());
    }
    Ok((results[0], results[1]))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(blobs: usize, streams: &[usize], rounds: usize) -> anyhow::Result<Vec<ThroughputRow>> {
    let dir = std::env::temp_dir().join(format!("strata-transport-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let e = Arc::new(start(&dir).await?);
    let mut rows = Vec::new();
    let mut partition = 1;
    for &n in streams {
        let mut figures: Vec<Vec<(f64, f64)>> = vec![Vec::new(); 3];
        for _ in 0..rounds.max(1) {
            for (slot, path) in [Path::Direct, Path::Grpc, Path::Framed].into_iter().enumerate() {
                partition += 1;
                figures[slot].push(pass(&e, path, partition, n, blobs).await?);
            }
        }
        let direct_write = median(figures[0].iter().map(|f| f.0).collect());
        let direct_read = median(figures[0].iter().map(|f| f.1).collect());
        for (slot, label) in [(1, "grpc (tonic unary)"), (2, "framed tcp")] {
            let bytes = (blobs * BLOB) as u64;
            let write = median(figures[slot].iter().map(|f| f.0).collect());
            let read = median(figures[slot].iter().map(|f| f.1).collect());
            rows.push(ThroughputRow {
                workload: format!("{label} write"),
                streams: n,
                bytes,
                strata_mib_s: write,
                baseline_mib_s: direct_write,
            });
            rows.push(ThroughputRow {
                workload: format!("{label} read"),
                streams: n,
                bytes,
                strata_mib_s: read,
                baseline_mib_s: direct_read,
            });
        }
    }
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}
