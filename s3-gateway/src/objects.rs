//! Objects as files: writing one whole through a temporary and a rename
//! (readers see the old object or the new one), reading it, its stored
//! record, and deleting it with the directories it implied.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use s3s::{S3Error, S3ErrorCode, S3Result};
use strata_common::{ErrorCode, Result, StrataError};
use strata_sdk::fs::{AtomicWrite, CreateOptions, FileHandle, Volume};
use strata_sdk::types::Attr;

use crate::errors::S3ResultExt;
use crate::keys::ObjectPath;
use crate::object_meta::{IMPLICIT_DIR_XATTR, MARKER_XATTR, ObjectMeta, XATTR, hex};

/// The MD5 of nothing: the ETag of an empty object and of a directory marker.
pub const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
/// A client sending no body bytes this long loses its upload.
pub const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Bytes read per step when hashing or serving a file.
pub const CHUNK: u64 = 4 << 20;
/// Pieces of [`CHUNK`] bytes one GET reads at once.
pub const PIECES_AHEAD: usize = 4;
/// Largest object one PUT may write (S3's limit).
pub const MAX_OBJECT: u64 = 5 << 30;

/// An object found for reading.
pub struct Found {
    /// `None` for a directory marker (an empty object).
    pub file: Option<Arc<FileHandle>>,
    pub meta: ObjectMeta,
    pub size: u64,
    pub mtime_ns: i64,
}

/// The object at `key`, with an ETag that describes its current content.
pub async fn find(volume: &Volume, key: &ObjectPath) -> S3Result<Found> {
    if key.dir_marker {
        let attr = volume.stat(&key.path).await.map_err(no_such_key)?;
        if !attr.is_dir() || !has_xattr(volume, attr.ino, MARKER_XATTR).await.for_object()? {
            return Err(no_such_key(StrataError::not_found("no directory marker")));
        }
        let meta = stored_meta(volume, attr.ino).await.for_object()?.unwrap_or_default();
        let meta = ObjectMeta { etag: EMPTY_MD5.into(), ..meta };
        return Ok(Found { file: None, meta, size: 0, mtime_ns: attr.mtime_ns });
    }
    let file = volume.open(&key.path).await.map_err(no_such_key)?;
    let meta = fresh_meta(volume, &file).await.for_object()?;
    let attr = file.attr().clone();
    Ok(Found { file: Some(Arc::new(file)), meta, size: attr.size, mtime_ns: attr.mtime_ns })
}

/// A path that does not hold an object (missing, a directory, under a file) is NoSuchKey.
fn no_such_key(error: StrataError) -> S3Error {
    match error.code {
        ErrorCode::NotFound | ErrorCode::IsDir | ErrorCode::NotDir | ErrorCode::NoData => {
            S3Error::with_message(S3ErrorCode::NoSuchKey, "the specified key does not exist")
        }
        _ => crate::errors::to_s3(error, strata_common::S3Subject::Object),
    }
}

/// The record of the open file, with its ETag recomputed (and stored) if
/// the content changed since it was computed (a write through a mount).
async fn fresh_meta(volume: &Volume, file: &FileHandle) -> Result<ObjectMeta> {
    let ino = file.attr().ino;
    let stored = stored_meta(volume, ino).await?;
    let (attr, version) = file.content_version().await?;
    if let Some(meta) = &stored
        && meta.version == version
        && !meta.etag.is_empty()
    {
        return Ok(meta.clone());
    }
    let mut md5 = Md5::new();
    let mut at = 0;
    while at < attr.size {
        let piece = file.read(at, CHUNK.min(attr.size - at)).await?;
        if piece.is_empty() {
            break;
        }
        at += piece.len() as u64;
        md5.update(&piece);
    }
    let meta = ObjectMeta {
        etag: hex(&md5.finalize()),
        version,
        size: attr.size,
        mtime_ns: attr.mtime_ns,
        ..stored.unwrap_or_default()
    };
    // Another reader may store the same at the same time; either is right.
    if let Err(e) = volume.meta().set_xattr(ino, XATTR, &meta.encode(), 0).await {
        tracing::warn!(volume = volume.name(), ino, error = %e, "storing a recomputed etag failed");
    }
    Ok(meta)
}

/// The record stored with `ino`, if any.
pub async fn stored_meta(volume: &Volume, ino: u64) -> Result<Option<ObjectMeta>> {
    match volume.meta().get_xattr(ino, XATTR).await {
        Ok(bytes) => Ok(ObjectMeta::decode(&bytes)),
        Err(e) if matches!(e.code, ErrorCode::NoData | ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn has_xattr(volume: &Volume, ino: u64, name: &[u8]) -> Result<bool> {
    match volume.meta().get_xattr(ino, name).await {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.code, ErrorCode::NoData | ErrorCode::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The bytes [start, end) of a found object as a stream; a task reads
/// [`PIECES_AHEAD`] pieces at once ahead of the client (one stream of
/// blocks from the datanodes would leave the links idle between pieces),
/// and stops when the client goes away.
pub fn body(found: &Found, start: u64, end: u64) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    if let Some(file) = found.file.clone() {
        tokio::spawn(async move {
            let pieces = (start..end).step_by(CHUNK as usize).map(move |at| (at, CHUNK.min(end - at)));
            let mut reads = futures::stream::iter(pieces)
                .map(|(at, length)| {
                    let file = file.clone();
                    async move { read_piece(&file, at, length).await }
                })
                .buffered(PIECES_AHEAD);
            while let Some(piece) = reads.next().await {
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Bytes [at, at + length) of an object being sent: all of them, or an error.
async fn read_piece(file: &FileHandle, at: u64, length: u64) -> std::io::Result<Bytes> {
    match file.read(at, length).await {
        Ok(piece) if piece.len() as u64 == length => Ok(piece),
        Ok(piece) => {
            let ended = at + piece.len() as u64;
            Err(std::io::Error::other(format!("the object ended early at byte {ended}")))
        }
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// What a write stores besides the bytes.
#[derive(Debug, Default)]
pub struct WriteSpec {
    pub meta: ObjectMeta,
    /// Do not replace an existing object (If-None-Match: *).
    pub create_only: bool,
    /// Base64 MD5 the body must have (Content-MD5).
    pub content_md5: Option<String>,
}

/// Writes the object `key` from `body`: durable and complete before it
/// appears at its path, replacing what was there in one rename. On any
/// failure nothing changes at the path. Returns the stored record.
pub async fn put<S, E>(volume: &Volume, key: &ObjectPath, body: S, spec: WriteSpec) -> S3Result<ObjectMeta>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if key.dir_marker {
        return put_marker(volume, key, body, spec.meta).await;
    }
    let options = CreateOptions { make_parents: true, no_replace: spec.create_only };
    let mut write = volume.create(&key.path, options).await.for_object()?;
    let written = write_body(&mut write, body, spec.content_md5.as_deref(), MAX_OBJECT).await;
    let etag = match written {
        Ok(etag) => etag,
        Err(e) => {
            write.abort().await;
            return Err(e);
        }
    };
    let meta = ObjectMeta { etag, ..spec.meta };
    place(write, meta, spec.create_only).await
}

/// Stores `meta` (its ETag set; size, mtime and version taken from the file)
/// with a written file, then puts the file at its path. On any failure the
/// file is dropped and nothing changed at the path.
pub async fn place(mut write: AtomicWrite, meta: ObjectMeta, create_only: bool) -> S3Result<ObjectMeta> {
    let volume = write.volume().clone();
    let stored = async {
        write.flush().await?;
        let (attr, version) = volume.content_version(write.ino()).await?;
        Ok::<_, StrataError>(ObjectMeta { version, size: attr.size, mtime_ns: attr.mtime_ns, ..meta })
    }
    .await;
    let meta = match stored {
        Ok(meta) => meta,
        Err(e) => {
            write.abort().await;
            return Err(e).for_object();
        }
    };
    match write.commit_with(&[(XATTR, &meta.encode())]).await {
        Ok(_) => Ok(meta),
        Err(e) if e.code == ErrorCode::AlreadyExists && create_only => Err(S3Error::with_message(
            S3ErrorCode::PreconditionFailed,
            "an object exists at the key (If-None-Match: *)",
        )),
        Err(e) => Err(placement_error(e)),
    }
}

/// Why an object could not be put at its path, in S3's terms.
fn placement_error(error: StrataError) -> S3Error {
    let message = match error.code {
        ErrorCode::NotDir => "a key under an existing object: a prefix of it is an object",
        ErrorCode::IsDir | ErrorCode::NotEmpty | ErrorCode::AlreadyExists => {
            "an object over an existing prefix: other keys start with this key and '/'"
        }
        _ => return crate::errors::to_s3(error, strata_common::S3Subject::Object),
    };
    S3Error::with_message(S3ErrorCode::InvalidRequest, message)
}

/// Writes `body` after what `write` holds, up to `limit` bytes (EntityTooLarge
/// past it); returns the hex MD5 of the body, checked against `content_md5`.
pub async fn write_body<S, E>(
    write: &mut AtomicWrite,
    mut body: S,
    content_md5: Option<&str>,
    limit: u64,
) -> S3Result<String>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut md5 = Md5::new();
    let mut received = 0u64;
    loop {
        let next = tokio::time::timeout(BODY_IDLE, body.next()).await.map_err(|_| {
            S3Error::with_message(S3ErrorCode::RequestTimeout, "the request body stalled; the upload was dropped")
        })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            S3Error::with_message(S3ErrorCode::IncompleteBody, format!("reading the request body failed: {e}"))
        })?;
        received += chunk.len() as u64;
        if received > limit {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooLarge,
                format!("the body is larger than the {limit} bytes allowed"),
            ));
        }
        md5.update(&chunk);
        write.write(&chunk).await.for_object()?;
    }
    let digest = md5.finalize();
    if let Some(expected) = content_md5 {
        let given = base64::engine::general_purpose::STANDARD.decode(expected.trim()).unwrap_or_default();
        if given != digest.as_slice() {
            return Err(S3Error::with_message(S3ErrorCode::BadDigest, "the Content-MD5 does not match the body"));
        }
    }
    Ok(hex(&digest))
}

/// A `key/` object: the directory itself, marked; it holds no bytes.
async fn put_marker<S, E>(volume: &Volume, key: &ObjectPath, mut body: S, meta: ObjectMeta) -> S3Result<ObjectMeta>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| S3Error::with_message(S3ErrorCode::IncompleteBody, format!("reading the body failed: {e}")))?;
        if !chunk.is_empty() {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "a key ending in '/' is a directory and cannot hold bytes",
            ));
        }
    }
    let dir = volume.mkdir_p(&key.path).await.map_err(placement_error)?;
    let meta = ObjectMeta { etag: EMPTY_MD5.into(), mtime_ns: dir.mtime_ns, ..meta };
    volume.meta().set_xattr(dir.ino, XATTR, &meta.encode(), 0).await.for_object()?;
    volume.meta().set_xattr(dir.ino, MARKER_XATTR, b"1", 0).await.for_object()?;
    Ok(meta)
}

/// Deletes the object `key` (a missing one is no error, as in S3), then the
/// directories the gateway made for it that are now empty.
pub async fn delete(volume: &Volume, key: &ObjectPath) -> S3Result<()> {
    let removed =
        if key.dir_marker { unmark_dir(volume, &key.path).await } else { remove_file(volume, &key.path).await };
    removed.for_object()?;
    for parent in key.parents() {
        match remove_if_implicit_and_empty(volume, parent).await {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                // The object is gone; an empty directory left behind is harmless.
                tracing::warn!(volume = volume.name(), error = %e, "removing an emptied directory failed");
                break;
            }
        }
    }
    Ok(())
}

async fn remove_file(volume: &Volume, path: &[u8]) -> Result<()> {
    match volume.remove_file(path).await {
        // Nothing there, or a prefix (a directory), not an object.
        Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::NotDir | ErrorCode::IsDir) => Ok(()),
        other => other,
    }
}

/// Deleting `dir/`: the directory stops being an object, and goes if empty.
async fn unmark_dir(volume: &Volume, path: &[u8]) -> Result<()> {
    let attr: Attr = match volume.stat(path).await {
        Ok(attr) if attr.is_dir() => attr,
        Ok(_) => return Ok(()),
        Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::NotDir) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in [MARKER_XATTR, XATTR] {
        match volume.meta().remove_xattr(attr.ino, name).await {
            Err(e) if !matches!(e.code, ErrorCode::NoData | ErrorCode::NotFound) => return Err(e),
            _ => {}
        }
    }
    match volume.remove(path).await {
        Err(e) if matches!(e.code, ErrorCode::NotEmpty | ErrorCode::NotFound) => Ok(()),
        other => other,
    }
}

/// Removes `path` if the gateway made it implicitly, it is not a marker,
/// and it is empty. True if it is gone.
async fn remove_if_implicit_and_empty(volume: &Volume, path: &[u8]) -> Result<bool> {
    let attr = match volume.stat(path).await {
        Ok(attr) if attr.is_dir() => attr,
        Ok(_) => return Ok(false),
        Err(e) if e.code == ErrorCode::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    // Most deletes leave their directory holding other keys: one read says so.
    let (entries, _) = volume.meta().readdir(attr.ino, b"", 1, false).await?;
    if !entries.is_empty() {
        return Ok(false);
    }
    if !has_xattr(volume, attr.ino, IMPLICIT_DIR_XATTR).await? || has_xattr(volume, attr.ino, MARKER_XATTR).await? {
        return Ok(false);
    }
    match volume.remove(path).await {
        Ok(()) => Ok(true),
        Err(e) if e.code == ErrorCode::NotEmpty => Ok(false),
        Err(e) if e.code == ErrorCode::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}
