//! The namespace client of one volume: routes each operation by inode to its
//! meta partition, finds and caches each partition's leader, retries on
//! not-leader, unreachable members and timeouts, and gives every logical
//! operation one request id that its retries reuse, so the partition applies
//! it once however often it is sent.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use strata_common::{ErrorCode, Result, StrataError};
use strata_proto::master as master_pb;
use strata_proto::meta::meta_client::MetaClient as GrpcClient;
use strata_proto::meta::{self as pb, meta_command::Op};
use tonic::transport::Channel;

use crate::MasterClient;
use crate::delegation::Delegations;
use crate::meta_tx::is_cross_partition;
use crate::rpc::{Channels, LeaderRouter};
use crate::types::{Attr, DirEntry, Extent, HeldLock, Lock, SetAttr};

/// How long one operation keeps retrying before the caller sees the error.
pub const META_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) struct Partition {
    pub(crate) id: u64,
    pub(crate) inode_start: u64,
    pub(crate) inode_end: Option<u64>,
    pub(crate) router: Arc<LeaderRouter>,
}

/// A granted read's answer may be kept in `cache` under this ticket and grant.
struct Granted<'a> {
    cache: &'a Delegations,
    ticket: crate::delegation::Ticket,
    partition: u64,
    grant: pb::Grant,
}

pub struct MetaClient {
    volume: String,
    /// Where to ask for a fresh view of the volume (after a split).
    masters: Vec<String>,
    /// The volume's partitions by inode range; replaced whole on refresh.
    partitions: RwLock<Vec<Arc<Partition>>>,
    channels: Channels,
    deadline: Duration,
    /// Round-robin cursor placing new directories over the partitions.
    pub(crate) next_dir_partition: std::sync::atomic::AtomicUsize,
    /// Grants held, once [`MetaClient::enable_delegations`] ran.
    delegations: OnceLock<Arc<Delegations>>,
    /// The volume's trash policy and directory ([`crate::trash`]).
    pub(crate) trash: crate::trash::TrashState,
}

/// What statfs(2) reports for a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub capacity_bytes: u64,
    /// Sum of the sizes of the volume's files (sparse holes included, as `st_size` counts them).
    pub used_bytes: u64,
    pub files: u64,
    /// The most inodes there may be (a directory quota's limit), if limited.
    pub max_files: Option<u64>,
}

pub(crate) fn request_id() -> u64 {
    // Random and never 0 (0 means "no deduplication").
    rand::random::<u64>() | 1
}

impl MetaClient {
    /// Opens the namespace of `volume`, as the master describes it.
    pub async fn open(master: &MasterClient, volume: &str) -> Result<MetaClient> {
        let view = master.get_volume(volume).await?;
        let client = MetaClient {
            volume: view.name.clone(),
            masters: master.masters().to_vec(),
            partitions: RwLock::new(Vec::new()),
            channels: Channels::default(),
            deadline: META_DEADLINE,
            next_dir_partition: std::sync::atomic::AtomicUsize::new(0),
            delegations: OnceLock::new(),
            trash: Default::default(),
        };
        client.apply_view(&view)?;
        Ok(client)
    }

    /// Replaces the partition list with `view`'s, keeping the leader caches
    /// of partitions it already knew.
    fn apply_view(&self, view: &master_pb::Volume) -> Result<()> {
        let old = self.partitions.read().unwrap().clone();
        let mut partitions: Vec<Arc<Partition>> = view
            .meta_partitions
            .iter()
            .map(|p| {
                let router = old.iter().find(|o| o.id == p.id).map(|o| o.router.clone()).unwrap_or_else(|| {
                    Arc::new(LeaderRouter::new(p.members.iter().map(|m| m.address.clone()).collect()))
                });
                Arc::new(Partition { id: p.id, inode_start: p.inode_start, inode_end: p.inode_end, router })
            })
            .collect();
        if partitions.is_empty() {
            return Err(StrataError::internal(format!("volume {} has no meta partitions", view.name)));
        }
        partitions.sort_by_key(|p| p.inode_start);
        *self.partitions.write().unwrap() = partitions;
        self.trash.set_retention(view.trash_secs);
        Ok(())
    }

    /// A client of the volume's masters.
    pub(crate) fn master(&self) -> Result<MasterClient> {
        MasterClient::new(self.masters.clone())
    }

    /// Asks the master for the volume's partitions again (a split added one).
    pub async fn refresh(&self) -> Result<()> {
        let master = MasterClient::new(self.masters.clone())?;
        let view = master.get_volume(&self.volume).await?;
        self.apply_view(&view)
    }

    /// From now on, ask the metanodes for delegations and answer lookups,
    /// attributes and first extents from them while they hold (see
    /// [`crate::delegation`]). Needs a tokio runtime.
    pub fn enable_delegations(&self) {
        let mut metanodes: Vec<String> = self.partitions().iter().flat_map(|p| p.router.members().to_vec()).collect();
        metanodes.sort();
        metanodes.dedup();
        let _ = self.delegations.set(Delegations::start(metanodes));
    }

    /// Reads answered from delegations so far (0 without them).
    pub fn delegation_hits(&self) -> u64 {
        self.delegations.get().map(|d| d.hits()).unwrap_or(0)
    }

    /// Sends a read that may come back with a delegation grant: `send` gets
    /// the client, the partition id and the id to delegate to (0: none);
    /// `grant_of` finds the grant in the reply. Returns the reply and, when
    /// granted, where its answer may be kept.
    async fn granting_read<T, F, Fut>(
        &self,
        ino: u64,
        what: &str,
        grant_of: fn(&T) -> Option<&pb::Grant>,
        mut send: F,
    ) -> Result<(T, Option<Granted<'_>>)>
    where
        F: FnMut(GrpcClient<Channel>, u64, u64) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let cache = self.delegations.get().map(|d| (d.as_ref(), d.ticket()));
        let delegate_to = cache.as_ref().map_or(0, |(d, _)| d.client);
        let answered = AtomicU64::new(0);
        let reply = self
            .call(ino, what, |client, partition_id| {
                answered.store(partition_id, Ordering::Relaxed);
                send(client, partition_id, delegate_to)
            })
            .await?;
        let granted = match (cache, grant_of(&reply)) {
            (Some((cache, ticket)), Some(grant)) => {
                let partition = answered.load(Ordering::Relaxed);
                // The grant holds only while the node that answered keeps its stream up.
                let ticket = ticket.answered_by(self.partition_leader(partition));
                Some(Granted { cache, ticket, partition, grant: *grant })
            }
            _ => None,
        };
        Ok((reply, granted))
    }

    pub fn volume(&self) -> &str {
        &self.volume
    }

    /// A snapshot of the partition list.
    pub(crate) fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().unwrap().clone()
    }

    pub(crate) fn partition_of(&self, ino: u64) -> Result<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap()
            .iter()
            .find(|p| ino >= p.inode_start && p.inode_end.is_none_or(|end| ino < end))
            .cloned()
            .ok_or_else(|| StrataError::not_found(format!("inode {ino} is in no meta partition of {}", self.volume)))
    }

    /// The partition of `ino`, asking the master once if no known partition holds it.
    async fn route(&self, ino: u64) -> Result<Arc<Partition>> {
        match self.partition_of(ino) {
            Ok(p) => Ok(p),
            Err(_) => {
                self.refresh().await?;
                self.partition_of(ino)
            }
        }
    }

    /// The partition id holding `ino` (for tests and tools).
    pub fn partition_id_of(&self, ino: u64) -> Result<u64> {
        Ok(self.partition_of(ino)?.id)
    }

    /// The address that last answered for a partition (its leader, as far as this client knows).
    pub fn partition_leader(&self, partition_id: u64) -> Option<String> {
        self.partitions().iter().find(|p| p.id == partition_id).and_then(|p| p.router.leader())
    }

    /// The member addresses of a partition.
    pub fn partition_members(&self, partition_id: u64) -> Option<Vec<String>> {
        self.partitions().iter().find(|p| p.id == partition_id).map(|p| p.router.members().to_vec())
    }

    async fn call<T, F, Fut>(&self, ino: u64, what: &str, call: F) -> Result<T>
    where
        F: FnMut(GrpcClient<Channel>, u64) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_within(ino, self.deadline, what, call).await
    }

    async fn call_within<T, F, Fut>(&self, ino: u64, deadline: Duration, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut(GrpcClient<Channel>, u64) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let partition = self.route(ino).await?;
        let id = partition.id;
        let first =
            partition.router.call(&self.channels, deadline, what, |channel| call(GrpcClient::new(channel), id)).await;
        match first {
            // The view predates a split: learn the new ranges and send it where it belongs now.
            Err(e) if e.code == ErrorCode::WrongPartition => {
                self.refresh().await?;
                let partition = self.partition_of(ino)?;
                let id = partition.id;
                partition
                    .router
                    .call(&self.channels, deadline, what, |channel| call(GrpcClient::new(channel), id))
                    .await
            }
            other => other,
        }
    }

    async fn mutate(&self, ino: u64, what: &str, op: Op) -> Result<Option<pb::Inode>> {
        Ok(self.mutate_reply(ino, self.deadline, what, op).await?.inode)
    }

    /// Sends one command to the partition of `ino`, retrying until `deadline`
    /// with one request id (the partition applies it once).
    pub(crate) async fn mutate_reply(
        &self,
        ino: u64,
        deadline: Duration,
        what: &str,
        op: Op,
    ) -> Result<pb::MutateReply> {
        let request_id = request_id();
        let client = self.delegations.get().map(|d| d.client).unwrap_or(0);
        let answered = AtomicU64::new(0);
        let reply = self
            .call_within(ino, deadline, what, |mut c, partition_id| {
                answered.store(partition_id, Ordering::Relaxed);
                let request = pb::MutateRequest {
                    partition_id,
                    request_id,
                    command: Some(pb::MetaCommand { now_ns: 0, op: Some(op.clone()) }),
                    client,
                };
                async move { c.mutate(request).await }
            })
            .await;
        if let Some(d) = self.delegations.get() {
            match &reply {
                Ok(r) => d.changed(answered.load(Ordering::Relaxed), r.recalled.as_ref(), &r.touched),
                // It may have applied: what it changed is unknown.
                Err(e) if e.is_retryable() || e.code == ErrorCode::Internal => d.forget_all(),
                Err(_) => {}
            }
        }
        reply
    }

    pub(crate) async fn mutate_inode(&self, ino: u64, what: &str, op: Op) -> Result<Attr> {
        let inode = self
            .mutate(ino, what, op)
            .await?
            .ok_or_else(|| StrataError::internal(format!("{what}: no inode in the reply")))?;
        Attr::try_from(inode).map_err(|e| e.context(what))
    }

    pub async fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        if let Some(inode) = self.delegations.get().and_then(|d| d.lookup(parent, name)) {
            return Ok(inode);
        }
        let (reply, granted) = self
            .granting_read(
                parent,
                "looking up a name",
                |r: &pb::LookupReply| r.grant.as_ref(),
                |mut c, partition_id, delegate_to| {
                    let request = pb::LookupRequest { partition_id, parent, name: name.to_vec(), delegate_to };
                    async move { c.lookup(request).await }
                },
            )
            .await?;
        let inode =
            reply.inode.ok_or_else(|| StrataError::internal("a metanode answered a lookup without the inode"))?;
        // A bare answer means the inode lives in another partition.
        if inode.nlink == 0 && self.partition_of(inode.ino)?.id != self.partition_of(parent)?.id {
            if let Some(g) = granted {
                g.cache.keep_entry(&g.ticket, g.partition, &g.grant, parent, name, inode.ino, None);
            }
            return self.getattr(inode.ino).await;
        }
        let attr = Attr::try_from(inode).map_err(|e| e.context("looking up a name"))?;
        if let Some(g) = granted {
            g.cache.keep_entry(&g.ticket, g.partition, &g.grant, parent, name, attr.ino, Some(&attr));
        }
        Ok(attr)
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr> {
        if let Some(inode) = self.delegations.get().and_then(|d| d.attrs(ino)) {
            return Ok(inode);
        }
        let (reply, granted) = self
            .granting_read(
                ino,
                "reading attributes",
                |r: &pb::GetAttrReply| r.grant.as_ref(),
                |mut c, partition_id, delegate_to| async move {
                    c.get_attr(pb::GetAttrRequest { partition_id, ino, delegate_to }).await
                },
            )
            .await?;
        let inode = reply.inode.ok_or_else(|| StrataError::internal("a metanode answered without the inode"))?;
        let attr = Attr::try_from(inode).map_err(|e| e.context("reading attributes"))?;
        if let Some(g) = granted {
            g.cache.keep_attrs(&g.ticket, g.partition, &g.grant, &attr, None);
        }
        Ok(attr)
    }

    /// Creates a regular file, directory, fifo, socket or device node (by `mode`'s type bits).
    pub async fn create(&self, parent: u64, name: &[u8], mode: u32, uid: u32, gid: u32, rdev: u64) -> Result<Attr> {
        let op =
            Op::Create(pb::CreateOp { parent, name: name.to_vec(), mode, uid, gid, rdev, symlink_target: Vec::new() });
        match self.mutate_inode(parent, "creating", op).await {
            // The parent's partition has used its range: the inode goes to the open partition.
            Err(e) if e.code == ErrorCode::NoSpace => {
                self.create_in_open_partition(parent, name, mode, uid, gid, rdev).await
            }
            other => other,
        }
    }

    /// mkdir(2). New directories are spread over the volume's partitions
    /// (round robin); one placed away from its parent is made by a transaction.
    pub async fn mkdir(&self, parent: u64, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        let target = self.place_directory();
        if target == self.partition_of(parent)?.id {
            return self.create(parent, name, libc::S_IFDIR | (mode & 0o7777), uid, gid, 0).await;
        }
        self.mkdir_across(parent, name, mode, uid, gid, target).await
    }

    pub async fn symlink(&self, parent: u64, name: &[u8], target: &[u8], uid: u32, gid: u32) -> Result<Attr> {
        let op = Op::Create(pb::CreateOp {
            parent,
            name: name.to_vec(),
            mode: libc::S_IFLNK | 0o777,
            uid,
            gid,
            rdev: 0,
            symlink_target: target.to_vec(),
        });
        self.mutate_inode(parent, "creating a symlink", op).await
    }

    pub async fn unlink(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let op = Op::Unlink(pb::UnlinkOp { parent, name: name.to_vec(), directory: false, evict: false });
        match self.mutate_inode(parent, "unlinking", op).await {
            Err(e) if is_cross_partition(&e) => self.remove_across(parent, name, false).await,
            other => other,
        }
    }

    /// unlink(2) for a caller holding no handle of the file open: a file that
    /// loses its last link is reclaimed too, in the same commit when its
    /// inode lives with the entry. A directory is `IsDir` and stays.
    pub async fn unlink_and_reclaim(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let op = Op::Unlink(pb::UnlinkOp { parent, name: name.to_vec(), directory: false, evict: true });
        match self.mutate_inode(parent, "unlinking", op).await {
            Err(e) if is_cross_partition(&e) => {
                let removed = self.remove_across(parent, name, false).await?;
                self.reclaim_if_unlinked(&removed).await?;
                Ok(removed)
            }
            other => other,
        }
    }

    async fn reclaim_if_unlinked(&self, inode: &Attr) -> Result<()> {
        if inode.nlink == 0 {
            self.evict(inode.ino).await?;
        }
        Ok(())
    }

    pub async fn rmdir(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let op = Op::Unlink(pb::UnlinkOp { parent, name: name.to_vec(), directory: true, evict: false });
        match self.mutate_inode(parent, "removing a directory", op).await {
            Err(e) if is_cross_partition(&e) => self.remove_across(parent, name, true).await,
            other => other,
        }
    }

    /// rename(2)/renameat2(2); `flags` is 0, RENAME_NOREPLACE (1) or RENAME_EXCHANGE (2).
    /// Atomic also when the names or inodes involved live in different partitions.
    pub async fn rename(
        &self,
        src_parent: u64,
        src_name: &[u8],
        dst_parent: u64,
        dst_name: &[u8],
        flags: u32,
    ) -> Result<Attr> {
        let op = rename_op((src_parent, src_name), (dst_parent, dst_name), flags);
        if let Some(done) = self.rename_in_one_partition(op).await? {
            return Ok(done);
        }
        self.rename_across(src_parent, src_name, dst_parent, dst_name, flags).await
    }

    /// [`rename`](Self::rename) for a caller holding no handle open of a file
    /// it may replace: a replaced file that loses its last link is reclaimed
    /// too, and `xattrs` (name, value) are set on the moved inode first (it
    /// must then be `moved`, its inode); all in the same commit when one
    /// partition holds everything involved. Returns the moved inode.
    pub async fn rename_and_reclaim(
        &self,
        (src_parent, src_name): (u64, &[u8]),
        (dst_parent, dst_name): (u64, &[u8]),
        flags: u32,
        (moved, xattrs): (u64, &XattrPairs<'_>),
    ) -> Result<Attr> {
        let set_xattrs: Vec<pb::SetXattrOp> = xattrs
            .iter()
            .map(|(name, value)| pb::SetXattrOp { ino: moved, name: name.to_vec(), value: value.to_vec(), flags: 0 })
            .collect();
        let op = pb::RenameOp {
            evict_replaced: true,
            set_xattrs: set_xattrs.clone(),
            ..rename_op((src_parent, src_name), (dst_parent, dst_name), flags)
        };
        if let Some(done) = self.rename_in_one_partition(op).await? {
            return Ok(done);
        }
        for set in set_xattrs {
            self.set_xattr(moved, &set.name, &set.value, 0).await?;
        }
        let replaced = match self.lookup(dst_parent, dst_name).await {
            Ok(inode) if flags == 0 && !inode.is_dir() => Some(inode.ino),
            _ => None,
        };
        let moved = self.rename_across(src_parent, src_name, dst_parent, dst_name, flags).await?;
        if let Some(old) = replaced {
            match self.getattr(old).await {
                Ok(inode) => self.reclaim_if_unlinked(&inode).await?,
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// The rename as one command, if both parents share a partition and it
    /// holds the inodes involved; `None` when it takes a transaction.
    async fn rename_in_one_partition(&self, op: pb::RenameOp) -> Result<Option<Attr>> {
        if self.partition_of(op.src_parent)?.id != self.partition_of(op.dst_parent)?.id {
            return Ok(None);
        }
        let src_parent = op.src_parent;
        match self.mutate_inode(src_parent, "renaming", Op::Rename(op)).await {
            Err(e) if is_cross_partition(&e) => Ok(None),
            other => other.map(Some),
        }
    }

    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> Result<Attr> {
        if self.partition_of(ino)?.id != self.partition_of(new_parent)?.id {
            return self.link_across(ino, new_parent, new_name).await;
        }
        let op = Op::Link(pb::LinkOp { ino, new_parent, new_name: new_name.to_vec() });
        self.mutate_inode(new_parent, "linking", op).await
    }

    pub async fn setattr(&self, set: SetAttr) -> Result<Attr> {
        let ino = set.ino;
        self.mutate_inode(ino, "setting attributes", Op::SetAttr(set.into())).await
    }

    /// One page of `parent` after the name `after` (empty: from the start); `true` if more follow.
    pub async fn readdir(&self, parent: u64, after: &[u8], limit: u32, plus: bool) -> Result<(Vec<DirEntry>, bool)> {
        self.readdir_with(parent, after, limit, plus, b"").await
    }

    /// [`readdir`](Self::readdir) returning also the extended attribute
    /// `xattr` of each entry that comes with its attributes (`plus`).
    pub async fn readdir_with(
        &self,
        parent: u64,
        after: &[u8],
        limit: u32,
        plus: bool,
        xattr: &[u8],
    ) -> Result<(Vec<DirEntry>, bool)> {
        let reply = self
            .call(parent, "reading a directory", |mut c, partition_id| {
                let xattr = xattr.to_vec();
                let request = pb::ReadDirRequest { partition_id, parent, after: after.to_vec(), limit, plus, xattr };
                async move { c.read_dir(request).await }
            })
            .await?;
        let entries = reply.entries.into_iter().map(DirEntry::try_from).collect::<Result<Vec<_>>>();
        Ok((entries.map_err(|e| e.context("reading a directory"))?, reply.more))
    }

    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let reply = self
            .call(ino, "reading a symlink", |mut c, partition_id| async move {
                c.read_link(pb::GetAttrRequest { partition_id, ino, delegate_to: 0 }).await
            })
            .await?;
        Ok(reply.target)
    }

    pub async fn set_xattr(&self, ino: u64, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        let op = Op::SetXattr(pb::SetXattrOp { ino, name: name.to_vec(), value: value.to_vec(), flags });
        self.mutate(ino, "setting an xattr", op).await.map(drop)
    }

    pub async fn get_xattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let reply = self
            .call(ino, "reading an xattr", |mut c, partition_id| {
                let request = pb::GetXattrRequest { partition_id, ino, name: name.to_vec() };
                async move { c.get_xattr(request).await }
            })
            .await?;
        Ok(reply.value)
    }

    pub async fn list_xattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        let reply = self
            .call(ino, "listing xattrs", |mut c, partition_id| async move {
                c.list_xattr(pb::ListXattrRequest { partition_id, ino }).await
            })
            .await?;
        Ok(reply.names)
    }

    pub async fn remove_xattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        let op = Op::RemoveXattr(pb::RemoveXattrOp { ino, name: name.to_vec() });
        self.mutate(ino, "removing an xattr", op).await.map(drop)
    }

    /// The last open handle of `ino` closed: lets the partition reclaim an unlinked inode.
    pub async fn evict(&self, ino: u64) -> Result<()> {
        self.mutate(ino, "evicting", Op::Evict(pb::EvictOp { ino })).await.map(drop)
    }

    /// Commits written data to `ino`'s extent map (after the blobs are durable).
    pub async fn write_extents(&self, ino: u64, extents: Vec<Extent>) -> Result<Attr> {
        let extents = extents.into_iter().map(pb::Extent::from).collect();
        self.mutate_inode(ino, "committing extents", Op::WriteExtents(pb::WriteExtentsOp { ino, extents })).await
    }

    /// Makes [offset, offset + length) of `ino` a hole (its blobs are freed once unused).
    pub async fn punch_hole(&self, ino: u64, offset: u64, length: u64) -> Result<Attr> {
        self.mutate_inode(ino, "punching a hole", Op::PunchHole(pb::PunchHoleOp { ino, offset, length })).await
    }

    /// The extents covering [offset, offset + length) of `ino` and its size; gaps are holes.
    pub async fn get_extents(&self, ino: u64, offset: u64, length: u64) -> Result<(Vec<Extent>, u64)> {
        let (extents, inode) = self.get_extents_and_inode(ino, offset, length).await?;
        Ok((extents, inode.size))
    }

    /// The inode and the extents of [offset, offset + length) of it, read together.
    pub async fn get_extents_and_inode(&self, ino: u64, offset: u64, length: u64) -> Result<(Vec<Extent>, Attr)> {
        if let Some(window) = self.delegations.get().and_then(|d| d.window(ino, offset, length)) {
            return Ok(window);
        }
        let (reply, granted) = self
            .granting_read(
                ino,
                "reading extents",
                |r: &pb::GetExtentsReply| r.grant.as_ref(),
                |mut c, partition_id, delegate_to| {
                    let request = pb::GetExtentsRequest { partition_id, ino, offset, length, delegate_to };
                    async move { c.get_extents(request).await }
                },
            )
            .await?;
        let inode =
            reply.inode.ok_or_else(|| StrataError::internal("a metanode answered extents without the inode"))?;
        let attr = Attr::try_from(inode).map_err(|e| e.context("reading extents"))?;
        let extents = reply.extents.into_iter().map(Extent::try_from).collect::<Result<Vec<_>>>();
        let extents = extents.map_err(|e| e.context(&format!("reading the extents of inode {ino}")))?;
        if let Some(g) = granted {
            let window = Some((offset, length, extents.as_slice()));
            g.cache.keep_attrs(&g.ticket, g.partition, &g.grant, &attr, window);
        }
        Ok((extents, attr))
    }

    /// F_SETLK / flock on `lock.ino`: takes, changes or releases a lock;
    /// WouldBlock if another owner holds a conflicting one.
    pub async fn lock(&self, lock: Lock) -> Result<()> {
        let ino = lock.ino;
        self.mutate(ino, "locking", Op::Lock(lock.into())).await.map(drop)
    }

    /// F_GETLK: the lock that would block `lock`, if any.
    pub async fn get_lock(&self, lock: Lock) -> Result<Option<HeldLock>> {
        let ino = lock.ino;
        let lock = pb::LockOp::from(lock);
        let reply = self
            .call(ino, "testing a lock", |mut c, partition_id| {
                let request = pb::GetLockRequest { partition_id, lock: Some(lock) };
                async move { c.get_lock(request).await }
            })
            .await?;
        reply.conflict.map(HeldLock::try_from).transpose()
    }

    /// Starts or extends `session` on every partition for `lease`; locks
    /// need a live session, and die with it if the client stops renewing.
    pub async fn renew_session(&self, session: u64, lease: Duration) -> Result<()> {
        let lease_ns = i64::try_from(lease.as_nanos()).unwrap_or(i64::MAX);
        for p in &self.partitions() {
            let op = Op::RenewSession(pb::RenewSessionOp { session, lease_ns });
            self.mutate(p.inode_start, "renewing the session", op).await?;
        }
        Ok(())
    }

    /// Ends `session` everywhere, releasing its locks.
    pub async fn end_session(&self, session: u64) -> Result<()> {
        for p in &self.partitions() {
            self.mutate(p.inode_start, "ending the session", Op::EndSession(pb::EndSessionOp { session })).await?;
        }
        Ok(())
    }

    /// statfs(2) of the volume: its capacity, the bytes its files hold, its inodes.
    pub async fn statfs(&self) -> Result<StatFs> {
        let master = self.master()?;
        let capacity_bytes = master.get_volume(&self.volume).await?.capacity_bytes;
        let stats = self.partition_stats().await?;
        Ok(StatFs {
            capacity_bytes,
            used_bytes: stats.iter().map(|(_, s)| s.data_bytes).sum(),
            files: stats.iter().map(|(_, s)| s.inode_count).sum(),
            max_files: None,
        })
    }

    /// Statistics of every partition of the volume.
    pub async fn partition_stats(&self) -> Result<Vec<(u64, pb::PartitionStatsReply)>> {
        let mut out = Vec::new();
        for p in &self.partitions() {
            let stats = self
                .call(p.inode_start, "reading partition statistics", |mut c, partition_id| async move {
                    c.partition_stats(pb::PartitionStatsRequest { partition_id }).await
                })
                .await?;
            out.push((p.id, stats));
        }
        Ok(out)
    }

    /// Every record of `kind` in every partition, page by page.
    pub async fn scan_all(&self, kind: pb::ScanKind) -> Result<pb::ScanReply> {
        let mut all = pb::ScanReply::default();
        for p in &self.partitions() {
            let mut after = Vec::new();
            loop {
                let page = self
                    .call(p.inode_start, "scanning a partition", |mut c, partition_id| {
                        let request =
                            pb::ScanRequest { partition_id, kind: kind as i32, after: after.clone(), limit: 4096 };
                        async move { c.scan(request).await }
                    })
                    .await?;
                all.inodes.extend(page.inodes);
                all.dentries.extend(page.dentries);
                all.orphans.extend(page.orphans);
                if page.next.is_empty() {
                    break;
                }
                after = page.next;
            }
        }
        Ok(all)
    }

    /// Leaves the deadline of each operation as given (tests shorten it).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

/// Extended attributes to set, as (name, value).
pub type XattrPairs<'a> = [(&'a [u8], &'a [u8])];

/// A plain rename(2) command of (parent, name) to (parent, name).
fn rename_op((src_parent, src_name): (u64, &[u8]), (dst_parent, dst_name): (u64, &[u8]), flags: u32) -> pb::RenameOp {
    pb::RenameOp {
        src_parent,
        src_name: src_name.to_vec(),
        dst_parent,
        dst_name: dst_name.to_vec(),
        flags,
        evict_replaced: false,
        set_xattrs: Vec::new(),
    }
}
