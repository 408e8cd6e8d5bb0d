//! Snapshots as files, so a group of any size is snapshotted, sent and
//! installed without holding its data in memory.
//!
//! When raft-rs asks a leader for a snapshot, [`SnapshotFiles::request`]
//! answers with a ready file if one is recent enough; otherwise it starts
//! writing one on a background thread from a RocksDB snapshot (data, applied
//! index, membership and peers all from that one consistent view) and raft-rs
//! is told to try again later. The Raft message then carries only a small
//! [`Descriptor`] (path, size, CRC32); the transport streams the file to the
//! receiver in chunks, which stores it and points the descriptor at its own
//! copy. Installing reads the file in a streaming pass to check the CRC, then
//! writes the pairs in bounded batches (see `GroupStorage::install_snapshot`).
//!
//! File format: the encoding of [`crate::snapshot::SnapshotData`] (version,
//! peers, then key/value pairs), streamed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost_raft::Message as _;
use raft::eraftpb::{ConfState, Entry};
use rocksdb::{DB, Direction, IteratorMode, ReadOptions};
use strata_common::{ErrorCode, Result, StrataError};

use crate::keys;
use crate::snapshot::{SnapshotData, VERSION};

const DESCRIPTOR_MAGIC: &[u8; 5] = b"SNAP2";
/// A snapshot file older than this is written again on the next request.
const MAX_AGE: Duration = Duration::from_secs(300);
/// Files of a group older than its newest are kept this long (a transfer may still read them).
const KEEP_SUPERSEDED: Duration = Duration::from_secs(120);

/// What a snapshot message carries instead of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub path: PathBuf,
    pub size: u64,
    pub crc: u32,
}

impl Descriptor {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = DESCRIPTOR_MAGIC.to_vec();
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(self.path.as_os_str().as_encoded_bytes());
        out
    }

    /// The descriptor in a snapshot message's data, if it holds one.
    pub fn decode(data: &[u8]) -> Option<Descriptor> {
        let rest = data.strip_prefix(DESCRIPTOR_MAGIC)?;
        if rest.len() < 12 {
            return None;
        }
        let size = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let crc = u32::from_le_bytes(rest[8..12].try_into().ok()?);
        let path = PathBuf::from(std::str::from_utf8(&rest[12..]).ok()?);
        Some(Descriptor { path, size, crc })
    }
}

/// A snapshot file ready to send, and the Raft metadata it was taken at.
#[derive(Debug, Clone)]
pub struct Ready {
    pub index: u64,
    pub term: u64,
    pub conf: ConfState,
    pub descriptor: Descriptor,
    made: Instant,
}

enum State {
    Generating,
    Ready(Ready),
}

/// The snapshot files of one node: where they live and which are ready.
pub struct SnapshotFiles {
    dir: PathBuf,
    groups: Mutex<HashMap<u64, State>>,
    /// Superseded files and when they were superseded.
    old: Mutex<Vec<(PathBuf, Instant)>>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StrataError {
    StrataError::internal(format!("{what} {}: {e}", path.display()))
}

impl SnapshotFiles {
    /// Snapshot files in `dir` (emptied: files of an earlier run are stale;
    /// created when the first snapshot is written or received).
    pub fn new(dir: PathBuf) -> Arc<SnapshotFiles> {
        let _ = std::fs::remove_dir_all(&dir);
        Arc::new(SnapshotFiles { dir, groups: Mutex::new(HashMap::new()), old: Mutex::new(Vec::new()) })
    }

    /// Where a received snapshot of `group` is stored (the directory is created).
    pub fn receive_path(&self, group: u64) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io("creating", &self.dir, e))?;
        // Received files never installed (Raft dropped the message) go after a while.
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let stale = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            if is_received(&entry.path()) && stale.is_some_and(|age| age > STALE_RECEIVED) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(self.dir.join(format!("{RECEIVED_PREFIX}{group}-{:016x}.snap", rand::random::<u64>())))
    }

    /// A ready snapshot of `group` at or past `min_index`, or None while one
    /// is being written (started here if needed).
    pub fn request(self: &Arc<Self>, db: &Arc<DB>, group: u64, min_index: u64) -> Option<Ready> {
        let mut groups = self.groups.lock().unwrap();
        match groups.get(&group) {
            Some(State::Generating) => return None,
            Some(State::Ready(ready)) if ready.index >= min_index && ready.made.elapsed() < MAX_AGE => {
                return Some(ready.clone());
            }
            _ => {}
        }
        if let Some(State::Ready(stale)) = groups.insert(group, State::Generating) {
            self.old.lock().unwrap().push((stale.descriptor.path, Instant::now()));
        }
        drop(groups);
        self.drop_superseded();
        let (files, db) = (self.clone(), db.clone());
        std::thread::Builder::new()
            .name(format!("snapshot-{group}"))
            .spawn(move || {
                let started = Instant::now();
                let written = match write_snapshot(&db, group, &files.dir) {
                    Ok(ready) => {
                        tracing::info!(
                            group_id = group,
                            index = ready.index,
                            bytes = ready.descriptor.size,
                            ms = started.elapsed().as_millis() as u64,
                            "snapshot file written"
                        );
                        Some(State::Ready(ready))
                    }
                    Err(e) => {
                        tracing::warn!(group_id = group, error = %e, "writing a snapshot failed");
                        None
                    }
                };
                let mut groups = files.groups.lock().unwrap();
                match written {
                    Some(state) => groups.insert(group, state),
                    None => groups.remove(&group),
                };
            })
            .expect("spawning a snapshot thread");
        None
    }

    /// Forgets a group (removed from this node) and its files.
    pub fn remove_group(&self, group: u64) {
        if let Some(State::Ready(ready)) = self.groups.lock().unwrap().remove(&group) {
            let _ = std::fs::remove_file(&ready.descriptor.path);
        }
    }

    fn drop_superseded(&self) {
        self.old.lock().unwrap().retain(|(path, since)| {
            let expired = since.elapsed() > KEEP_SUPERSEDED;
            if expired {
                let _ = std::fs::remove_file(path);
            }
            !expired
        });
    }
}

const RECEIVED_PREFIX: &str = "recv-";
const STALE_RECEIVED: Duration = Duration::from_secs(600);

/// Whether `path` is a received copy (removed once installed), not a file made here.
pub fn is_received(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(RECEIVED_PREFIX))
}

/// A writer that keeps the CRC32 and length of what went through it.
struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn put_bytes(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(bytes)
}

/// Writes the snapshot file of `group` from one RocksDB snapshot.
fn write_snapshot(db: &DB, group: u64, dir: &Path) -> Result<Ready> {
    let view = db.snapshot();
    let get = |kind| {
        view.get(keys::state_key(group, kind)).map_err(|e| StrataError::internal(format!("reading raft state: {e}")))
    };
    let (truncated_index, truncated_term) =
        get(keys::TRUNCATED)?.map(|v| crate::storage::decode_pair("truncated", &v)).transpose()?.unwrap_or((0, 0));
    let index = get(keys::APPLIED)?
        .map(|v| crate::storage::decode_u64("applied", &v, 0))
        .transpose()?
        .unwrap_or(truncated_index);
    let term = if index == truncated_index {
        truncated_term
    } else {
        let entry = view
            .get(keys::log_key(group, index))
            .map_err(|e| StrataError::internal(format!("reading log entry {index}: {e}")))?
            .ok_or_else(|| StrataError::internal(format!("log entry {index} of group {group} is missing")))?;
        Entry::decode(entry.as_slice()).map_err(|e| StrataError::internal(format!("decoding entry: {e}")))?.term
    };
    let conf = match get(keys::CONF_STATE)? {
        Some(b) => ConfState::decode(b.as_slice()).map_err(|e| StrataError::internal(format!("conf state: {e}")))?,
        None => ConfState::default(),
    };
    let peers = match get(keys::PEERS)? {
        Some(b) => SnapshotData::decode(&b)?.peers,
        None => Vec::new(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let path = dir.join(format!("{group}-{index}-{:08x}.snap", rand::random::<u32>()));
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
    let mut out =
        Checksummed { inner: BufWriter::with_capacity(1 << 20, file), hasher: crc32fast::Hasher::new(), len: 0 };
    let written = (|| -> std::io::Result<()> {
        out.write_all(&[VERSION])?;
        out.write_all(&(peers.len() as u32).to_le_bytes())?;
        for (id, address) in &peers {
            out.write_all(&id.to_le_bytes())?;
            put_bytes(&mut out, address.as_bytes())?;
        }
        let (start, end) = keys::data_range(group);
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(end);
        // Reads of this pass should not push hot blocks out of the block cache.
        opts.fill_cache(false);
        for item in view.iterator_opt(IteratorMode::From(&start, Direction::Forward), opts) {
            let (key, value) = item.map_err(std::io::Error::other)?;
            put_bytes(&mut out, &key[keys::data_prefix_len()..])?;
            put_bytes(&mut out, &value)?;
        }
        out.flush()
    })();
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing the snapshot file", &path, e));
    }
    let descriptor = Descriptor { path, size: out.len, crc: out.hasher.finalize() };
    Ok(Ready { index, term, conf, descriptor, made: Instant::now() })
}

/// Checks a snapshot file against its descriptor (a full streaming read).
#[cfg(test)]
pub fn verify(descriptor: &Descriptor) -> Result<()> {
    let path = &descriptor.path;
    let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| io("opening", path, e))?);
    let mut hasher = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| io("reading", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        len += n as u64;
    }
    if len != descriptor.size || hasher.finalize() != descriptor.crc {
        return Err(StrataError::new(
            ErrorCode::Corrupted,
            format!("snapshot file {} does not match its descriptor ({len} bytes)", path.display()),
        ));
    }
    Ok(())
}

/// Reads a snapshot file: its peers first, then its pairs one at a time.
pub struct SnapshotReader {
    file: BufReader<File>,
    pub peers: Vec<(u64, String)>,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<SnapshotReader> {
        let file = File::open(path).map_err(|e| io("opening", path, e))?;
        let mut reader = SnapshotReader { file: BufReader::with_capacity(1 << 20, file), peers: Vec::new() };
        let version = reader.exact(1)?[0];
        if version != VERSION {
            return Err(StrataError::new(ErrorCode::Corrupted, format!("unknown snapshot version {version}")));
        }
        let count = u32::from_le_bytes(reader.exact(4)?.try_into().unwrap());
        for _ in 0..count {
            let id = u64::from_le_bytes(reader.exact(8)?.try_into().unwrap());
            let address = String::from_utf8(reader.bytes()?)
                .map_err(|_| StrataError::new(ErrorCode::Corrupted, "a snapshot peer address is not utf-8"))?;
            reader.peers.push((id, address));
        }
        Ok(reader)
    }

    fn exact(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buffer = vec![0u8; n];
        self.file
            .read_exact(&mut buffer)
            .map_err(|e| StrataError::new(ErrorCode::Corrupted, format!("reading a snapshot file: {e}")))?;
        Ok(buffer)
    }

    fn bytes(&mut self) -> Result<Vec<u8>> {
        let len = u32::from_le_bytes(self.exact(4)?.try_into().unwrap()) as usize;
        self.exact(len)
    }

    /// The next key/value, or None at the end of the file.
    pub fn next_pair(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        use std::io::BufRead;
        let rest = self.file.fill_buf().map_err(|e| StrataError::internal(format!("reading a snapshot file: {e}")))?;
        if rest.is_empty() {
            return Ok(None);
        }
        Ok(Some((self.bytes()?, self.bytes()?)))
    }
}
