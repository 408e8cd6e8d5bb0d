//! The `fuser::Filesystem` callbacks: each turns the kernel's request into a
//! call on [`Inner`] and replies exactly once. The call starts on the session
//! thread and finishes there if it needs nothing but memory and the local
//! disk (a lookup answered by a delegation, a read from the block caches);
//! once it would wait for anything else it moves to the tokio runtime, so no
//! session thread waits on the network. Handing every request to the runtime
//! cost two thread wake-ups per request, and a small file's open, read and
//! close are five requests (docs/PERFORMANCE.md).

use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime};

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use strata_common::{ErrorCode, Result, StrataError};
use strata_sdk::types::{Attr, LockKind, SetAttr, SetTime};
use tokio::runtime::Handle;

use crate::attr::{BLOCK, errno, file_attr, file_type, to_ns};
use crate::inner::{Inner, flush_file, lock_op};

pub struct StrataFs {
    pub inner: Arc<Inner>,
    pub runtime: Handle,
}

const GENERATION: Generation = Generation(0);

fn bytes(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

impl StrataFs {
    /// Runs `work` here until it would wait, then on the runtime (see the
    /// module's documentation). The first poll's waker is a no-op: the
    /// runtime's poll that follows registers its own, as every future must
    /// allow.
    /// `op` names the request in the latency histogram
    /// (`strata_request_duration_seconds{service="fuse"}`).
    fn spawn<F, Fut>(&self, op: &'static str, work: F)
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let _runtime = self.runtime.enter();
        let started = Instant::now();
        let request = work(self.inner.clone());
        let mut work = Box::pin(async move {
            request.await;
            strata_common::telemetry::record_latency("fuse", op, started);
        });
        let mut here = Context::from_waker(Waker::noop());
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            strata_sdk::cache::reading_in_place(|| work.as_mut().poll(&mut here))
        }));
        match polled {
            Ok(Poll::Ready(())) => {}
            Ok(Poll::Pending) => drop(self.runtime.spawn(work)),
            // As a panicking task on the runtime: the request's reply, dropped
            // unanswered, fails it with EIO, and the session thread lives on.
            Err(_) => tracing::error!("a request panicked on a session thread"),
        }
    }
}

fn reply_entry(reply: ReplyEntry, fs: &Inner, result: Result<Attr>) {
    match result {
        Ok(inode) => {
            fs.saw(&inode);
            reply.entry(&fs.entry_ttl, &file_attr(&inode, fs.local_size(inode.ino)), GENERATION)
        }
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_attr(reply: ReplyAttr, fs: &Inner, result: Result<Attr>) {
    match result {
        Ok(inode) => {
            fs.saw(&inode);
            reply.attr(&fs.attr_ttl, &file_attr(&inode, fs.local_size(inode.ino)))
        }
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    match t? {
        TimeOrNow::Now => Some(SetTime::Now),
        TimeOrNow::SpecificTime(t) => Some(SetTime::At(to_ns(t))),
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(4 << 20);
        // fcntl and flock locks come here, so that every mount sees them.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS);
        // Listings carry attributes: `ls -l` needs no lookup per name.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // Lookups and listings of one directory run side by side: without
        // this the kernel takes a mutex per directory around each, and a
        // fresh client's loaders opening files of one dataset directory
        // waited for each other's lookups (1,100 files/s from a warm L3
        // with 8 loaders, the lookup 5 ms of a file's 7; docs/PERFORMANCE.md).
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        self.spawn("getlk", move |fs| async move {
            let op = lock_op(&fs, ino.0, lock_owner.0, start, end, typ, pid);
            match fs.meta.get_lock(op).await {
                Ok(Some(held)) => {
                    let typ = if held.kind == LockKind::Read { libc::F_RDLCK } else { libc::F_WRLCK };
                    let end = if held.end == u64::MAX { i64::MAX as u64 } else { held.end - 1 };
                    reply.locked(held.start, end, typ, held.pid)
                }
                Ok(None) => reply.locked(start, end, libc::F_UNLCK, 0),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("setlk", move |fs| async move {
            let op = lock_op(&fs, ino.0, lock_owner.0, start, end, typ, pid);
            reply_empty(reply, fs.set_lock(op, sleep).await)
        });
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = bytes(name);
        self.spawn("lookup", move |fs| async move {
            let result = fs.meta.lookup(parent.0, &name).await;
            reply_entry(reply, &fs, result)
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn("getattr", move |fs| async move {
            let result = fs.getattr(ino.0).await;
            reply_attr(reply, &fs, result)
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let op = SetAttr {
            ino: ino.0,
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        self.spawn("setattr", move |fs| async move {
            let result = fs.setattr(op).await;
            reply_attr(reply, &fs, result)
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn("readlink", move |fs| async move {
            match fs.meta.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let (name, uid, gid) = (bytes(name), req.uid(), req.gid());
        let mode = (mode & libc::S_IFMT) | (mode & !umask & 0o7777);
        self.spawn("mknod", move |fs| async move {
            let result = fs.meta.create(parent.0, &name, mode, uid, gid, rdev.into()).await;
            reply_entry(reply, &fs, result)
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let (name, uid, gid) = (bytes(name), req.uid(), req.gid());
        self.spawn("mkdir", move |fs| async move {
            let result = fs.meta.mkdir(parent.0, &name, mode & !umask & 0o7777, uid, gid).await;
            reply_entry(reply, &fs, result)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = bytes(name);
        self.spawn("unlink", move |fs| async move { reply_empty(reply, fs.unlink(parent.0, &name).await) });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = bytes(name);
        self.spawn(
            "rmdir",
            move |fs| async move { reply_empty(reply, fs.meta.rmdir(parent.0, &name).await.map(drop)) },
        );
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (name, target, uid, gid) = (bytes(link_name), target.as_os_str().as_bytes().to_vec(), req.uid(), req.gid());
        self.spawn("symlink", move |fs| async move {
            let result = fs.meta.symlink(parent.0, &name, &target, uid, gid).await;
            reply_entry(reply, &fs, result)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname, flags) = (bytes(name), bytes(newname), flags.bits());
        self.spawn("rename", move |fs| async move {
            reply_empty(reply, fs.rename(parent.0, &name, newparent.0, &newname, flags).await)
        });
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let newname = bytes(newname);
        self.spawn("link", move |fs| async move {
            let result = fs.meta.link(ino.0, newparent.0, &newname).await;
            reply_entry(reply, &fs, result)
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let read_only = flags.0 & libc::O_ACCMODE == libc::O_RDONLY;
        self.spawn("open", move |fs| async move {
            match fs.open(ino.0, read_only).await {
                Ok((keep_cache, window)) => {
                    let fh = fs.handles.open(ino.0, |file| {
                        if let Some(window) = window {
                            file.reads.seed(window);
                        }
                    });
                    let flags = if keep_cache { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
                    reply.opened(FileHandle(fh), flags)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.inner.handles.file(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        self.spawn("read", move |fs| async move {
            let read = fs.read(&file, offset, size);
            match crate::watchdog::noisy_if_slow(read, || {
                format!("read of inode {} at {offset} ({size} bytes)", file.ino)
            })
            .await
            {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(file) = self.inner.handles.file(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let data = data.to_vec();
        self.spawn("write", move |fs| async move {
            match fs.write(&file, offset, &data).await {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        let Some(file) = self.inner.handles.file(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        self.spawn("flush", move |fs| async move {
            let flushed = flush_file(&file).await;
            // Closing a descriptor drops the POSIX locks its process held on the file.
            if let Err(e) = fs.unlock_owner(ino.0, lock_owner.0).await {
                tracing::debug!(ino = ino.0, error = %e, "releasing locks on close failed");
            }
            reply_empty(reply, flushed)
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("release", move |fs| async move { reply_empty(reply, fs.release(fh.0).await) });
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.spawn("fsync", move |fs| async move { reply_empty(reply, fs.flush_inode(ino.0).await) });
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(self.inner.handles.open_dir()), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(listing) = self.inner.handles.dir(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        self.spawn("readdir", move |fs| async move {
            // The listing is read once per open (rewinddir reads it again).
            let loaded = offset != 0 && listing.lock().unwrap().is_some();
            if !loaded {
                match fs.list_dir(ino.0, false).await {
                    Ok(entries) => *listing.lock().unwrap() = Some(entries),
                    Err(e) => return reply.error(errno(&e)),
                }
            }
            let entries = listing.lock().unwrap();
            for (i, entry) in entries.as_ref().expect("loaded").iter().enumerate().skip(offset as usize) {
                let name = OsStr::from_bytes(&entry.name);
                if reply.add(INodeNo(entry.ino), i as u64 + 1, file_type(entry.kind), name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let Some(listing) = self.inner.handles.dir(fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        self.spawn("readdirplus", move |fs| async move {
            let loaded = offset != 0 && listing.lock().unwrap().is_some();
            if !loaded {
                match fs.list_dir(ino.0, true).await {
                    Ok(entries) => *listing.lock().unwrap() = Some(entries),
                    Err(e) => return reply.error(errno(&e)),
                }
            } else {
                // The kernel may switch from readdir to readdirplus on one handle.
                let mut entries = listing.lock().unwrap().take().unwrap_or_default();
                let from = (offset as usize).min(entries.len());
                fs.fill_attrs(&mut entries[from..]).await;
                *listing.lock().unwrap() = Some(entries);
            }
            let entries = listing.lock().unwrap();
            for (i, entry) in entries.as_ref().expect("loaded").iter().enumerate().skip(offset as usize) {
                // Gone since the listing was read: left out.
                let Some(inode) = &entry.attr else { continue };
                fs.saw(inode);
                let attr = file_attr(inode, fs.local_size(inode.ino));
                let name = OsStr::from_bytes(&entry.name);
                if reply.add(INodeNo(entry.ino), i as u64 + 1, name, &fs.entry_ttl, &attr, GENERATION) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.inner.handles.release_dir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Namespace changes are durable (Raft-committed) when they return.
        reply.ok();
    }

    /// The volume's figures, or inside a directory quota (a `subdir` PVC
    /// bind-mounted from here) the quota's.
    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.spawn("statfs", move |fs| async move {
            match fs.meta.statfs_at(ino.0).await {
                Ok(s) => {
                    let block = u64::from(BLOCK);
                    let blocks = s.capacity_bytes / block;
                    let free = s.capacity_bytes.saturating_sub(s.used_bytes) / block;
                    let max_files = s.max_files.unwrap_or(u64::from(u32::MAX));
                    let files_free = max_files.saturating_sub(s.files);
                    reply.statfs(blocks, free, free, s.files + files_free, files_free, BLOCK, 255, BLOCK)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (bytes(name), value.to_vec());
        if let Err(e) = no_acls(&name) {
            return reply.error(errno(&e));
        }
        self.spawn("setxattr", move |fs| async move {
            reply_empty(reply, fs.meta.set_xattr(ino.0, &name, &value, flags as u32).await)
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = bytes(name);
        if let Err(e) = no_acls(&name) {
            return reply.error(errno(&e));
        }
        self.spawn("getxattr", move |fs| async move {
            let value = if ino == INodeNo::ROOT && name == strata_sdk::cache::CACHE_STATS_XATTR.as_bytes() {
                let report =
                    strata_sdk::cache::CacheReport { delegation_hits: fs.meta.delegation_hits(), ..fs.cache.report() };
                serde_json::to_vec(&report).map_err(|e| StrataError::internal(format!("encoding: {e}")))
            } else {
                fs.meta.get_xattr(ino.0, &name).await
            };
            match value {
                Ok(value) if size == 0 => reply.size(value.len() as u32),
                Ok(value) if value.len() > size as usize => reply.error(Errno::ERANGE),
                Ok(value) => reply.data(&value),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn("listxattr", move |fs| async move {
            match fs.meta.list_xattr(ino.0).await {
                Ok(names) => {
                    let mut list = Vec::new();
                    for n in names {
                        list.extend_from_slice(&n);
                        list.push(0);
                    }
                    if size == 0 {
                        reply.size(list.len() as u32)
                    } else if list.len() > size as usize {
                        reply.error(Errno::ERANGE)
                    } else {
                        reply.data(&list)
                    }
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = bytes(name);
        if let Err(e) = no_acls(&name) {
            return reply.error(errno(&e));
        }
        self.spawn(
            "removexattr",
            move |fs| async move { reply_empty(reply, fs.meta.remove_xattr(ino.0, &name).await) },
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.spawn("fallocate", move |fs| async move {
            reply_empty(reply, fs.fallocate(ino.0, offset, length, mode).await)
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let (name, uid, gid) = (bytes(name), req.uid(), req.gid());
        let mode = libc::S_IFREG | (mode & !umask & 0o7777);
        self.spawn("create", move |fs| async move {
            match fs.meta.create(parent.0, &name, mode, uid, gid, 0).await {
                Ok(inode) => {
                    fs.saw(&inode);
                    let fh = fs.handles.open(inode.ino, |_| {});
                    let attr = file_attr(&inode, None);
                    reply.created(&fs.entry_ttl, &attr, GENERATION, FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

/// POSIX ACLs are not supported: their xattrs answer EOPNOTSUPP, as on a file
/// system mounted without ACLs, so programs fall back to the mode bits (`cp
/// -a` sets a file's mode through `system.posix_acl_access` when that
/// succeeds; stored as a plain xattr it would leave the mode unchanged).
fn no_acls(name: &[u8]) -> Result<()> {
    if name.starts_with(b"system.posix_acl_") {
        return Err(StrataError::new(ErrorCode::NotSupported, "POSIX ACLs are not supported"));
    }
    Ok(())
}
