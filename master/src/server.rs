//! Running one master replica: its RocksDB, its raft engine hosting the
//! master group, and a gRPC server carrying both the Master service and Raft
//! traffic on the configured address.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_common::config::{MasterConfig, parse_peers};
use strata_proto::master::master_client::MasterClient;
use strata_proto::master::{ClusterStatusRequest, master_server::MasterServer};
use strata_raftstore::{AddressBook, Engine, GroupSpec, GrpcTransport, RaftService, open_db};

use crate::service::MasterService;
use crate::state::{MASTER_GROUP, MasterMachine};

/// Runs a master until `shutdown` resolves.
pub async fn run(config: MasterConfig, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let db = open_db(&config.data_dir.join("rocksdb"), &config.raft)?;
    let peers = parse_peers(&config.peers)?;
    let addresses = AddressBook::new();
    for (id, address) in &peers {
        addresses.set(*id, address.clone());
    }
    let transport = GrpcTransport::new(config.id, addresses.clone());
    let engine = Engine::start(config.id, db, config.raft.clone(), transport, addresses);
    engine
        .create_group(MASTER_GROUP, GroupSpec { initial_voters: peers.clone() }, Box::new(MasterMachine))
        .await
        .context("starting the master raft group")?;

    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    tracing::info!(master_id = config.id, listen = %config.listen, peers = peers.len(), "master started");

    let console = match &config.console {
        Some(address) => Some(start_console(address, &peers).await?),
        None => None,
    };
    let master_seen = Arc::new(RwLock::new(HashMap::new()));
    let prober = tokio::spawn(probe_masters(engine.clone(), config.id, master_seen.clone()));
    let service = Arc::new(MasterService::new(engine.clone(), config, master_seen));
    let repairs = tokio::spawn(crate::repair::run(service.clone()));
    let sampler = strata_raftstore::telemetry::spawn_sampler(engine.clone());
    let figures = tokio::spawn(crate::telemetry::run(service.clone()));
    let watcher = tokio::spawn(crate::events::watch(service.clone()));
    let result = tonic::transport::Server::builder()
        .layer(strata_common::telemetry::GrpcMetrics)
        .add_service(MasterServer::from_arc(service))
        .add_service(RaftService::new(engine.clone()).into_server())
        .serve_with_incoming_shutdown(strata_common::net::incoming(listener), shutdown)
        .await;
    prober.abort();
    repairs.abort();
    sampler.abort();
    figures.abort();
    watcher.abort();
    if let Some(console) = console {
        console.abort();
    }
    engine.shutdown();
    tracing::info!("master stopped");
    result.context("serving gRPC")
}

/// Serves the web console on `address`, reading the cluster from the masters
/// (whichever leads) like any client.
async fn start_console(address: &str, peers: &[(u64, String)]) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening for the console on {address}"))?;
    let masters = strata_rpc::MasterClient::new(peers.iter().map(|(_, a)| a.clone()).collect())?;
    tracing::info!(console = %address, "serving the web console");
    Ok(tokio::spawn(async move {
        if let Err(e) = crate::console::serve(listener, masters).await {
            tracing::error!(error = %e, "the web console stopped");
        }
    }))
}

/// While leading, asks every other master for its status once a second, so
/// `strata status` can say which masters are alive.
async fn probe_masters(engine: Engine, self_id: u64, seen: Arc<RwLock<HashMap<u64, Instant>>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(status) = engine.status(MASTER_GROUP) else {
            continue;
        };
        if status.leader_id != self_id {
            continue;
        }
        for peer in status.voters.iter().copied().filter(|id| *id != self_id) {
            let Some(address) = engine.addresses().get(peer) else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                if ping(&address).await {
                    seen.write().unwrap().insert(peer, Instant::now());
                }
            });
        }
    }
}

async fn ping(address: &str) -> bool {
    let call = async {
        let mut client = MasterClient::connect(format!("http://{address}")).await.ok()?;
        client.cluster_status(ClusterStatusRequest {}).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_millis(800), call).await, Ok(Some(_)))
}
