//! One error vocabulary for the whole system. Every failure a client can see is
//! an [`ErrorCode`]; each code knows its errno (FUSE), its S3 error code and
//! HTTP status (the gateway) and its gRPC status code (between nodes), so the
//! surfaces always agree on what went wrong.
//!
//! Rule: a caller decides what to do from the code (and the structured
//! fields of [`StrataError`]), never from the message, which is for people.
//! A reason a caller acts on gets a code of its own.

use std::fmt;

/// gRPC metadata key carrying the address of the Raft leader a follower knows of.
pub const LEADER_METADATA_KEY: &str = "strata-leader";
/// gRPC metadata key carrying the [`ErrorCode`] name, so clients recover the exact code.
pub const CODE_METADATA_KEY: &str = "strata-code";
/// gRPC metadata key carrying the address of a node that could not be reached or hung.
pub const FAILED_NODE_METADATA_KEY: &str = "strata-failed-node";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    /// This replica is not the Raft leader; the error carries the leader's address if known.
    NotLeader,
    /// Not enough live nodes or space to do what was asked.
    NoSpace,
    /// A directory quota's byte or inode limit would be passed (EDQUOT).
    QuotaExceeded,
    /// A rename or link between directories of different quotas (EXDEV, so
    /// `mv` copies instead and the counters stay exact).
    CrossQuota,
    /// The operation cannot run in the current state (e.g. not enough nodes to place replicas).
    FailedPrecondition,
    NotEmpty,
    NotDir,
    IsDir,
    NameTooLong,
    PermissionDenied,
    /// The operation is not allowed on this kind of object (EPERM), e.g. a hard link to a directory.
    NotPermitted,
    /// The requested attribute (xattr) does not exist.
    NoData,
    TooManyLinks,
    /// A lock is held by someone else (EAGAIN from F_SETLK).
    WouldBlock,
    /// A peer could not be reached or did not answer in time; retrying may succeed.
    Unavailable,
    Timeout,
    /// The stored bytes failed their checksum.
    Corrupted,
    /// The operation or this variant of it is not implemented (EOPNOTSUPP).
    NotSupported,
    Internal,
    /// The request named an inode outside the meta partition it was sent to:
    /// the client's view predates a split and must be refreshed.
    WrongPartition,
    /// The operation touches an inode of another meta partition and must run
    /// as a transaction across partitions.
    CrossPartition,
    /// A transaction step met a concurrent change (or a lock held by another
    /// transaction): the whole operation may start over.
    Conflict,
    /// A byte range that does not intersect the object (HTTP 416).
    InvalidRange,
    /// A condition of the request (If-Match, If-None-Match, …) does not hold (HTTP 412).
    PreconditionFailed,
}

/// What an S3 request was about, which decides between codes that POSIX
/// does not tell apart (NoSuchBucket vs NoSuchKey, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Subject {
    /// The service itself (ListBuckets).
    Service,
    /// A bucket the caller does not own.
    Bucket,
    /// A bucket the caller owns (CreateBucket of it again).
    OwnBucket,
    /// An object key.
    Object,
    /// A multipart upload.
    Upload,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 27] = [
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::InvalidArgument,
        ErrorCode::NotLeader,
        ErrorCode::NoSpace,
        ErrorCode::FailedPrecondition,
        ErrorCode::NotEmpty,
        ErrorCode::NotDir,
        ErrorCode::IsDir,
        ErrorCode::NameTooLong,
        ErrorCode::PermissionDenied,
        ErrorCode::NotPermitted,
        ErrorCode::NoData,
        ErrorCode::TooManyLinks,
        ErrorCode::WouldBlock,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Corrupted,
        ErrorCode::NotSupported,
        ErrorCode::Internal,
        ErrorCode::WrongPartition,
        ErrorCode::CrossPartition,
        ErrorCode::Conflict,
        ErrorCode::InvalidRange,
        ErrorCode::PreconditionFailed,
        ErrorCode::QuotaExceeded,
        ErrorCode::CrossQuota,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::NotEmpty => "not_empty",
            ErrorCode::NotDir => "not_dir",
            ErrorCode::IsDir => "is_dir",
            ErrorCode::NameTooLong => "name_too_long",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotPermitted => "not_permitted",
            ErrorCode::NoData => "no_data",
            ErrorCode::TooManyLinks => "too_many_links",
            ErrorCode::WouldBlock => "would_block",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Corrupted => "corrupted",
            ErrorCode::NotSupported => "not_supported",
            ErrorCode::Internal => "internal",
            ErrorCode::WrongPartition => "wrong_partition",
            ErrorCode::CrossPartition => "cross_partition",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidRange => "invalid_range",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::CrossQuota => "cross_quota",
        }
    }

    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The errno a POSIX caller sees.
    pub fn errno(self) -> i32 {
        match self {
            ErrorCode::NotFound => libc::ENOENT,
            ErrorCode::AlreadyExists => libc::EEXIST,
            ErrorCode::InvalidArgument => libc::EINVAL,
            ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::Timeout => libc::EAGAIN,
            ErrorCode::NoSpace => libc::ENOSPC,
            ErrorCode::FailedPrecondition => libc::EINVAL,
            ErrorCode::QuotaExceeded => libc::EDQUOT,
            ErrorCode::NotEmpty => libc::ENOTEMPTY,
            ErrorCode::NotDir => libc::ENOTDIR,
            ErrorCode::IsDir => libc::EISDIR,
            ErrorCode::NameTooLong => libc::ENAMETOOLONG,
            ErrorCode::PermissionDenied => libc::EACCES,
            ErrorCode::NotPermitted => libc::EPERM,
            ErrorCode::NoData => libc::ENODATA,
            ErrorCode::TooManyLinks => libc::EMLINK,
            ErrorCode::WouldBlock => libc::EAGAIN,
            ErrorCode::Corrupted | ErrorCode::Internal => libc::EIO,
            ErrorCode::NotSupported => libc::EOPNOTSUPP,
            // Handled inside the sdk; one that escapes is worth retrying.
            ErrorCode::WrongPartition | ErrorCode::Conflict => libc::EAGAIN,
            ErrorCode::CrossPartition | ErrorCode::CrossQuota => libc::EXDEV,
            ErrorCode::InvalidRange | ErrorCode::PreconditionFailed => libc::EINVAL,
        }
    }

    /// The S3 error code the gateway answers with, for a request about `subject`.
    pub fn s3_code(self, subject: S3Subject) -> &'static str {
        use S3Subject::*;
        match (self, subject) {
            (ErrorCode::NotFound | ErrorCode::NoData, Bucket | OwnBucket | Service) => "NoSuchBucket",
            (ErrorCode::NotFound | ErrorCode::NoData, Upload) => "NoSuchUpload",
            (ErrorCode::NotFound | ErrorCode::NoData, Object) => "NoSuchKey",
            (ErrorCode::AlreadyExists, OwnBucket) => "BucketAlreadyOwnedByYou",
            (ErrorCode::AlreadyExists, Bucket | Service) => "BucketAlreadyExists",
            // An object cannot be where a directory (a non-empty prefix) is, or the reverse.
            (ErrorCode::AlreadyExists | ErrorCode::NotDir | ErrorCode::IsDir, Object | Upload) => "InvalidRequest",
            (ErrorCode::NotEmpty, Bucket | OwnBucket | Service) => "BucketNotEmpty",
            (ErrorCode::NotEmpty, Object | Upload) => "InvalidRequest",
            (ErrorCode::NotDir | ErrorCode::IsDir, _) => "InvalidRequest",
            (ErrorCode::InvalidArgument, Bucket | OwnBucket) => "InvalidBucketName",
            (ErrorCode::InvalidArgument | ErrorCode::NameTooLong, _) => "InvalidArgument",
            (ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::WrongPartition, _) => "ServiceUnavailable",
            (ErrorCode::Conflict, _) => "OperationAborted",
            (ErrorCode::Timeout, _) => "RequestTimeout",
            (ErrorCode::NoSpace | ErrorCode::QuotaExceeded, _) => "QuotaExceeded",
            (ErrorCode::FailedPrecondition | ErrorCode::CrossPartition | ErrorCode::CrossQuota, _) => "InvalidRequest",
            (ErrorCode::PreconditionFailed, _) => "PreconditionFailed",
            (ErrorCode::InvalidRange, _) => "InvalidRange",
            (ErrorCode::PermissionDenied | ErrorCode::NotPermitted, _) => "AccessDenied",
            (ErrorCode::TooManyLinks, _) => "InvalidRequest",
            (ErrorCode::WouldBlock, _) => "SlowDown",
            (ErrorCode::Corrupted | ErrorCode::Internal, _) => "InternalError",
            (ErrorCode::NotSupported, _) => "NotImplemented",
        }
    }

    /// The HTTP status the gateway answers with (S3 pairs each of its codes with one).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::NotFound | ErrorCode::NoData => 404,
            ErrorCode::AlreadyExists | ErrorCode::NotEmpty | ErrorCode::Conflict => 409,
            ErrorCode::InvalidArgument
            | ErrorCode::NameTooLong
            | ErrorCode::NotDir
            | ErrorCode::IsDir
            | ErrorCode::FailedPrecondition
            | ErrorCode::CrossPartition
            | ErrorCode::CrossQuota
            | ErrorCode::TooManyLinks => 400,
            ErrorCode::PermissionDenied | ErrorCode::NotPermitted => 403,
            ErrorCode::NoSpace | ErrorCode::QuotaExceeded => 403,
            ErrorCode::PreconditionFailed => 412,
            ErrorCode::InvalidRange => 416,
            ErrorCode::Timeout => 400,
            ErrorCode::NotSupported => 501,
            ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::WrongPartition | ErrorCode::WouldBlock => 503,
            ErrorCode::Corrupted | ErrorCode::Internal => 500,
        }
    }

    /// The gRPC status code used between nodes and towards admin clients.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::NotFound | ErrorCode::NoData => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::InvalidArgument | ErrorCode::NameTooLong => tonic::Code::InvalidArgument,
            ErrorCode::NotLeader
            | ErrorCode::FailedPrecondition
            | ErrorCode::NotEmpty
            | ErrorCode::NotDir
            | ErrorCode::IsDir
            | ErrorCode::WrongPartition
            | ErrorCode::CrossPartition
            | ErrorCode::CrossQuota
            | ErrorCode::PreconditionFailed => tonic::Code::FailedPrecondition,
            ErrorCode::Conflict => tonic::Code::Aborted,
            ErrorCode::InvalidRange => tonic::Code::OutOfRange,
            ErrorCode::NoSpace | ErrorCode::QuotaExceeded => tonic::Code::ResourceExhausted,
            ErrorCode::PermissionDenied | ErrorCode::NotPermitted => tonic::Code::PermissionDenied,
            ErrorCode::TooManyLinks | ErrorCode::WouldBlock => tonic::Code::FailedPrecondition,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::Corrupted => tonic::Code::DataLoss,
            ErrorCode::NotSupported => tonic::Code::Unimplemented,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// Best guess for a status that did not come from a Strata node. Those
    /// come from the client's own transport: `Unknown` is what a connection
    /// broken mid-call looks like, so it is `Unavailable` (worth retrying).
    fn from_grpc_code(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::Unknown => ErrorCode::Unavailable,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            tonic::Code::ResourceExhausted => ErrorCode::NoSpace,
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => ErrorCode::PermissionDenied,
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Aborted => ErrorCode::Unavailable,
            tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
            tonic::Code::DataLoss => ErrorCode::Corrupted,
            tonic::Code::Unimplemented => ErrorCode::NotSupported,
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error with its code, a message saying what was being done, for
/// [`ErrorCode::NotLeader`] the leader's address when known, and for a node
/// that could not be reached or stopped answering, that node's address (so a
/// client steers around it, however many hops away it failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StrataError {
    pub code: ErrorCode,
    pub message: String,
    pub leader_hint: Option<String>,
    pub failed_node: Option<String>,
}

pub type Result<T, E = StrataError> = std::result::Result<T, E>;

impl StrataError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        StrataError { code, message: message.into(), leader_hint: None, failed_node: None }
    }

    pub fn not_leader(leader_hint: Option<String>) -> Self {
        let message = match &leader_hint {
            Some(addr) => format!("not the leader; the leader is at {addr}"),
            None => "not the leader; no leader is known yet".to_string(),
        };
        StrataError { code: ErrorCode::NotLeader, message, leader_hint, failed_node: None }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }
    pub fn invalid(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, what)
    }
    pub fn internal(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, what)
    }
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, what)
    }

    /// `CrossQuota` (EXDEV) unless quota roots `from` and `to` are the same.
    /// Moving a directory (its subtree) or a file with other names between
    /// directory quotas, or linking across them, would leave the counters
    /// wrong, so it is refused and `mv` copies instead; a file with one name
    /// moves, its counts with it. The sdk checks across partitions, the
    /// metanodes within one.
    pub fn same_quota(from: u64, to: u64) -> Result<()> {
        if from == to {
            return Ok(());
        }
        Err(Self::new(ErrorCode::CrossQuota, format!("quota {from} and quota {to} are different directory quotas")))
    }

    /// The same error, its message prefixed with what was being done.
    pub fn context(mut self, doing: &str) -> Self {
        self.message = format!("{doing}: {}", self.message);
        self
    }

    /// The same error, naming `address` as the node that could not be
    /// reached or did not answer.
    pub fn with_failed_node(mut self, address: &str) -> Self {
        self.failed_node = Some(address.to_string());
        self
    }

    /// Whether a client may retry the same request elsewhere or later.
    pub fn is_retryable(&self) -> bool {
        matches!(self.code, ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::Timeout)
    }
}

impl From<StrataError> for tonic::Status {
    fn from(err: StrataError) -> tonic::Status {
        let mut status = tonic::Status::new(err.code.grpc_code(), err.message);
        let md = status.metadata_mut();
        md.insert(CODE_METADATA_KEY, err.code.name().parse().expect("code names are ascii"));
        if let Some(leader) = err.leader_hint.and_then(|l| l.parse().ok()) {
            md.insert(LEADER_METADATA_KEY, leader);
        }
        if let Some(node) = err.failed_node.and_then(|n| n.parse().ok()) {
            md.insert(FAILED_NODE_METADATA_KEY, node);
        }
        status
    }
}

impl From<tonic::Status> for StrataError {
    fn from(status: tonic::Status) -> StrataError {
        let md = status.metadata();
        let code = md
            .get(CODE_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::from_name)
            .unwrap_or_else(|| ErrorCode::from_grpc_code(status.code()));
        let text = |key: &str| md.get(key).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (leader_hint, failed_node) = (text(LEADER_METADATA_KEY), text(FAILED_NODE_METADATA_KEY));
        StrataError { code, message: status.message().to_string(), leader_hint, failed_node }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc_status() {
        for code in ErrorCode::ALL {
            let err = StrataError::new(code, "doing something");
            let back = StrataError::from(tonic::Status::from(err.clone()));
            assert_eq!(back, err, "{code}");
        }
    }

    #[test]
    fn leader_hint_survives_the_wire() {
        let err = StrataError::not_leader(Some("127.0.0.1:9000".into()));
        let back = StrataError::from(tonic::Status::from(err));
        assert_eq!(back.code, ErrorCode::NotLeader);
        assert_eq!(back.leader_hint.as_deref(), Some("127.0.0.1:9000"));
        assert!(back.is_retryable());
    }

    #[test]
    fn the_failed_node_survives_the_wire_and_context() {
        let err = StrataError::unavailable("no answer").with_failed_node("127.0.0.1:9001").context("writing");
        let back = StrataError::from(tonic::Status::from(err));
        assert_eq!(back.failed_node.as_deref(), Some("127.0.0.1:9001"));
        assert_eq!(back.message, "writing: no answer");
    }

    #[test]
    fn codes_map_to_the_posix_errno() {
        assert_eq!(ErrorCode::NotFound.errno(), libc::ENOENT);
        assert_eq!(ErrorCode::NotEmpty.errno(), libc::ENOTEMPTY);
        assert_eq!(ErrorCode::NameTooLong.errno(), libc::ENAMETOOLONG);
        assert_eq!(ErrorCode::PermissionDenied.s3_code(S3Subject::Object), "AccessDenied");
    }

    #[test]
    fn s3_codes_depend_on_what_the_request_was_about() {
        assert_eq!(ErrorCode::NotFound.s3_code(S3Subject::Bucket), "NoSuchBucket");
        assert_eq!(ErrorCode::NotFound.s3_code(S3Subject::Object), "NoSuchKey");
        assert_eq!(ErrorCode::NotFound.s3_code(S3Subject::Upload), "NoSuchUpload");
        assert_eq!(ErrorCode::AlreadyExists.s3_code(S3Subject::Bucket), "BucketAlreadyExists");
        assert_eq!(ErrorCode::AlreadyExists.s3_code(S3Subject::OwnBucket), "BucketAlreadyOwnedByYou");
        assert_eq!(ErrorCode::NotEmpty.s3_code(S3Subject::Bucket), "BucketNotEmpty");
        assert_eq!(ErrorCode::InvalidRange.s3_code(S3Subject::Object), "InvalidRange");
        assert_eq!(ErrorCode::InvalidRange.http_status(), 416);
        assert_eq!(ErrorCode::PreconditionFailed.s3_code(S3Subject::Object), "PreconditionFailed");
        assert_eq!(ErrorCode::PreconditionFailed.http_status(), 412);
    }

    #[test]
    fn every_code_has_an_errno_an_s3_code_and_an_http_status() {
        let subjects =
            [S3Subject::Service, S3Subject::Bucket, S3Subject::OwnBucket, S3Subject::Object, S3Subject::Upload];
        for code in ErrorCode::ALL {
            assert!(code.errno() > 0, "{code}");
            assert!((300..600).contains(&code.http_status()), "{code}");
            for subject in subjects {
                let s3 = code.s3_code(subject);
                assert!(!s3.is_empty() && s3.chars().all(|c| c.is_ascii_alphanumeric()), "{code} {subject:?}");
            }
            assert_eq!(ErrorCode::from_name(code.name()), Some(code), "{code}");
        }
        let names: std::collections::HashSet<_> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "code names are unique");
    }

    #[test]
    fn foreign_status_gets_a_code_from_its_grpc_code() {
        let err = StrataError::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(err.code, ErrorCode::Unavailable);
        let broken = StrataError::from(tonic::Status::unknown("transport error"));
        assert!(broken.is_retryable(), "a connection broken mid-call is retried");
        let ours = StrataError::from(tonic::Status::from(StrataError::internal("bug")));
        assert!(!ours.is_retryable(), "a node's own internal error is not");
    }
}
