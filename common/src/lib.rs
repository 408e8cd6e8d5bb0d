//! Pieces every Strata crate shares: the one error-code enum (mapped to errno,
//! S3 error codes and gRPC status), validated domain types built from the wire
//! types, the configuration schema, and small system helpers.

pub mod aligned;
pub mod config;
pub mod error;
pub mod files;
pub mod hash;
pub mod logging;
pub mod net;
pub mod size;
pub mod sys;
pub mod telemetry;
pub mod types;

pub use error::{ErrorCode, Result, S3Subject, StrataError};
