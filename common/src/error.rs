//! One error vocabulary for the whole system. Every failure a client can see is
//! an [`ErrorCode`]; each code knows its errno (FUSE), its S3 error code (the
//! gateway) and its gRPC status code (between nodes), so the three surfaces
//! always agree on what went wrong.

use std::fmt;

/// gRPC metadata key carrying the address of the Raft leader a follower knows of.
pub const LEADER_METADATA_KEY: &str = "strata-leader";
/// gRPC metadata key carrying the [`ErrorCode`] name, so clients recover the exact code.
pub const CODE_METADATA_KEY: &str = "strata-code";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    /// This replica is not the Raft leader; the error carries the leader's address if known.
    NotLeader,
    /// Not enough live nodes or space to do what was asked.
    NoSpace,
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
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 20] = [
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
        }
    }

    /// The S3 error code the gateway answers with.
    pub fn s3_code(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NoSuchKey",
            ErrorCode::AlreadyExists => "BucketAlreadyExists",
            ErrorCode::InvalidArgument | ErrorCode::NameTooLong => "InvalidArgument",
            ErrorCode::NotLeader | ErrorCode::Unavailable => "ServiceUnavailable",
            ErrorCode::Timeout => "RequestTimeout",
            ErrorCode::NoSpace => "QuotaExceeded",
            ErrorCode::FailedPrecondition => "PreconditionFailed",
            ErrorCode::NotEmpty => "BucketNotEmpty",
            ErrorCode::NotDir | ErrorCode::IsDir => "InvalidRequest",
            ErrorCode::PermissionDenied | ErrorCode::NotPermitted => "AccessDenied",
            ErrorCode::NoData => "NoSuchKey",
            ErrorCode::TooManyLinks => "InvalidRequest",
            ErrorCode::WouldBlock => "SlowDown",
            ErrorCode::Corrupted | ErrorCode::Internal => "InternalError",
            ErrorCode::NotSupported => "NotImplemented",
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
            | ErrorCode::IsDir => tonic::Code::FailedPrecondition,
            ErrorCode::NoSpace => tonic::Code::ResourceExhausted,
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

/// An error with its code, a message saying what was being done, and for
/// [`ErrorCode::NotLeader`] the leader's address when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StrataError {
    pub code: ErrorCode,
    pub message: String,
    pub leader_hint: Option<String>,
}

pub type Result<T, E = StrataError> = std::result::Result<T, E>;

impl StrataError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        StrataError { code, message: message.into(), leader_hint: None }
    }

    pub fn not_leader(leader_hint: Option<String>) -> Self {
        let message = match &leader_hint {
            Some(addr) => format!("not the leader; the leader is at {addr}"),
            None => "not the leader; no leader is known yet".to_string(),
        };
        StrataError { code: ErrorCode::NotLeader, message, leader_hint }
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

    /// The same error, its message prefixed with what was being done.
    pub fn context(mut self, doing: &str) -> Self {
        self.message = format!("{doing}: {}", self.message);
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
        let leader_hint = md.get(LEADER_METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_string);
        StrataError { code, message: status.message().to_string(), leader_hint }
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
    fn codes_map_to_the_posix_errno() {
        assert_eq!(ErrorCode::NotFound.errno(), libc::ENOENT);
        assert_eq!(ErrorCode::NotEmpty.errno(), libc::ENOTEMPTY);
        assert_eq!(ErrorCode::NameTooLong.errno(), libc::ENAMETOOLONG);
        assert_eq!(ErrorCode::PermissionDenied.s3_code(), "AccessDenied");
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
