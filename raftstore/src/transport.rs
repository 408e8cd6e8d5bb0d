//! How Raft messages travel between nodes. [`Transport`] is what the engine
//! sends through; [`GrpcTransport`] is the real one (one queue and one
//! connection per destination node, messages of all groups batched into one
//! RPC); [`RaftService`] is the receiving end, added to a node's gRPC server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prost_raft::Message as _;
use raft::eraftpb::Message;
use strata_proto::raft as pb;
use strata_proto::raft::raft_transport_client::RaftTransportClient;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::engine::Engine;

/// Largest RPC carrying Raft traffic; a snapshot travels in one message.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 1 << 30;
/// Messages queued per destination before new ones are dropped (Raft resends).
const PEER_QUEUE: usize = 4096;
/// Messages sent in one RPC at most.
const MAX_BATCH: usize = 512;

/// Sends Raft messages to other nodes. Delivery is best effort: Raft copes
/// with loss, reordering across connections, and duplicates.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, to_node: u64, group: u64, message: Message);
}

/// Node id → address, shared by the engine (which learns addresses from
/// membership changes and snapshots) and the transport.
#[derive(Clone, Default)]
pub struct AddressBook(Arc<RwLock<HashMap<u64, String>>>);

impl AddressBook {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&self, node: u64, address: String) {
        self.0.write().unwrap().insert(node, address);
    }
    pub fn get(&self, node: u64) -> Option<String> {
        self.0.read().unwrap().get(&node).cloned()
    }
    pub fn all(&self) -> Vec<(u64, String)> {
        let mut all: Vec<_> = self.0.read().unwrap().iter().map(|(k, v)| (*k, v.clone())).collect();
        all.sort();
        all
    }
}

/// The real transport: tonic over TCP, one sender task per destination node.
pub struct GrpcTransport {
    node_id: u64,
    addresses: AddressBook,
    queues: Mutex<HashMap<u64, mpsc::Sender<pb::RaftMessage>>>,
    runtime: tokio::runtime::Handle,
}

impl GrpcTransport {
    /// Must be called inside a tokio runtime; sender tasks run on it.
    pub fn new(node_id: u64, addresses: AddressBook) -> Arc<Self> {
        Arc::new(GrpcTransport {
            node_id,
            addresses,
            queues: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    fn queue(&self, to: u64) -> mpsc::Sender<pb::RaftMessage> {
        let mut queues = self.queues.lock().unwrap();
        queues
            .entry(to)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                self.runtime.spawn(run_peer_sender(self.node_id, to, self.addresses.clone(), rx));
                tx
            })
            .clone()
    }
}

impl Transport for GrpcTransport {
    fn send(&self, to_node: u64, group: u64, message: Message) {
        let wire = pb::RaftMessage { group_id: group, message: message.encode_to_vec() };
        if self.queue(to_node).try_send(wire).is_err() {
            tracing::debug!(to_node, group_id = group, "raft queue full; message dropped");
        }
    }
}

async fn run_peer_sender(from: u64, to: u64, addresses: AddressBook, mut rx: mpsc::Receiver<pb::RaftMessage>) {
    let mut client: Option<(String, RaftTransportClient<Channel>)> = None;
    while let Some(first) = rx.recv().await {
        let mut messages = vec![first];
        while messages.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => messages.push(m),
                Err(_) => break,
            }
        }
        let Some(address) = addresses.get(to) else {
            tracing::debug!(to_node = to, "no address for raft peer; dropping messages");
            continue;
        };
        if client.as_ref().is_none_or(|(a, _)| *a != address) {
            client = connect(&address).map(|c| (address.clone(), c));
        }
        let Some((_, c)) = client.as_mut() else {
            continue;
        };
        let batch = pb::RaftBatch { from_node: from, messages };
        if let Err(status) = c.send(batch).await {
            tracing::debug!(to_node = to, %address, error = %status.message(), "sending raft batch failed");
            client = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn connect(address: &str) -> Option<RaftTransportClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    Some(
        RaftTransportClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
    )
}

/// The receiving end: decodes each message and hands the batch to the engine.
pub struct RaftService {
    engine: Engine,
}

impl RaftService {
    pub fn new(engine: Engine) -> Self {
        RaftService { engine }
    }

    pub fn into_server(self) -> pb::raft_transport_server::RaftTransportServer<RaftService> {
        pb::raft_transport_server::RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl pb::raft_transport_server::RaftTransport for RaftService {
    async fn send(
        &self,
        request: tonic::Request<pb::RaftBatch>,
    ) -> Result<tonic::Response<pb::RaftBatchAck>, tonic::Status> {
        let batch = request.into_inner();
        let mut decoded = Vec::with_capacity(batch.messages.len());
        for m in batch.messages {
            let msg = Message::decode(m.message.as_slice())
                .map_err(|e| tonic::Status::invalid_argument(format!("decoding raft message: {e}")))?;
            decoded.push((m.group_id, msg));
        }
        self.engine.deliver(decoded);
        Ok(tonic::Response::new(pb::RaftBatchAck {}))
    }
}
