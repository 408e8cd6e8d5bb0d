//! Strata errors as S3 errors: the code comes from [`ErrorCode::s3_code`]
//! with what the request was about, the status from [`ErrorCode::http_status`].
//! Internal errors are logged here, where they are turned into answers.

use s3s::{S3Error, S3ErrorCode};
use strata_common::{ErrorCode, S3Subject, StrataError};

/// `error` answered for a request about `subject`.
pub fn to_s3(error: StrataError, subject: S3Subject) -> S3Error {
    let code = S3ErrorCode::from_bytes(error.code.s3_code(subject).as_bytes()).unwrap_or(S3ErrorCode::InternalError);
    if matches!(error.code, ErrorCode::Internal | ErrorCode::Corrupted) {
        tracing::error!(error = %error, "an s3 request failed");
    }
    let mut s3 = S3Error::with_message(code, error.message.clone());
    if let Ok(status) = http::StatusCode::from_u16(error.code.http_status()) {
        s3.set_status_code(status);
    }
    s3
}

/// Shorthands for the subjects of requests.
pub trait S3ResultExt<T> {
    fn for_object(self) -> Result<T, S3Error>;
    fn for_bucket(self) -> Result<T, S3Error>;
    fn for_upload(self) -> Result<T, S3Error>;
}

impl<T> S3ResultExt<T> for Result<T, StrataError> {
    fn for_object(self) -> Result<T, S3Error> {
        self.map_err(|e| to_s3(e, S3Subject::Object))
    }
    fn for_bucket(self) -> Result<T, S3Error> {
        self.map_err(|e| to_s3(e, S3Subject::Bucket))
    }
    fn for_upload(self) -> Result<T, S3Error> {
        self.map_err(|e| to_s3(e, S3Subject::Upload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_the_subject() {
        let missing = || StrataError::not_found("gone");
        let e = to_s3(missing(), S3Subject::Object);
        assert_eq!((e.code().as_str(), e.status_code().map(|s| s.as_u16())), ("NoSuchKey", Some(404)));
        assert_eq!(to_s3(missing(), S3Subject::Bucket).code().as_str(), "NoSuchBucket");
        let e = to_s3(StrataError::new(ErrorCode::InvalidRange, "past the end"), S3Subject::Object);
        assert_eq!((e.code().as_str(), e.status_code().map(|s| s.as_u16())), ("InvalidRange", Some(416)));
        for code in ErrorCode::ALL {
            let e = to_s3(StrataError::new(code, "x"), S3Subject::Object);
            assert_ne!(*e.code(), S3ErrorCode::Custom("".into()), "{code}");
        }
    }
}
