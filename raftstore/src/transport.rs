//! How Raft messages travel between nodes. [`Transport`] is what the engine
//! sends through; [`GrpcTransport`] is the real one (one queue and one
//! connection per destination node, messages of all groups batched into one
//! RPC); [`RaftService`] is the receiving end, added to a node's gRPC server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prost_raft::Message as _;
use raft::eraftpb::{Message, MessageType};
use strata_proto::raft as pb;
use strata_proto::raft::raft_transport_client::RaftTransportClient;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::engine::Engine;
use crate::snapfile::Descriptor;

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
        if let Some(descriptor) = snapshot_file(&message) {
            let (from, addresses) = (self.node_id, self.addresses.clone());
            self.runtime.spawn(async move {
                let Some(address) = addresses.get(to_node) else { return };
                if let Err(e) = upload_snapshot(from, &address, group, message, &descriptor).await {
                    // The follower asks again; the leader then sends another.
                    tracing::warn!(to_node, group_id = group, error = %e, "sending a snapshot failed");
                }
            });
            return;
        }
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

/// The snapshot file a MsgSnapshot names, if it is one.
fn snapshot_file(message: &Message) -> Option<Descriptor> {
    if message.msg_type != MessageType::MsgSnapshot as i32 {
        return None;
    }
    Descriptor::decode(&message.snapshot.as_ref()?.data)
}

/// Bytes of a snapshot file per chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Streams a snapshot message and its file to `address`.
async fn upload_snapshot(
    from: u64,
    address: &str,
    group: u64,
    message: Message,
    descriptor: &Descriptor,
) -> Result<(), String> {
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;
    let mut client = connect_with(address, SNAPSHOT_TIMEOUT).ok_or_else(|| format!("bad address {address}"))?;
    let file = tokio::fs::File::open(&descriptor.path).await.map_err(|e| format!("opening the file: {e}"))?;
    let first =
        pb::SnapshotChunk { from_node: from, group_id: group, message: message.encode_to_vec(), data: Vec::new() };
    // A read error ends the stream early: the receiver sees a short file and refuses it.
    let rest = futures::stream::unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; SNAPSHOT_CHUNK];
        match file.read(&mut buffer).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((pb::SnapshotChunk { data: buffer, ..Default::default() }, file))
            }
        }
    });
    let chunks = futures::stream::once(async move { first }).chain(rest);
    let started = std::time::Instant::now();
    client.send_snapshot(chunks).await.map_err(|s| s.message().to_string())?;
    tracing::info!(group_id = group, %address, bytes = descriptor.size, ms = started.elapsed().as_millis() as u64, "snapshot sent");
    Ok(())
}

/// A whole snapshot transfer may take this long.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3600);

fn connect(address: &str) -> Option<RaftTransportClient<Channel>> {
    connect_with(address, Duration::from_secs(10))
}

fn connect_with(address: &str, timeout: Duration) -> Option<RaftTransportClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(timeout)
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

    /// Stores the snapshot file that follows the message, checks it whole
    /// against the message's descriptor, and hands the message to the
    /// engine pointing at the stored copy.
    async fn send_snapshot(
        &self,
        request: tonic::Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<tonic::Response<pb::RaftBatchAck>, tonic::Status> {
        use tokio::io::AsyncWriteExt;
        let mut chunks = request.into_inner();
        let first = chunks.message().await?.ok_or_else(|| tonic::Status::invalid_argument("no snapshot message"))?;
        let mut message = Message::decode(first.message.as_slice())
            .map_err(|e| tonic::Status::invalid_argument(format!("decoding the snapshot message: {e}")))?;
        let descriptor =
            snapshot_file(&message).ok_or_else(|| tonic::Status::invalid_argument("not a snapshot file message"))?;
        let snapshots = self.engine.snapshots();
        let path = snapshots.receive_path(first.group_id).map_err(|e| tonic::Status::internal(e.message))?;
        let failed = |what: String| {
            let _ = std::fs::remove_file(&path);
            tonic::Status::internal(what)
        };
        let mut file = tokio::fs::File::create(&path).await.map_err(|e| failed(format!("creating the file: {e}")))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut size = 0u64;
        let mut data = first.data;
        loop {
            hasher.update(&data);
            size += data.len() as u64;
            if size > descriptor.size {
                return Err(failed(format!("more than the {} bytes announced", descriptor.size)));
            }
            file.write_all(&data).await.map_err(|e| failed(format!("writing the file: {e}")))?;
            match chunks.message().await {
                Ok(Some(chunk)) => data = chunk.data,
                Ok(None) => break,
                Err(status) => return Err(failed(format!("receiving: {}", status.message()))),
            }
        }
        file.flush().await.map_err(|e| failed(format!("writing the file: {e}")))?;
        if size != descriptor.size || hasher.finalize() != descriptor.crc {
            return Err(failed(format!("the snapshot arrived damaged ({size} of {} bytes)", descriptor.size)));
        }
        let local = Descriptor { path, ..descriptor };
        if let Some(snapshot) = message.snapshot.as_mut() {
            snapshot.data = local.encode();
        }
        tracing::info!(group_id = first.group_id, from_node = first.from_node, bytes = size, "snapshot received");
        self.engine.deliver(vec![(first.group_id, message)]);
        Ok(tonic::Response::new(pb::RaftBatchAck {}))
    }
}
