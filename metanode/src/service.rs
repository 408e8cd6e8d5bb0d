//! The metanode's gRPC `Meta` service: reads are served by a partition's
//! leader after ReadIndex; mutations are stamped with the leader's clock and
//! proposed to the partition's Raft group.

use std::sync::Arc;

use prost::Message;
use strata_common::{Result, StrataError};
use strata_proto::meta::{self as pb, meta_command::Op};
use strata_raftstore::{GroupKv, Role};
use tonic::{Request, Response, Status};

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
        };
        targets.into_iter().try_for_each(|ino| check_owned(info, ino))
    }
}

#[tonic::async_trait]
impl pb::meta_server::Meta for MetaService {
    async fn lookup(&self, request: Request<pb::LookupRequest>) -> RpcResult<pb::Inode> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.parent)?;
        Ok(Response::new(read::lookup(&kv, req.parent, &req.name)?))
    }

    async fn get_attr(&self, request: Request<pb::GetAttrRequest>) -> RpcResult<pb::Inode> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.ino)?;
        Ok(Response::new(must_inode(&kv, req.ino)?))
    }

    async fn read_dir(&self, request: Request<pb::ReadDirRequest>) -> RpcResult<pb::ReadDirReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.parent)?;
        let (entries, more) = read::readdir(&kv, req.parent, &req.after, req.limit as usize, req.plus)?;
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
        let info = read::info(&self.host.engine.kv(partition_id))?;
        let command = req.command.as_mut().ok_or_else(|| StrataError::invalid("mutation without a command"))?;
        let op = command.op.as_ref().ok_or_else(|| StrataError::invalid("command without an operation"))?;
        Self::check_targets(&info, op)?;
        command.now_ns = now_ns();
        let outcome = self.host.engine.propose(partition_id, req.encode_to_vec()).await?;
        Ok(Response::new(decode_outcome(&outcome)?))
    }

    async fn get_extents(&self, request: Request<pb::GetExtentsRequest>) -> RpcResult<pb::GetExtentsReply> {
        let req = request.into_inner();
        let (kv, info) = self.reader(req.partition_id).await?;
        check_owned(&info, req.ino)?;
        let inode = must_inode(&kv, req.ino)?;
        let extents = crate::extents::read(&kv, req.ino, req.offset, req.length)?;
        Ok(Response::new(pb::GetExtentsReply { extents, size: inode.size, inode: Some(inode) }))
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
