//! Conditional requests (If-Match, If-None-Match, If-Modified-Since,
//! If-Unmodified-Since) and byte ranges, decided against an object's ETag
//! and mtime the way RFC 9110 orders them.

use s3s::dto::{ETag, ETagCondition, Range, Timestamp};
use s3s::{S3Error, S3ErrorCode};

/// The conditions of one request.
#[derive(Debug, Default)]
pub struct Conditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

/// What the object is compared by.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// `None`: there is no object.
    pub etag: Option<&'a str>,
    pub mtime_secs: i64,
}

impl Conditions {
    /// Checks a read (GET, HEAD): 412 PreconditionFailed or 304 NotModified.
    pub fn check_read(&self, current: Current<'_>) -> Result<(), S3Error> {
        if let Some(condition) = &self.if_match {
            if !matches(condition, current.etag) {
                return Err(precondition_failed("If-Match"));
            }
        } else if let Some(since) = &self.if_unmodified_since
            && current.mtime_secs > unix_secs(since)
        {
            return Err(precondition_failed("If-Unmodified-Since"));
        }
        if let Some(condition) = &self.if_none_match {
            if matches(condition, current.etag) {
                return Err(S3Error::new(S3ErrorCode::NotModified));
            }
        } else if let Some(since) = &self.if_modified_since
            && current.mtime_secs <= unix_secs(since)
        {
            return Err(S3Error::new(S3ErrorCode::NotModified));
        }
        Ok(())
    }

    /// Checks a write (PUT): If-Match needs the object as it is now,
    /// If-None-Match: * needs no object (checked again atomically at the
    /// rename; see the caller).
    pub fn check_write(&self, current: Current<'_>) -> Result<(), S3Error> {
        if let Some(condition) = &self.if_match
            && !matches(condition, current.etag)
        {
            return Err(precondition_failed("If-Match"));
        }
        if let Some(condition) = &self.if_none_match
            && matches(condition, current.etag)
        {
            return Err(precondition_failed("If-None-Match"));
        }
        Ok(())
    }

    /// Whether the write must not replace an existing object.
    pub fn create_only(&self) -> bool {
        self.if_none_match.as_ref().is_some_and(ETagCondition::is_any)
    }
}

fn matches(condition: &ETagCondition, etag: Option<&str>) -> bool {
    let Some(etag) = etag else { return false };
    match condition.as_etag() {
        None => true, // `*`: any existing object
        Some(wanted) => wanted.value() == etag,
    }
}

fn unix_secs(timestamp: &Timestamp) -> i64 {
    time::OffsetDateTime::from(timestamp.clone()).unix_timestamp()
}

fn precondition_failed(which: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::PreconditionFailed, format!("the {which} condition does not hold"))
}

/// The byte range a request asks for in an object of `size` bytes (the
/// whole object without a Range header): start, end (exclusive).
pub fn byte_range(range: Option<&Range>, size: u64) -> Result<(u64, u64), S3Error> {
    let Some(range) = range else { return Ok((0, size)) };
    match range.check(size) {
        Ok(r) => Ok((r.start, r.end)),
        Err(_) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRange,
            format!("the range {} is not satisfiable for an object of {size} bytes", range.to_header_string()),
        )),
    }
}

/// An ETag as S3 answers it (quoted on the wire by s3s).
pub fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from(time::OffsetDateTime::from_unix_timestamp(secs).unwrap())
    }

    fn tag(v: &str) -> ETagCondition {
        ETagCondition::ETag(etag(v))
    }

    #[test]
    fn reads_follow_rfc_9110_order() {
        let now = Current { etag: Some("abc"), mtime_secs: 100 };
        let ok = |c: Conditions| c.check_read(now).map_err(|e| e.code().as_str().to_string());
        assert_eq!(ok(Conditions::default()), Ok(()));
        assert_eq!(ok(Conditions { if_match: Some(tag("abc")), ..Default::default() }), Ok(()));
        assert_eq!(ok(Conditions { if_match: Some(tag("x")), ..Default::default() }), Err("PreconditionFailed".into()));
        // If-Match wins over a failing If-Unmodified-Since.
        let both = Conditions { if_match: Some(tag("abc")), if_unmodified_since: Some(ts(50)), ..Default::default() };
        assert_eq!(ok(both), Ok(()));
        assert_eq!(
            ok(Conditions { if_unmodified_since: Some(ts(50)), ..Default::default() }),
            Err("PreconditionFailed".into())
        );
        assert_eq!(ok(Conditions { if_none_match: Some(tag("abc")), ..Default::default() }), Err("NotModified".into()));
        assert_eq!(
            ok(Conditions { if_none_match: Some(ETagCondition::Any), ..Default::default() }),
            Err("NotModified".into())
        );
        assert_eq!(
            ok(Conditions { if_modified_since: Some(ts(100)), ..Default::default() }),
            Err("NotModified".into())
        );
        assert_eq!(ok(Conditions { if_modified_since: Some(ts(99)), ..Default::default() }), Ok(()));
        // If-None-Match decides alone when present.
        let both = Conditions { if_none_match: Some(tag("x")), if_modified_since: Some(ts(200)), ..Default::default() };
        assert_eq!(ok(both), Ok(()));
    }

    #[test]
    fn writes_check_the_object_as_it_is() {
        let none = Current { etag: None, mtime_secs: 0 };
        let some = Current { etag: Some("abc"), mtime_secs: 0 };
        let create_only = Conditions { if_none_match: Some(ETagCondition::Any), ..Default::default() };
        assert!(create_only.create_only());
        assert!(create_only.check_write(none).is_ok());
        assert_eq!(create_only.check_write(some).unwrap_err().code().as_str(), "PreconditionFailed");
        let if_match = Conditions { if_match: Some(tag("abc")), ..Default::default() };
        assert!(if_match.check_write(some).is_ok());
        assert!(if_match.check_write(none).is_err());
    }

    #[test]
    fn ranges_are_checked_against_the_size() {
        assert_eq!(byte_range(None, 10).unwrap(), (0, 10));
        assert_eq!(byte_range(Some(&Range::Int { first: 2, last: Some(4) }), 10).unwrap(), (2, 5));
        assert_eq!(byte_range(Some(&Range::Int { first: 8, last: None }), 10).unwrap(), (8, 10));
        assert_eq!(byte_range(Some(&Range::Suffix { length: 3 }), 10).unwrap(), (7, 10));
        let err = byte_range(Some(&Range::Int { first: 10, last: None }), 10).unwrap_err();
        assert_eq!(err.code().as_str(), "InvalidRange");
    }
}
