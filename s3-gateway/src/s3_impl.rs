//! The S3 operations: s3s's wire types in, the gateway's object and bucket
//! functions called, s3s's wire types out. Anything not here answers
//! NotImplemented (s3s's default).

use std::time::{Duration, UNIX_EPOCH};

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::conditions::{Conditions, Current, byte_range, etag};
use crate::errors::S3ResultExt;
use crate::gateway::{Caller, Gateway};
use crate::keys::ObjectPath;
use crate::object_meta::{Headers, ObjectMeta, XATTR};
use crate::objects::{self, Found, WriteSpec};
use strata_common::types::AccessLevel;

/// Most tags S3 allows on an object.
const MAX_TAGS: usize = 10;

pub(crate) fn timestamp(ns: i64) -> Timestamp {
    let at = if ns >= 0 { UNIX_EPOCH + Duration::from_nanos(ns as u64) } else { UNIX_EPOCH };
    Timestamp::from(at)
}

fn mtime_secs(ns: i64) -> i64 {
    ns.div_euclid(1_000_000_000)
}

pub(crate) fn current(found: &Found) -> Current<'_> {
    Current { etag: Some(&found.meta.etag), mtime_secs: mtime_secs(found.mtime_ns) }
}

/// The content headers an upload gives (PutObject, CopyObject with REPLACE,
/// CreateMultipartUpload: inputs with the same six fields).
macro_rules! content_headers {
    ($input:ident) => {
        Headers {
            content_type: $input.content_type.map(|c| c.to_string()),
            content_encoding: $input.content_encoding,
            content_disposition: $input.content_disposition,
            content_language: $input.content_language,
            cache_control: $input.cache_control,
            expires_unix: crate::s3_impl::expires_unix($input.expires),
        }
    };
}
pub(crate) use content_headers;

/// A write's If-Match / If-None-Match against the object now at `key`.
pub(crate) async fn check_write_conditions(
    volume: &strata_sdk::fs::Volume,
    key: &ObjectPath,
    conditions: &Conditions,
) -> S3Result<()> {
    if conditions.if_match.is_none() && conditions.if_none_match.is_none() {
        return Ok(());
    }
    let existing = match objects::find(volume, key).await {
        Ok(found) => Some(found),
        Err(e) if *e.code() == S3ErrorCode::NoSuchKey => None,
        Err(e) => return Err(e),
    };
    let now = existing.as_ref().map_or(Current { etag: None, mtime_secs: 0 }, current);
    conditions.check_write(now)
}

/// The x-amz-copy-source-if-* conditions of a copy (CopyObject and
/// UploadPartCopy: inputs with the same four fields).
macro_rules! copy_source_conditions {
    ($input:ident) => {
        Conditions {
            if_match: $input.copy_source_if_match,
            if_none_match: $input.copy_source_if_none_match,
            if_modified_since: $input.copy_source_if_modified_since,
            if_unmodified_since: $input.copy_source_if_unmodified_since,
        }
    };
}
pub(crate) use copy_source_conditions;

/// The bucket and key a copy reads from.
pub(crate) fn copy_source_names(source: &CopySource) -> S3Result<(&str, &str)> {
    match source {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket, key)),
        _ => Err(S3Error::with_message(S3ErrorCode::NotImplemented, "copies from access points")),
    }
}

/// A copy's conditions on its source; one that fails is 412, never 304.
pub(crate) fn check_copy_source(conditions: &Conditions, found: &Found) -> S3Result<()> {
    conditions.check_read(current(found)).map_err(|e| match e.code() {
        S3ErrorCode::NotModified => {
            S3Error::with_message(S3ErrorCode::PreconditionFailed, "the source was not modified")
        }
        _ => e,
    })
}

/// Content headers and user metadata given with an upload.
pub(crate) fn upload_meta(headers: Headers, metadata: Option<Metadata>, tagging: Option<&str>) -> S3Result<ObjectMeta> {
    let user = metadata.unwrap_or_default().into_iter().collect();
    let tags = match tagging {
        Some(query) => parse_tagging(query)?,
        None => Vec::new(),
    };
    Ok(ObjectMeta { headers, user, tags, ..ObjectMeta::default() })
}

/// `k1=v1&k2=v2` (the x-amz-tagging header).
fn parse_tagging(query: &str) -> S3Result<Vec<(String, String)>> {
    let tags: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect();
    check_tags(&tags)?;
    Ok(tags)
}

fn check_tags(tags: &[(String, String)]) -> S3Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(S3Error::with_message(S3ErrorCode::InvalidTag, format!("at most {MAX_TAGS} tags")));
    }
    if tags.iter().any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 256) {
        return Err(S3Error::with_message(S3ErrorCode::InvalidTag, "a tag key is 1-128 characters, a value up to 256"));
    }
    Ok(())
}

fn decode_component(s: &str) -> String {
    let bytes = s.replace('+', " ");
    let bytes = bytes.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) =
                bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn expires_unix(expires: Option<Timestamp>) -> Option<i64> {
    expires.map(|t| time::OffsetDateTime::from(t).unix_timestamp())
}

fn expires_timestamp(unix: Option<i64>) -> Option<Timestamp> {
    unix.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok()).map(Timestamp::from)
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let user = self.caller(&req).await?;
        let buckets = self
            .buckets_of(&user)
            .await?
            .into_iter()
            .map(|v| Bucket {
                name: Some(v.name),
                creation_date: Some(timestamp(v.created_at_ms as i64 * 1_000_000)),
                bucket_region: Some(self.config.region.clone()),
            })
            .collect();
        let owner = Owner { display_name: Some(user.user.to_string()), id: Some(user.user.to_string()) };
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), owner: Some(owner), ..Default::default() }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let user = self.caller(&req).await?;
        self.create_bucket(&req.input.bucket, &user.user).await?;
        let location = Some(format!("/{}", req.input.bucket));
        Ok(S3Response::new(CreateBucketOutput { location }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let user = self.caller(&req).await?;
        self.delete_bucket(&req.input.bucket, &user).await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let user = self.caller(&req).await?;
        self.bucket(&req.input.bucket, &user, AccessLevel::Read).await?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(self.config.region.clone()), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let user = self.caller(&req).await?;
        self.bucket(&req.input.bucket, &user, AccessLevel::Read).await?;
        // us-east-1 is answered as no constraint, as S3 does.
        let location_constraint =
            (self.config.region != "us-east-1").then(|| BucketLocationConstraint::from(self.config.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }

    /// Buckets are never versioned: no status, as S3 answers for a bucket
    /// whose versioning was never enabled (rclone and others ask).
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let user = self.caller(&req).await?;
        self.bucket(&req.input.bucket, &user, AccessLevel::Read).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let user = self.caller(&req).await?;
        let input = req.input;
        let bucket = self.bucket(&input.bucket, &user, AccessLevel::Write).await?;
        let key = ObjectPath::parse(&input.key)?;
        let conditions =
            Conditions { if_match: input.if_match, if_none_match: input.if_none_match, ..Default::default() };
        check_write_conditions(&bucket.volume, &key, &conditions).await?;
        let headers = content_headers!(input);
        let meta = upload_meta(headers, input.metadata, input.tagging.as_deref())?;
        let spec = WriteSpec { meta, create_only: conditions.create_only(), content_md5: input.content_md5 };
        let body = input.body.map(|b| b.boxed()).unwrap_or_else(|| futures::stream::empty().boxed());
        let stored = objects::put(&bucket.volume, &key, body, spec).await?;
        let size = stored.size as i64;
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(etag(&stored.etag)), size: Some(size), ..Default::default() }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let user = self.caller(&req).await?;
        let mut input = req.input;
        let conditions = Conditions {
            if_match: input.if_match.take(),
            if_none_match: input.if_none_match.take(),
            if_modified_since: input.if_modified_since.take(),
            if_unmodified_since: input.if_unmodified_since.take(),
        };
        let found = self.find_checked(&user, &input.bucket, &input.key, &conditions).await?;
        let (start, end) = byte_range(input.range.as_ref(), found.size)?;
        let content_range = input.range.map(|_| format!("bytes {start}-{}/{}", end.saturating_sub(1), found.size));
        let body = StreamingBlob::wrap(objects::body(&found, start, end));
        let meta = &found.meta;
        let output = GetObjectOutput {
            body: Some(body),
            content_length: Some((end - start) as i64),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&meta.etag)),
            last_modified: Some(timestamp(found.mtime_ns)),
            content_type: input
                .response_content_type
                .or(meta.headers.content_type.clone())
                .and_then(|c| c.parse().ok()),
            content_encoding: input.response_content_encoding.or(meta.headers.content_encoding.clone()),
            content_disposition: input.response_content_disposition.or(meta.headers.content_disposition.clone()),
            content_language: input.response_content_language.or(meta.headers.content_language.clone()),
            cache_control: input.response_cache_control.or(meta.headers.cache_control.clone()),
            expires: input.response_expires.or(expires_timestamp(meta.headers.expires_unix)),
            metadata: (!meta.user.is_empty()).then(|| meta.user.clone().into_iter().collect()),
            tag_count: (!meta.tags.is_empty()).then_some(meta.tags.len() as i32),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let user = self.caller(&req).await?;
        let mut input = req.input;
        let conditions = Conditions {
            if_match: input.if_match.take(),
            if_none_match: input.if_none_match.take(),
            if_modified_since: input.if_modified_since.take(),
            if_unmodified_since: input.if_unmodified_since.take(),
        };
        let found = self.find_checked(&user, &input.bucket, &input.key, &conditions).await?;
        let meta = &found.meta;
        let output = HeadObjectOutput {
            content_length: Some(found.size as i64),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(etag(&meta.etag)),
            last_modified: Some(timestamp(found.mtime_ns)),
            content_type: meta.headers.content_type.as_deref().and_then(|c| c.parse().ok()),
            content_encoding: meta.headers.content_encoding.clone(),
            content_disposition: meta.headers.content_disposition.clone(),
            content_language: meta.headers.content_language.clone(),
            cache_control: meta.headers.cache_control.clone(),
            expires: expires_timestamp(meta.headers.expires_unix),
            metadata: (!meta.user.is_empty()).then(|| meta.user.clone().into_iter().collect()),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let user = self.caller(&req).await?;
        let bucket = self.bucket(&req.input.bucket, &user, AccessLevel::Write).await?;
        let key = ObjectPath::parse(&req.input.key)?;
        objects::delete(&bucket.volume, &key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let user = self.caller(&req).await?;
        let bucket = self.bucket(&req.input.bucket, &user, AccessLevel::Write).await?;
        let quiet = req.input.delete.quiet.unwrap_or(false);
        if req.input.delete.objects.len() > 1000 {
            return Err(S3Error::with_message(S3ErrorCode::MalformedXML, "at most 1,000 keys per DeleteObjects"));
        }
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in req.input.delete.objects {
            let result = match ObjectPath::parse(&object.key) {
                Ok(key) => objects::delete(&bucket.volume, &key).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject { key: Some(object.key), ..Default::default() }),
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(object.key),
                    message: e.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let user = self.caller(&req).await?;
        let input = req.input;
        let (source_bucket, source_key) = copy_source_names(&input.copy_source)?;
        let source = self.bucket(source_bucket, &user, AccessLevel::Read).await?;
        let target = self.bucket(&input.bucket, &user, AccessLevel::Write).await?;
        let source_path = ObjectPath::parse(source_key)?;
        let target_path = ObjectPath::parse(&input.key)?;
        let found = objects::find(&source.volume, &source_path).await?;
        check_copy_source(&copy_source_conditions!(input), &found)?;
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && source_bucket == input.bucket && source_path == target_path {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "copying an object onto itself needs a metadata change (x-amz-metadata-directive: REPLACE)",
            ));
        }
        let meta = if replace {
            let headers = content_headers!(input);
            upload_meta(headers, input.metadata, None)?
        } else {
            ObjectMeta { headers: found.meta.headers.clone(), user: found.meta.user.clone(), ..Default::default() }
        };
        let tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
            Some("REPLACE") => parse_tagging(input.tagging.as_deref().unwrap_or(""))?,
            _ => found.meta.tags.clone(),
        };
        let spec = WriteSpec { meta: ObjectMeta { tags, ..meta }, ..Default::default() };
        let body = objects::body(&found, 0, found.size).boxed();
        let stored = objects::put(&target.volume, &target_path, body, spec).await?;
        let result = CopyObjectResult {
            e_tag: Some(etag(&stored.etag)),
            last_modified: Some(timestamp(stored.mtime_ns)),
            ..Default::default()
        };
        Ok(S3Response::new(CopyObjectOutput { copy_object_result: Some(result), ..Default::default() }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        crate::multipart_ops::create(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        crate::multipart_ops::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        crate::multipart_ops::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        crate::multipart_ops::complete(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        crate::multipart_ops::abort(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        crate::multipart_ops::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        crate::multipart_ops::list_uploads(self, req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        crate::list_ops::list_objects_v1(self, req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        crate::list_ops::list_objects_v2(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        crate::list_ops::list_object_versions(self, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let user = self.caller(&req).await?;
        let bucket = self.bucket(&req.input.bucket, &user, AccessLevel::Read).await?;
        let key = ObjectPath::parse(&req.input.key)?;
        let found = objects::find(&bucket.volume, &key).await?;
        let tag_set = found.meta.tags.into_iter().map(|(k, v)| Tag { key: Some(k), value: Some(v) }).collect();
        Ok(S3Response::new(GetObjectTaggingOutput { tag_set, version_id: None }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let user = self.caller(&req).await?;
        let input = req.input;
        let bucket = self.bucket(&input.bucket, &user, AccessLevel::Write).await?;
        let key = ObjectPath::parse(&input.key)?;
        let tags: Vec<(String, String)> = input
            .tagging
            .tag_set
            .into_iter()
            .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
            .collect();
        check_tags(&tags)?;
        self.update_meta(&bucket.volume, &key, |meta| meta.tags = tags).await?;
        Ok(S3Response::new(PutObjectTaggingOutput { version_id: None }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let user = self.caller(&req).await?;
        let bucket = self.bucket(&req.input.bucket, &user, AccessLevel::Write).await?;
        let key = ObjectPath::parse(&req.input.key)?;
        self.update_meta(&bucket.volume, &key, |meta| meta.tags.clear()).await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput { version_id: None }))
    }
}

impl Gateway {
    /// The object for a GET or HEAD, once its conditions hold.
    async fn find_checked(&self, user: &Caller, bucket: &str, key: &str, conditions: &Conditions) -> S3Result<Found> {
        let bucket = self.bucket(bucket, user, AccessLevel::Read).await?;
        let key = ObjectPath::parse(key)?;
        let found = objects::find(&bucket.volume, &key).await?;
        conditions.check_read(current(&found))?;
        Ok(found)
    }

    /// Changes the stored record of an existing object.
    async fn update_meta(
        &self,
        volume: &strata_sdk::fs::Volume,
        key: &ObjectPath,
        change: impl FnOnce(&mut ObjectMeta),
    ) -> S3Result<()> {
        let found = objects::find(volume, key).await?;
        let mut meta = found.meta;
        change(&mut meta);
        let ino = volume.stat(&key.path).await.for_object()?.ino;
        volume.meta().set_xattr(ino, XATTR, &meta.encode(), 0).await.for_object()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagging_headers_are_parsed_and_checked() {
        assert_eq!(
            parse_tagging("a=1&b%20c=x+y").unwrap(),
            vec![("a".to_string(), "1".to_string()), ("b c".to_string(), "x y".to_string())]
        );
        let many = (0..11).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join("&");
        assert_eq!(*parse_tagging(&many).unwrap_err().code(), S3ErrorCode::InvalidTag);
        assert_eq!(*parse_tagging("=v").unwrap_err().code(), S3ErrorCode::InvalidTag);
    }
}
