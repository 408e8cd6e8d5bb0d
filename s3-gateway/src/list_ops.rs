//! ListObjects (v1 and v2) and ListObjectVersions on [`crate::listing`]:
//! request fields to a [`Query`], the page to S3's answer, with each
//! object's ETag from its stored record.

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use strata_sdk::fs::Volume;

use crate::errors::S3ResultExt;
use crate::gateway::{Caller, Gateway};
use crate::listing::{self, Listing, Node, Query};
use crate::objects::stored_meta;
use crate::s3_impl::timestamp;
use crate::tree::{VolumeTree, listed_etag};
use strata_common::types::AccessLevel;

/// Keys per page when a request asks for more (or none).
const MAX_KEYS: i32 = 1000;
/// Records read at once for a page's ETags.
const ETAG_READS: usize = 32;

fn query(prefix: Option<String>, delimiter: Option<String>, after: Vec<u8>, max_keys: Option<i32>) -> S3Result<Query> {
    let max_keys = match max_keys {
        Some(n) if n < 0 => {
            return Err(S3Error::with_message(S3ErrorCode::InvalidArgument, "max-keys must not be negative"));
        }
        Some(n) => n.min(MAX_KEYS),
        None => MAX_KEYS,
    };
    Ok(Query {
        prefix: prefix.unwrap_or_default().into_bytes(),
        delimiter: delimiter.filter(|d| !d.is_empty()).map(String::into_bytes),
        after,
        max_keys: max_keys as usize,
    })
}

fn url_encoded(encoding: Option<&EncodingType>) -> S3Result<bool> {
    match encoding.map(|e| e.as_str()) {
        None => Ok(false),
        Some(EncodingType::URL) => Ok(true),
        Some(other) => {
            Err(S3Error::with_message(S3ErrorCode::InvalidArgument, format!("unknown encoding-type {other:?}")))
        }
    }
}

/// A key as the answer carries it: as is, or percent-encoded (encoding-type=url).
fn show(key: &[u8], url: bool) -> String {
    if !url {
        return String::from_utf8_lossy(key).into_owned();
    }
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn run(gateway: &Gateway, bucket: &str, user: &Caller, query: &Query) -> S3Result<(Volume, Listing)> {
    let bucket = gateway.bucket(bucket, user, AccessLevel::Read).await?;
    let page = listing::list(&VolumeTree(&bucket.volume), query).await.for_bucket()?;
    Ok((bucket.volume, page))
}

/// The ETags of a page's objects, in order.
async fn etags(volume: &Volume, objects: &[(Vec<u8>, Node)]) -> S3Result<Vec<String>> {
    let wanted: Vec<Node> = objects.iter().map(|(_, node)| node.clone()).collect();
    futures::stream::iter(wanted)
        .map(|node| etag_of(volume, node))
        .buffered(ETAG_READS)
        .try_collect()
        .await
        .for_object()
}

async fn etag_of(volume: &Volume, node: Node) -> strata_common::Result<String> {
    if let Some(etag) = node.etag {
        return Ok(etag);
    }
    let record = if node.is_dir { None } else { stored_meta(volume, node.ino).await? };
    Ok(listed_etag(node.ino, node.is_dir, node.size, node.mtime_ns, record))
}

fn objects(page: &Listing, etags: Vec<String>, url: bool) -> Vec<Object> {
    page.objects
        .iter()
        .zip(etags)
        .map(|((key, node), etag)| Object {
            key: Some(show(key, url)),
            size: Some(if node.is_dir { 0 } else { node.size as i64 }),
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(timestamp(node.mtime_ns)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            ..Default::default()
        })
        .collect()
}

fn prefixes(page: &Listing, url: bool) -> Vec<CommonPrefix> {
    page.prefixes.iter().map(|p| CommonPrefix { prefix: Some(show(p, url)) }).collect()
}

pub async fn list_objects_v1(
    gateway: &Gateway,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let url = url_encoded(input.encoding_type.as_ref())?;
    let after = input.marker.clone().unwrap_or_default().into_bytes();
    let q = query(input.prefix.clone(), input.delimiter.clone(), after, input.max_keys)?;
    let (volume, page) = run(gateway, &input.bucket, &user, &q).await?;
    let etags = etags(&volume, &page.objects).await?;
    // NextMarker is only given with a delimiter; clients use the last key otherwise.
    let next_marker =
        (page.truncated && q.delimiter.is_some()).then(|| page.last.as_deref().map(|k| show(k, url))).flatten();
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(show(&q.prefix, url)),
        marker: Some(input.marker.unwrap_or_default()),
        max_keys: Some(q.max_keys as i32),
        is_truncated: Some(page.truncated),
        contents: Some(objects(&page, etags, url)),
        common_prefixes: Some(prefixes(&page, url)),
        delimiter: input.delimiter,
        next_marker,
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// Continuation tokens are the last key returned, base64: opaque to clients.
fn token_of(key: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn key_of_token(token: &str) -> S3Result<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| {
        S3Error::with_message(S3ErrorCode::InvalidArgument, "the continuation token is not one this gateway gave")
    })
}

pub async fn list_objects_v2(
    gateway: &Gateway,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let url = url_encoded(input.encoding_type.as_ref())?;
    let after = match (&input.continuation_token, &input.start_after) {
        (Some(token), _) => key_of_token(token)?,
        (None, Some(start)) => start.clone().into_bytes(),
        (None, None) => Vec::new(),
    };
    let q = query(input.prefix.clone(), input.delimiter.clone(), after, input.max_keys)?;
    let (volume, page) = run(gateway, &input.bucket, &user, &q).await?;
    let etags = etags(&volume, &page.objects).await?;
    let next_continuation_token = page.truncated.then(|| page.last.as_deref().map(token_of)).flatten();
    let key_count = (page.objects.len() + page.prefixes.len()) as i32;
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(show(&q.prefix, url)),
        max_keys: Some(q.max_keys as i32),
        key_count: Some(key_count),
        continuation_token: input.continuation_token,
        is_truncated: Some(page.truncated),
        next_continuation_token,
        contents: Some(objects(&page, etags, url)),
        common_prefixes: Some(prefixes(&page, url)),
        delimiter: input.delimiter,
        encoding_type: input.encoding_type,
        start_after: input.start_after,
        ..Default::default()
    }))
}

/// Versioning is off: every object is its one `null` version.
pub async fn list_object_versions(
    gateway: &Gateway,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let url = url_encoded(input.encoding_type.as_ref())?;
    let after = input.key_marker.clone().unwrap_or_default().into_bytes();
    let q = query(input.prefix.clone(), input.delimiter.clone(), after, input.max_keys)?;
    let (volume, page) = run(gateway, &input.bucket, &user, &q).await?;
    let etags = etags(&volume, &page.objects).await?;
    let versions = objects(&page, etags, url)
        .into_iter()
        .map(|o| ObjectVersion {
            key: o.key,
            size: o.size,
            e_tag: o.e_tag,
            last_modified: o.last_modified,
            is_latest: Some(true),
            version_id: Some("null".into()),
            storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
            ..Default::default()
        })
        .collect();
    let next_key_marker = page.truncated.then(|| page.last.as_deref().map(|k| show(k, url))).flatten();
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(show(&q.prefix, url)),
        key_marker: input.key_marker,
        max_keys: Some(q.max_keys as i32),
        is_truncated: Some(page.truncated),
        next_version_id_marker: next_key_marker.as_ref().map(|_| "null".to_string()),
        next_key_marker,
        versions: Some(versions),
        common_prefixes: Some(prefixes(&page, url)),
        delimiter: input.delimiter,
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved_bytes() {
        assert_eq!(show(b"a b/c+d\xff", true), "a%20b/c%2Bd%FF");
        assert_eq!(show(b"a b", false), "a b");
    }

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(key_of_token(&token_of(b"a/b c")).unwrap(), b"a/b c");
        assert_eq!(*key_of_token("!!").unwrap_err().code(), S3ErrorCode::InvalidArgument);
    }
}
