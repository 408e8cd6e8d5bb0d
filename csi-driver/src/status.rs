//! Strata errors as CSI answers: the error code picks the gRPC code (the
//! one mapping in `strata_common::error`), the message says what was being done.

use strata_common::StrataError;
use tonic::Status;

/// `error`, met while `doing`, as a gRPC status.
pub fn from_strata(error: StrataError, doing: &str) -> Status {
    tracing::warn!(error = %error, doing, "csi request failed");
    Status::from(error.context(doing))
}
