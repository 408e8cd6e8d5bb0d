//! What S3 keeps with an object beyond its bytes: the ETag, content headers,
//! user metadata and tags, in one xattr of the file.
//!
//! The ETag is tied to the content version it was computed for
//! ([`strata_sdk::fs::Volume::content_version`]): a file rewritten through a
//! mount has a new version, so its stale ETag is recomputed once (by the
//! first GET or HEAD that sees it) and stored again; listings, which cannot
//! afford a version check per key, trust it while size and mtime agree.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// The xattr holding the record (in the `user.` namespace: a mount's `cp -a`
/// may copy it, and the version check then catches the copy).
pub const XATTR: &[u8] = b"user.strata.s3";
/// The xattr marking directories the gateway made implicitly (removed again
/// when the last object under them is deleted); mount-made ones lack it.
pub const IMPLICIT_DIR_XATTR: &[u8] = b"user.strata.s3.implicit";
/// The xattr marking a directory an S3 client created as a `key/` object.
pub const MARKER_XATTR: &[u8] = b"user.strata.s3.marker";

/// The stored record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Hex MD5 of the content (or of the part MD5s, `-N`, for a multipart object).
    pub etag: String,
    /// The content version the ETag is for.
    pub version: u64,
    /// Size and mtime when the ETag was computed (what listings compare).
    pub size: u64,
    pub mtime_ns: i64,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    /// `x-amz-meta-*` without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
}

/// Content headers given at upload and answered on GET and HEAD.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix: Option<i64>,
}

impl Headers {
    pub fn is_empty(&self) -> bool {
        *self == Headers::default()
    }
}

impl ObjectMeta {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record in `bytes`; `None` if it is not one (e.g. set by hand
    /// through a mount), which then counts as no record.
    pub fn decode(bytes: &[u8]) -> Option<ObjectMeta> {
        serde_json::from_slice(bytes).ok()
    }

    /// Whether the ETag still describes a file of this size and mtime (the
    /// listing check).
    pub fn matches_listing(&self, size: u64, mtime_ns: i64) -> bool {
        !self.etag.is_empty() && self.size == size && self.mtime_ns == mtime_ns
    }
}

/// The ETag a listing gives a file whose content has no computed MD5 yet:
/// derived from what identifies its content, with a `-1` suffix so clients
/// take it for a multipart ETag rather than an MD5 to compare against.
pub fn provisional_etag(ino: u64, size: u64, mtime_ns: i64) -> String {
    let mut md5 = Md5::new();
    md5.update(ino.to_le_bytes());
    md5.update(size.to_le_bytes());
    md5.update(mtime_ns.to_le_bytes());
    format!("{}-1", hex(&md5.finalize()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The ETag of a multipart object: MD5 of the parts' binary MD5s, `-N`.
pub fn multipart_etag(part_etags: &[String]) -> Option<String> {
    let mut md5 = Md5::new();
    for etag in part_etags {
        md5.update(unhex(etag.trim_matches('"'))?);
    }
    Some(format!("{}-{}", hex(&md5.finalize()), part_etags.len()))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_garbage_is_no_record() {
        let mut meta = ObjectMeta { etag: "abc".into(), version: 7, size: 3, mtime_ns: 9, ..Default::default() };
        meta.headers.content_type = Some("text/plain".into());
        meta.user.insert("k".into(), "v".into());
        meta.tags.push(("t".into(), "1".into()));
        assert_eq!(ObjectMeta::decode(&meta.encode()), Some(meta.clone()));
        assert_eq!(ObjectMeta::decode(b"not json"), None);
        assert!(meta.matches_listing(3, 9));
        assert!(!meta.matches_listing(3, 10));
    }

    #[test]
    fn multipart_etags_follow_s3() {
        // Two parts whose MD5s are those of "a" and "b".
        let a = hex(&Md5::digest(b"a"));
        let b = hex(&Md5::digest(b"b"));
        let mut whole = Md5::new();
        whole.update(Md5::digest(b"a"));
        whole.update(Md5::digest(b"b"));
        assert_eq!(multipart_etag(&[a.clone(), format!("\"{b}\"")]), Some(format!("{}-2", hex(&whole.finalize()))));
        assert_eq!(multipart_etag(&["zz".into()]), None);
        assert!(provisional_etag(1, 2, 3).ends_with("-1"));
        assert_ne!(provisional_etag(1, 2, 3), provisional_etag(1, 2, 4));
    }
}
