//! The S3 gateway: Strata's volumes as buckets, for awscli, boto3, rclone
//! and s3fs, built on the sdk's path API ([`strata_sdk::fs::Volume`]) alone.
//!
//! A bucket is a volume and a key is a path in it: an object written through
//! S3 is a file on every mount, and a file written on a mount is an object.
//! Objects are written whole through a temporary and renamed into place, so
//! readers see the old object or the new one; the ETag (MD5) and S3's headers
//! live in one xattr of the file ([`object_meta`]). s3s brings the routing,
//! XML and SigV4; access keys come from the master ([`auth`]).
//!
//! Layout: [`keys`] (which keys a tree can hold), [`listing`] (key-ordered
//! walks with S3's prefix/delimiter/marker rules), [`objects`] (put, get,
//! delete as files), [`multipart`] (uploads as directories of parts, spliced
//! into the object on Complete), [`conditions`] (If-* and ranges), [`gateway`] (buckets
//! and who may use them), `s3_impl`/`list_ops`/`multipart_ops` (the wire side), [`server`].

pub mod access_log;
pub mod auth;
pub mod conditions;
pub mod errors;
pub mod gateway;
pub mod keys;
mod list_ops;
pub mod listing;
pub mod multipart;
mod multipart_ops;
pub mod object_meta;
pub mod objects;
mod s3_impl;
pub mod server;
pub mod stats;
pub mod tls;
pub mod tree;

pub use gateway::{Gateway, GatewayConfig};
pub use server::{ServeOptions, serve};
