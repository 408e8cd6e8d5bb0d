//! The metanode's gRPC `Meta` service: reads are served by a partition's
//! leader after ReadIndex; mutations are stamped with the leader's clock and
//! proposed to the partition's Raft group.

use std::sync::Arc;

use prost::Message;
use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::meta::{self as pb, meta_command::Op};
use strata_raftstore::{GroupKv, Role};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::host::{PartitionHost, now_ns};
use crate::machine::decode_outcome;
use crate::read::{self, check_owned};
use crate::txn::must_inode;

type RpcResult<T> = std::result::Result<Response<T>, Status>;

pub struct MetaService {
    host: Arc<PartitionHost>,
}

impl MetaService {
    pub fn new(host: Arc<PartitionHost>) -> Self {
        MetaService { host }
    }

    fn ensure_leader(&self, partition_id: u64) -> Result<()> {
        self.host.assignment(partition_id)?;
        let engine = &self.host.engine;
        match engine.status(partition_id) {
            Some(s) if s.role == Role::Leader => Ok(()),
            _ => Err(StrataError::not_leader(engine.leader_address(partition_id))),
        }
    }

    /// A linearizable view of the partition, with its range.
    async fn reader(&self, partition_id: u64) -> Result<(GroupKv, pb::InitPartition)> {
        self.ensure_leader(partition_id)?;
        self.host.engine.read_index(partition_id).await?;
        let kv = self.host.engine.kv(partition_id);
        let info = read::info(&kv)?;
        Ok((kv, info))
    }

    /// Registers a grant on `inos` (before the caller reads them) when the
    /// client asked for one and listens for recalls here.
    async fn grant(&self, partition_id: u64, client: u64, inos: &[u64]) -> Option<pb::Grant> {
        if client == 0 {
            return None;
        }
        let term = self.host.engine.status(partition_id).filter(|s| s.role == Role::Leader)?.term;
        if let Err(e) = self.host.record_grant_term(partition_id, term).await {
            tracing::debug!(partition_id, error = %e, "recording the grant term failed; answering without a grant");
            return None;
        }
        self.host.delegations.grant(partition_id, term, client, inos)
    }

    /// The inodes a command names must belong to the partition it was sent to.
    fn check_targets(info: &pb::InitPartition, op: &Op) -> Result<()> {
        let targets: Vec<u64> = match op {
            Op::Init(_) | Op::CloseRange(_) => {
                return Err(StrataError::invalid("partitions are initialised by their metanodes"));
            }
            Op::Create(o) => vec![o.parent],
            Op::Unlink(o) => vec![o.parent],
            Op::Rename(o) => vec![o.src_parent, o.dst_parent],
            Op::Link(o) => vec![o.ino, o.new_parent],
            Op::SetAttr(o) => vec![o.ino],
            Op::SetXattr(o) => vec![o.ino],
            Op::RemoveXattr(o) => vec![o.ino],
            Op::Evict(o) => vec![o.ino],
            Op::Lock(o) => vec![o.ino],
            Op::WriteExtents(o) => vec![o.ino],
            Op::PunchHole(o) => vec![o.ino],
            Op::RenewSession(_) | Op::EndSession(_) | Op::TxFinish(_) | Op::TxResolve(_) => vec![],
            // Each step is checked against the partition when it is prepared.
            Op::TxPrepare(_) => vec![],
            Op::ExpireSessions(_) => {
                return Err(StrataError::invalid("sessions are expired by their partition's leader"));
            }
            Op::DropFreed(_) => {
                return Err(StrataError::invalid("freed blobs are forgotten by their partition's leader"));
            }
            Op::GrantTerm(_) => {
                return Err(StrataError::invalid("delegations are granted by their partition's leader"));
            }
        };
        targets.into_iter().try_for_each(|ino| check_owned(info, ino))
    }
}

#[tonic::async_trait]
impl pb::meta_server::Meta for MetaService {
    async fn lookup(&self, request: Request<pb::LookupRequest>) -> RpcResult<pb::LookupReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.parent)?;
        let grant = self.grant(req.partition_id, req.delegate_to, &[req.parent]).await;
        // The inode found is covered too, registered before it is read.
        let inode = read::lookup_with(&kv, req.parent, &req.name, |ino| {
            if let Some(grant) = &grant {
                self.host.delegations.grant_more(req.partition_id, req.delegate_to, grant, ino);
            }
        })?;
        Ok(Response::new(pb::LookupReply { inode: Some(inode), grant }))
    }

    async fn get_attr(&self, request: Request<pb::GetAttrRequest>) -> RpcResult<pb::GetAttrReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.ino)?;
        let grant = self.grant(req.partition_id, req.delegate_to, &[req.ino]).await;
        Ok(Response::new(pb::GetAttrReply { inode: Some(must_inode(&kv, req.ino)?), grant }))
    }

    async fn read_dir(&self, request: Request<pb::ReadDirRequest>) -> RpcResult<pb::ReadDirReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.parent)?;
        let (entries, more) = read::readdir(&kv, req.parent, &req.after, req.limit as usize, req.plus, &req.xattr)?;
        Ok(Response::new(pb::ReadDirReply { entries, more }))
    }

    async fn read_link(&self, request: Request<pb::GetAttrRequest>) -> RpcResult<pb::ReadLinkReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.ino)?;
        Ok(Response::new(pb::ReadLinkReply { target: read::readlink(&kv, req.ino)? }))
    }

    async fn get_xattr(&self, request: Request<pb::GetXattrRequest>) -> RpcResult<pb::GetXattrReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.ino)?;
        Ok(Response::new(pb::GetXattrReply { value: read::get_xattr(&kv, req.ino, &req.name)? }))
    }

    async fn list_xattr(&self, request: Request<pb::ListXattrRequest>) -> RpcResult<pb::ListXattrReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.ino)?;
        Ok(Response::new(pb::ListXattrReply { names: read::list_xattr(&kv, req.ino)? }))
    }

    async fn mutate(&self, request: Request<pb::MutateRequest>) -> RpcResult<pb::MutateReply> {
        let mut req = request.into_inner();
        let partition_id = req.partition_id;
        self.ensure_leader(partition_id)?;
        let kv = self.host.engine.kv(partition_id);
        let info = read::info(&kv)?;
        let command = req.command.as_mut().ok_or_else(|| StrataError::invalid("mutation without a command"))?;
        let op = command.op.as_ref().ok_or_else(|| StrataError::invalid("command without an operation"))?;
        Self::check_targets(&info, op)?;
        // A quota set a moment ago is in force from its first file on.
        if self.host.quotas.should_ask(partition_id, op)
            && let Err(e) = self.host.refresh_quotas(partition_id).await
        {
            tracing::warn!(partition_id, error = %e, "reading the current quota limits failed");
        }
        if let Err(e) = self.host.quotas.check(partition_id, &kv, op) {
            if e.code != ErrorCode::QuotaExceeded {
                return Err(e.into());
            }
            // The limits may have been raised since the last heartbeat: ask before refusing.
            if let Err(e) = self.host.refresh_quotas(partition_id).await {
                tracing::warn!(partition_id, error = %e, "reading the current quota limits failed");
            }
            self.host.quotas.check(partition_id, &kv, op)?;
        }
        command.now_ns = now_ns();
        let outcome = self.host.engine.propose(partition_id, req.encode_to_vec()).await?;
        let mut reply = decode_outcome(&outcome)?;
        self.host.recall(partition_id, &mut reply, req.client).await;
        Ok(Response::new(reply))
    }

    async fn get_extents(&self, request: Request<pb::GetExtentsRequest>) -> RpcResult<pb::GetExtentsReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.ino)?;
        let grant = self.grant(req.partition_id, req.delegate_to, &[req.ino]).await;
        let inode = must_inode(&kv, req.ino)?;
        let extents = crate::extents::read(&kv, req.ino, req.offset, req.length)?;
        Ok(Response::new(pb::GetExtentsReply { extents, size: inode.size, inode: Some(inode), grant }))
    }

    type DelegationsStream = UnboundedReceiverStream<std::result::Result<pb::DelegationDown, Status>>;

    async fn delegations(&self, request: Request<Streaming<pb::DelegationUp>>) -> RpcResult<Self::DelegationsStream> {
        let mut up = request.into_inner();
        let first = up.message().await?.and_then(|m| m.msg);
        let Some(pb::delegation_up::Msg::Client(client)) =
            first.filter(|m| !matches!(m, pb::delegation_up::Msg::Client(0)))
        else {
            return Err(StrataError::invalid("a delegation stream starts with its client id").into());
        };
        let (stream, receiver) = self.host.delegations.attach(client);
        tracing::debug!(client, "delegation stream opened");
        let host = self.host.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = up.message().await {
                if let Some(pb::delegation_up::Msg::Ack(seq)) = message.msg {
                    host.delegations.ack(client, seq);
                }
            }
            host.delegations.detach(client, stream);
            tracing::debug!(client, "delegation stream closed");
        });
        Ok(Response::new(UnboundedReceiverStream::new(receiver)))
    }

    async fn renew_grants(&self, request: Request<pb::RenewGrantsRequest>) -> RpcResult<pb::RenewGrantsReply> {
        let req = request.into_inner();
        // Leading now, in the term the grants were given: the lease (or a ReadIndex) says so.
        let mut leading = std::collections::HashSet::new();
        for held in &req.held {
            let term = self.host.engine.status(held.partition_id).filter(|s| s.role == Role::Leader).map(|s| s.term);
            if term == Some(held.term) && self.host.engine.read_index(held.partition_id).await.is_ok() {
                leading.insert((held.partition_id, held.term));
            }
        }
        let confirmed = self.host.delegations.renew(req.client, &req.held, |p, t| leading.contains(&(p, t)));
        Ok(Response::new(pb::RenewGrantsReply { confirmed }))
    }

    async fn get_lock(&self, request: Request<pb::GetLockRequest>) -> RpcResult<pb::GetLockReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        let lock = req.lock.ok_or_else(|| StrataError::invalid("F_GETLK without a lock"))?;
        check_owned(&info, lock.ino)?;
        must_inode(&kv, lock.ino)?;
        Ok(Response::new(pb::GetLockReply { conflict: crate::locks::conflict(&kv, &lock)? }))
    }

    async fn scan(&self, request: Request<pb::ScanRequest>) -> RpcResult<pb::ScanReply> {
        let req = request.into_inner();
        let (kv, _) = self.reader(req.partition_id).await?;
        let kind = pb::ScanKind::try_from(req.kind).unwrap_or(pb::ScanKind::Unspecified);
        Ok(Response::new(read::scan(&kv, kind, &req.after, req.limit as usize)?))
    }

    async fn partition_stats(&self, request: Request<pb::PartitionStatsRequest>) -> RpcResult<pb::PartitionStatsReply> {
        let req = request.into_inner();
        let (kv, _) = self.reader(req.partition_id).await?;
        let applied = self.host.engine.status(req.partition_id).map(|s| s.applied).unwrap_or(0);
        Ok(Response::new(read::stats(&kv, applied)?))
    }
}
