//! The multipart operations on the wire: s3s's inputs to [`crate::multipart`]
//! calls, their results to s3s's outputs, with S3's paging rules for
//! ListParts and ListMultipartUploads.

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::conditions::{Conditions, etag};
use crate::gateway::Gateway;
use crate::keys::ObjectPath;
use crate::multipart::{self, Upload};
use crate::object_meta::Headers;
use crate::objects;
use crate::s3_impl::{
    check_copy_source, check_write_conditions, content_headers, copy_source_conditions, copy_source_names, timestamp,
    upload_meta,
};
use strata_common::types::AccessLevel;

/// Parts or uploads per listing page at most (and when none is asked for).
const PAGE_MAX: i32 = 1000;

fn page_size(asked: Option<i32>, what: &str) -> S3Result<usize> {
    match asked {
        Some(n) if n < 0 => {
            Err(S3Error::with_message(S3ErrorCode::InvalidArgument, format!("{what} must not be negative")))
        }
        Some(n) => Ok(n.min(PAGE_MAX) as usize),
        None => Ok(PAGE_MAX as usize),
    }
}

pub async fn create(
    gateway: &Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let bucket = gateway.bucket(&input.bucket, &user, AccessLevel::Write).await?;
    let headers = content_headers!(input);
    let meta = upload_meta(headers, input.metadata, input.tagging.as_deref())?;
    let upload_id = multipart::create(&bucket.volume, &input.key, meta).await?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload_id),
        ..Default::default()
    }))
}

pub async fn upload_part(gateway: &Gateway, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let bucket = gateway.bucket(&input.bucket, &user, AccessLevel::Write).await?;
    multipart::check_part_number(input.part_number)?;
    let upload = multipart::open(&bucket.volume, &input.key, &input.upload_id).await?;
    let body = input.body.map(|b| b.boxed()).unwrap_or_else(|| futures::stream::empty().boxed());
    let part =
        multipart::put_part(&bucket.volume, &upload, input.part_number, body, input.content_md5.as_deref()).await?;
    Ok(S3Response::new(UploadPartOutput { e_tag: Some(etag(&part.etag)), ..Default::default() }))
}

pub async fn upload_part_copy(
    gateway: &Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let (source_bucket, source_key) = copy_source_names(&input.copy_source)?;
    let source = gateway.bucket(source_bucket, &user, AccessLevel::Read).await?;
    let target = gateway.bucket(&input.bucket, &user, AccessLevel::Write).await?;
    multipart::check_part_number(input.part_number)?;
    let upload = multipart::open(&target.volume, &input.key, &input.upload_id).await?;
    let found = objects::find(&source.volume, &ObjectPath::parse(source_key)?).await?;
    check_copy_source(&copy_source_conditions!(input), &found)?;
    let range = copy_range(input.copy_source_range.as_deref(), found.size)?;
    let same_bucket = source.volume.name() == target.volume.name();
    let part = multipart::copy_part(&target.volume, &upload, input.part_number, &found, same_bucket, range).await?;
    let result = CopyPartResult {
        e_tag: Some(etag(&part.etag)),
        last_modified: Some(timestamp(part.mtime_ns)),
        ..Default::default()
    };
    Ok(S3Response::new(UploadPartCopyOutput { copy_part_result: Some(result), ..Default::default() }))
}

/// `bytes=first-last` of an object of `size` bytes, as [start, end); the
/// whole object without one.
fn copy_range(range: Option<&str>, size: u64) -> S3Result<(u64, u64)> {
    let Some(range) = range else { return Ok((0, size)) };
    let invalid = || {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("x-amz-copy-source-range {range:?} is not bytes=first-last within the source's {size} bytes"),
        )
    };
    let (first, last) = range.strip_prefix("bytes=").and_then(|r| r.split_once('-')).ok_or_else(invalid)?;
    let first: u64 = first.trim().parse().map_err(|_| invalid())?;
    let last: u64 = last.trim().parse().map_err(|_| invalid())?;
    if first > last || last >= size {
        return Err(invalid());
    }
    Ok((first, last + 1))
}

pub async fn complete(
    gateway: &Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let bucket = gateway.bucket(&input.bucket, &user, AccessLevel::Write).await?;
    let key = ObjectPath::parse(&input.key)?;
    let upload = multipart::open(&bucket.volume, &input.key, &input.upload_id).await?;
    let chosen: Vec<(i32, String)> = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default()
        .into_iter()
        .map(|p| match (p.part_number, p.e_tag) {
            (Some(number), Some(tag)) => Ok((number, tag.value().to_string())),
            _ => Err(S3Error::with_message(S3ErrorCode::MalformedXML, "every part needs its PartNumber and ETag")),
        })
        .collect::<S3Result<_>>()?;
    let conditions = Conditions { if_match: input.if_match, if_none_match: input.if_none_match, ..Default::default() };
    check_write_conditions(&bucket.volume, &key, &conditions).await?;
    let stored = multipart::complete(&bucket.volume, &upload, &key, &chosen, conditions.create_only()).await?;
    tracing::debug!(
        bucket = input.bucket,
        key = input.key,
        parts = chosen.len(),
        size = stored.size,
        "upload completed"
    );
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        e_tag: Some(etag(&stored.etag)),
        ..Default::default()
    }))
}

pub async fn abort(
    gateway: &Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let bucket = gateway.bucket(&input.bucket, &user, AccessLevel::Write).await?;
    let upload = multipart::open(&bucket.volume, &input.key, &input.upload_id).await?;
    multipart::abort(&bucket.volume, &upload).await?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub async fn list_parts(gateway: &Gateway, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let bucket = gateway.bucket(&input.bucket, &user, AccessLevel::Read).await?;
    let upload = multipart::open(&bucket.volume, &input.key, &input.upload_id).await?;
    let max = page_size(input.max_parts, "max-parts")?;
    let after = input.part_number_marker.unwrap_or(0).max(0);
    let (parts, truncated) = multipart::list_parts(&bucket.volume, &upload, after, max).await?;
    let next = parts.last().map(|p| p.number);
    let parts = parts
        .into_iter()
        .map(|p| Part {
            e_tag: Some(etag(&p.etag)),
            last_modified: Some(timestamp(p.mtime_ns)),
            part_number: Some(p.number),
            size: Some(p.size as i64),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload.id),
        max_parts: Some(max as i32),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next,
        is_truncated: Some(truncated),
        parts: Some(parts),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        ..Default::default()
    }))
}

pub async fn list_uploads(
    gateway: &Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let user = gateway.caller(&req).await?;
    let input = req.input;
    let bucket = gateway.bucket(&input.bucket, &user, AccessLevel::Read).await?;
    let max = page_size(input.max_uploads, "max-uploads")?;
    let all = multipart::all_uploads(&bucket.volume).await?;
    let page = page_of_uploads(
        &all,
        input.prefix.as_deref().unwrap_or(""),
        input.delimiter.as_deref().filter(|d| !d.is_empty()),
        (input.key_marker.as_deref().unwrap_or(""), input.upload_id_marker.as_deref()),
        max,
    );
    let (next_key, next_id) = match page.last.as_ref() {
        Some((key, id)) if page.truncated => (Some(key.clone()), id.clone()),
        _ => (None, None),
    };
    let uploads = page
        .uploads
        .iter()
        .map(|u| MultipartUpload {
            key: Some(u.record.key.clone()),
            upload_id: Some(u.id.clone()),
            initiated: Some(timestamp(u.record.initiated_ns)),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        })
        .collect();
    let prefixes = page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        delimiter: input.delimiter,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        max_uploads: Some(max as i32),
        is_truncated: Some(page.truncated),
        uploads: Some(uploads),
        common_prefixes: Some(prefixes),
        ..Default::default()
    }))
}

/// One page of ListMultipartUploads.
#[derive(Debug, Default)]
struct UploadsPage<'a> {
    uploads: Vec<&'a Upload>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key (and upload id, for an upload) in the page.
    last: Option<(String, Option<String>)>,
}

/// S3's rules over `all` (sorted by key, then id): keys under `prefix`,
/// after the marker (with an upload id marker: that key's later uploads too),
/// rolled up at `delimiter`, `max` entries.
fn page_of_uploads<'a>(
    all: &'a [Upload],
    prefix: &str,
    delimiter: Option<&str>,
    (key_marker, id_marker): (&str, Option<&str>),
    max: usize,
) -> UploadsPage<'a> {
    let mut page = UploadsPage::default();
    for upload in all {
        let key = upload.record.key.as_str();
        let after_marker = match id_marker {
            Some(id) if !key_marker.is_empty() => key > key_marker || (key == key_marker && upload.id.as_str() > id),
            _ => key > key_marker,
        };
        if !key.starts_with(prefix) || !after_marker {
            continue;
        }
        let rolled =
            delimiter.and_then(|d| key[prefix.len()..].find(d).map(|i| key[..prefix.len() + i + d.len()].to_string()));
        if let Some(common) = &rolled
            && (page.prefixes.last() == Some(common) || common.as_str() <= key_marker)
        {
            continue;
        }
        if page.uploads.len() + page.prefixes.len() == max {
            page.truncated = true;
            break;
        }
        match rolled {
            Some(common) => {
                page.last = Some((common.clone(), None));
                page.prefixes.push(common);
            }
            None => {
                page.last = Some((key.to_string(), Some(upload.id.clone())));
                page.uploads.push(upload);
            }
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multipart::UploadRecord;
    use crate::object_meta::ObjectMeta;

    fn upload(key: &str, id: &str) -> Upload {
        Upload { id: id.into(), record: UploadRecord { key: key.into(), initiated_ns: 0, meta: ObjectMeta::default() } }
    }

    fn names(page: &UploadsPage<'_>) -> Vec<String> {
        let mut out: Vec<String> = page.uploads.iter().map(|u| format!("{}#{}", u.record.key, u.id)).collect();
        out.extend(page.prefixes.iter().cloned());
        out
    }

    #[test]
    fn upload_listings_page_by_key_and_id_with_prefixes() {
        let all = vec![upload("a", "1"), upload("a", "2"), upload("b/x", "3"), upload("b/y", "4"), upload("c", "5")];
        let page = page_of_uploads(&all, "", None, ("", None), 2);
        assert_eq!(names(&page), vec!["a#1", "a#2"]);
        assert!(page.truncated);
        assert_eq!(page.last, Some(("a".to_string(), Some("2".to_string()))));
        // Resuming from (key, id) continues inside that key, then past it.
        let page = page_of_uploads(&all, "", None, ("a", Some("1")), 10);
        assert_eq!(names(&page), vec!["a#2", "b/x#3", "b/y#4", "c#5"]);
        assert!(!page.truncated);
        // A key marker alone skips every upload of that key.
        assert_eq!(names(&page_of_uploads(&all, "", None, ("a", None), 10)), vec!["b/x#3", "b/y#4", "c#5"]);
        // A delimiter rolls b/… into one prefix, counted once.
        let page = page_of_uploads(&all, "", Some("/"), ("", None), 2);
        assert_eq!(names(&page), vec!["a#1", "a#2"]);
        let page = page_of_uploads(&all, "", Some("/"), ("a", None), 10);
        assert_eq!(names(&page), vec!["c#5", "b/"]);
        // Resuming after a prefix skips what it rolled up.
        assert_eq!(names(&page_of_uploads(&all, "", Some("/"), ("b/", None), 10)), vec!["c#5"]);
        assert_eq!(names(&page_of_uploads(&all, "b/", None, ("", None), 10)), vec!["b/x#3", "b/y#4"]);
    }

    #[test]
    fn copy_ranges_are_closed_intervals_within_the_source() {
        assert_eq!(copy_range(None, 10).unwrap(), (0, 10));
        assert_eq!(copy_range(Some("bytes=0-9"), 10).unwrap(), (0, 10));
        assert_eq!(copy_range(Some("bytes=3-3"), 10).unwrap(), (3, 4));
        for bad in ["bytes=0-10", "bytes=5-4", "bytes=-3", "0-3", "bytes=a-b"] {
            assert_eq!(*copy_range(Some(bad), 10).unwrap_err().code(), S3ErrorCode::InvalidArgument, "{bad}");
        }
    }
}
