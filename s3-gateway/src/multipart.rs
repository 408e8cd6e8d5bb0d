//! Multipart uploads as files. An upload is a directory under the bucket's
//! hidden [`UPLOADS_DIR`], named by the upload id, with the upload's record
//! (key, content headers, user metadata, tags) in an xattr; each part is a
//! file `00001` … `10000` in it, written through a temporary like any object
//! and carrying its own record (the part's MD5).
//!
//! Complete writes the object like a PUT does, except that its bytes are the
//! parts' extents referenced where they are
//! ([`strata_sdk::fs::AtomicWrite::append_file`]): no byte is copied. Blob
//! references are counted per meta partition, so that only works when the
//! parts and the object share one; they do, because every file the gateway
//! writes is created in the volume's temporaries directory (the sdk copies
//! the bytes in the rare case they do not).
//!
//! An upload id starts with its creation time: the sweeper aborts uploads
//! older than the configured expiry.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use s3s::{S3Error, S3ErrorCode, S3Result};
use serde::{Deserialize, Serialize};
use strata_common::{ErrorCode, Result};
use strata_sdk::fs::{CreateOptions, ROOT_INO, Volume};

use crate::errors::S3ResultExt;
use crate::keys::ObjectPath;
use crate::object_meta::{ObjectMeta, hex, multipart_etag};
use crate::objects::{self, Found};

/// The root directory holding uploads in progress (reserved: no key reaches it).
pub const UPLOADS_DIR: &[u8] = b".strata-uploads";
/// The xattr of an upload's directory holding its [`UploadRecord`].
const UPLOAD_XATTR: &[u8] = b"user.strata.s3.upload";
/// Part numbers run from 1 to this.
pub const MAX_PART_NUMBER: i32 = 10_000;
/// Every part but the last is at least this long.
pub const MIN_PART: u64 = 5 << 20;
/// No part is longer than this.
pub const MAX_PART: u64 = 5 << 30;
/// Length of an upload id: 20 digits of time, 16 hex digits of chance.
const ID_LEN: usize = 36;

/// What CreateMultipartUpload was given, kept until Complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    pub key: String,
    pub initiated_ns: i64,
    /// Headers, user metadata and tags for the object (no ETag yet).
    pub meta: ObjectMeta,
}

/// An upload in progress.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: String,
    pub record: UploadRecord,
}

/// One stored part.
#[derive(Debug, Clone)]
pub struct PartInfo {
    pub number: i32,
    pub etag: String,
    pub size: u64,
    pub mtime_ns: i64,
    ino: u64,
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn upload_path(id: &str) -> Vec<u8> {
    [UPLOADS_DIR, b"/", id.as_bytes()].concat()
}

fn part_name(number: i32) -> String {
    format!("{number:05}")
}

fn no_such_upload() -> S3Error {
    S3Error::with_message(S3ErrorCode::NoSuchUpload, "the upload does not exist: it was completed, aborted or expired")
}

/// The creation time an upload id carries; `None` if it is not an id.
fn id_time(id: &str) -> Option<i64> {
    if id.len() != ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    id.get(..20)?.parse().ok()
}

pub fn check_part_number(number: i32) -> S3Result<()> {
    if !(1..=MAX_PART_NUMBER).contains(&number) {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("part numbers run from 1 to {MAX_PART_NUMBER}, not {number}"),
        ));
    }
    Ok(())
}

/// Starts an upload of `key`; returns its id.
pub async fn create(volume: &Volume, key: &str, meta: ObjectMeta) -> S3Result<String> {
    if ObjectPath::parse(key)?.dir_marker {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "a key ending in '/' is a directory and cannot hold bytes",
        ));
    }
    let id = format!("{:020}{:016x}", now_ns(), rand::random::<u64>());
    let record = UploadRecord { key: key.to_string(), initiated_ns: now_ns(), meta };
    let encoded =
        serde_json::to_vec(&record).map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?;
    let dir = volume.mkdir_p(&upload_path(&id)).await.for_upload()?;
    volume.meta().set_xattr(dir.ino, UPLOAD_XATTR, &encoded, 0).await.for_upload()?;
    Ok(id)
}

/// The upload `id` of `key`: NoSuchUpload if there is none (or it is another key's).
pub async fn open(volume: &Volume, key: &str, id: &str) -> S3Result<Upload> {
    if id_time(id).is_none() {
        return Err(no_such_upload());
    }
    let record = match volume.get_xattr(&upload_path(id), UPLOAD_XATTR).await {
        Ok(bytes) => serde_json::from_slice::<UploadRecord>(&bytes).ok(),
        Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::NoData) => None,
        Err(e) => return Err(e).for_upload(),
    };
    match record {
        Some(record) if record.key == key => Ok(Upload { id: id.to_string(), record }),
        _ => Err(no_such_upload()),
    }
}

/// Writes part `number` from `body`, replacing an earlier one of that number.
pub async fn put_part<S, E>(
    volume: &Volume,
    upload: &Upload,
    number: i32,
    body: S,
    content_md5: Option<&str>,
) -> S3Result<PartInfo>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    check_part_number(number)?;
    let mut write = start_part(volume, upload, number).await?;
    let etag = match objects::write_body(&mut write, body, content_md5, MAX_PART).await {
        Ok(etag) => etag,
        Err(e) => {
            write.abort().await;
            return Err(e);
        }
    };
    finish_part(write, number, etag).await
}

/// Writes part `number` as bytes [start, end) of the object `source`: by
/// reference when it is in the same bucket, else by copying.
pub async fn copy_part(
    volume: &Volume,
    upload: &Upload,
    number: i32,
    source: &Found,
    same_bucket: bool,
    (start, end): (u64, u64),
) -> S3Result<PartInfo> {
    check_part_number(number)?;
    if end - start > MAX_PART {
        return Err(S3Error::with_message(S3ErrorCode::EntityTooLarge, "a part is at most 5 GiB"));
    }
    let mut write = start_part(volume, upload, number).await?;
    let written = match (&source.file, same_bucket) {
        (Some(file), true) => {
            let appended = write.append_file(file.attr().ino, start, end - start).await.for_object();
            match appended {
                Ok(()) => range_md5(source, start, end).await,
                Err(e) => Err(e),
            }
        }
        _ => objects::write_body(&mut write, objects::body(source, start, end).boxed(), None, MAX_PART).await,
    };
    match written {
        Ok(etag) => finish_part(write, number, etag).await,
        Err(e) => {
            write.abort().await;
            Err(e)
        }
    }
}

/// The hex MD5 of bytes [start, end) of `found` (its ETag when that is the
/// whole object's plain MD5).
async fn range_md5(found: &Found, start: u64, end: u64) -> S3Result<String> {
    let whole = start == 0 && end == found.size;
    if whole && found.meta.etag.len() == 32 && !found.meta.etag.contains('-') {
        return Ok(found.meta.etag.clone());
    }
    let mut md5 = Md5::new();
    let mut body = std::pin::pin!(objects::body(found, start, end));
    while let Some(piece) = body.next().await {
        let piece = piece
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, format!("reading the copy source: {e}")))?;
        md5.update(&piece);
    }
    Ok(hex(&md5.finalize()))
}

async fn start_part(volume: &Volume, upload: &Upload, number: i32) -> S3Result<strata_sdk::fs::AtomicWrite> {
    let path = [&upload_path(&upload.id)[..], b"/", part_name(number).as_bytes()].concat();
    volume.create(&path, CreateOptions::default()).await.for_upload()
}

/// Stores the part's record and puts it in its upload (NoSuchUpload if the
/// upload went meanwhile).
async fn finish_part(write: strata_sdk::fs::AtomicWrite, number: i32, etag: String) -> S3Result<PartInfo> {
    let meta = ObjectMeta { etag, ..ObjectMeta::default() };
    let ino = write.ino();
    match objects::place(write, meta, false).await {
        Ok(meta) => Ok(PartInfo { number, etag: meta.etag, size: meta.size, mtime_ns: meta.mtime_ns, ino }),
        Err(e) if *e.code() == S3ErrorCode::NoSuchKey => Err(no_such_upload()),
        Err(e) => Err(e),
    }
}

/// Parts after `after` in number order, at most `limit`; and whether more follow.
pub async fn list_parts(volume: &Volume, upload: &Upload, after: i32, limit: usize) -> S3Result<(Vec<PartInfo>, bool)> {
    let dir = volume.stat(&upload_path(&upload.id)).await.map_err(|_| no_such_upload())?;
    let mut cursor = if after > 0 { part_name(after).into_bytes() } else { Vec::new() };
    let mut parts = Vec::new();
    loop {
        let page = volume.list_dir(dir.ino, &cursor, 1000).await.for_upload()?;
        for entry in page.entries {
            let number = std::str::from_utf8(&entry.name).ok().and_then(|n| n.parse::<i32>().ok());
            let (Some(number), Some(attr)) = (number, entry.attr) else { continue };
            if parts.len() == limit {
                return Ok((parts, true));
            }
            let meta = objects::stored_meta(volume, entry.ino).await.for_upload()?.unwrap_or_default();
            parts.push(PartInfo { number, etag: meta.etag, size: attr.size, mtime_ns: attr.mtime_ns, ino: entry.ino });
        }
        match page.next {
            Some(next) => cursor = next,
            None => return Ok((parts, false)),
        }
    }
}

/// Assembles the object from `chosen` ((number, ETag) in ascending order)
/// and puts it at its key; the upload is gone afterwards.
pub async fn complete(
    volume: &Volume,
    upload: &Upload,
    key: &ObjectPath,
    chosen: &[(i32, String)],
    create_only: bool,
) -> S3Result<ObjectMeta> {
    let parts = chosen_parts(volume, upload, chosen).await?;
    let options = CreateOptions { make_parents: true, no_replace: create_only };
    let mut write = volume.create(&key.path, options).await.for_object()?;
    for part in &parts {
        if let Err(e) = write.append_file(part.ino, 0, part.size).await {
            write.abort().await;
            return Err(e).for_upload();
        }
    }
    let etags: Vec<String> = parts.iter().map(|p| p.etag.clone()).collect();
    let etag = multipart_etag(&etags)
        .ok_or_else(|| S3Error::with_message(S3ErrorCode::InternalError, "a stored part ETag is not hex"))?;
    let meta = ObjectMeta { etag, ..upload.record.meta.clone() };
    let stored = objects::place(write, meta, create_only).await?;
    if let Err(e) = remove(volume, &upload.id).await {
        // The object is in place; the sweeper removes what is left.
        tracing::warn!(volume = volume.name(), upload = %upload.id, error = %e, "removing a completed upload failed");
    }
    Ok(stored)
}

/// The stored parts Complete names, checked as S3 checks them.
async fn chosen_parts(volume: &Volume, upload: &Upload, chosen: &[(i32, String)]) -> S3Result<Vec<PartInfo>> {
    if chosen.is_empty() {
        return Err(S3Error::with_message(S3ErrorCode::MalformedXML, "a completed upload names at least one part"));
    }
    if chosen.len() > MAX_PART_NUMBER as usize {
        return Err(S3Error::with_message(S3ErrorCode::InvalidRequest, "at most 10,000 parts"));
    }
    let (stored, _) = list_parts(volume, upload, 0, MAX_PART_NUMBER as usize).await?;
    let stored: HashMap<i32, PartInfo> = stored.into_iter().map(|p| (p.number, p)).collect();
    let mut parts = Vec::with_capacity(chosen.len());
    for (i, (number, etag)) in chosen.iter().enumerate() {
        if i > 0 && chosen[i - 1].0 >= *number {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidPartOrder,
                "parts must be listed in ascending order",
            ));
        }
        let part = match stored.get(number) {
            Some(part) if part.etag == etag.trim_matches('"') => part.clone(),
            _ => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidPart,
                    format!("part {number} was not uploaded or its ETag is not {etag}"),
                ));
            }
        };
        if part.size < MIN_PART && i + 1 < chosen.len() {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooSmall,
                format!("part {number} has {} bytes; every part but the last has at least {MIN_PART}", part.size),
            ));
        }
        parts.push(part);
    }
    Ok(parts)
}

/// Drops the upload and its parts.
pub async fn abort(volume: &Volume, upload: &Upload) -> S3Result<()> {
    remove(volume, &upload.id).await.for_upload()
}

async fn remove(volume: &Volume, id: &str) -> Result<()> {
    let path = upload_path(id);
    loop {
        let page = match volume.list(&path, &[], 1000).await {
            Ok(page) => page,
            Err(e) if e.code == ErrorCode::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in &page.entries {
            let part = [&path[..], b"/", &entry.name[..]].concat();
            match volume.remove(&part).await {
                Err(e) if e.code != ErrorCode::NotFound => return Err(e),
                _ => {}
            }
        }
        if page.next.is_none() {
            break;
        }
    }
    match volume.remove(&path).await {
        Err(e) if e.code != ErrorCode::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every upload in progress, by key then id.
pub async fn all_uploads(volume: &Volume) -> S3Result<Vec<Upload>> {
    let mut uploads = Vec::new();
    for (id, dir) in upload_dirs(volume).await.for_upload()? {
        match volume.meta().get_xattr(dir, UPLOAD_XATTR).await {
            Ok(bytes) => match serde_json::from_slice::<UploadRecord>(&bytes) {
                Ok(record) => uploads.push(Upload { id, record }),
                Err(_) => continue,
            },
            // Being created or removed just now.
            Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::NoData) => continue,
            Err(e) => return Err(e).for_upload(),
        }
    }
    uploads.sort_by(|a, b| (&a.record.key, &a.id).cmp(&(&b.record.key, &b.id)));
    Ok(uploads)
}

/// (id, directory inode) of every upload, in id order.
async fn upload_dirs(volume: &Volume) -> Result<Vec<(String, u64)>> {
    let root = match volume.meta().lookup(ROOT_INO, UPLOADS_DIR).await {
        Ok(dir) => dir.ino,
        Err(e) if e.code == ErrorCode::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let page = volume.list_dir(root, &cursor, 1000).await?;
        for entry in page.entries {
            if let Ok(id) = String::from_utf8(entry.name) {
                out.push((id, entry.ino));
            }
        }
        match page.next {
            Some(next) => cursor = next,
            None => return Ok(out),
        }
    }
}

/// Aborts uploads started more than `expiry` ago; returns how many.
pub async fn expire(volume: &Volume, expiry: Duration) -> Result<u64> {
    let cutoff = now_ns().saturating_sub(i64::try_from(expiry.as_nanos()).unwrap_or(i64::MAX));
    let mut removed = 0;
    for (id, _) in upload_dirs(volume).await? {
        // Ids sort by their start time: the rest are younger.
        match id_time(&id) {
            Some(t) if t >= cutoff => break,
            _ => {}
        }
        remove(volume, &id).await?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_carry_their_time_and_nothing_else_passes_for_one() {
        let id = format!("{:020}{:016x}", 1_234_567_890_123_456_789i64, 0xabcdefu64);
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(id_time(&id), Some(1_234_567_890_123_456_789));
        for bad in ["", "../../x", &id[1..], &id.to_uppercase().replace('0', "A"), &format!("{}/", &id[1..])] {
            assert_eq!(id_time(bad), None, "{bad:?}");
        }
        assert!(check_part_number(1).is_ok() && check_part_number(MAX_PART_NUMBER).is_ok());
        assert!(check_part_number(0).is_err() && check_part_number(MAX_PART_NUMBER + 1).is_err());
        assert!(part_name(2) < part_name(10) && part_name(999) < part_name(MAX_PART_NUMBER));
    }
}
