//! The client side of Strata: the one door to a volume for every front end
//! (the FUSE mount, the S3 gateway, the CSI driver, tools).
//!
//! - [`fs::Volume`]: a volume by paths (resolve, `mkdir -p`, paged listings,
//!   atomic whole-file writes, remove, rename, xattrs);
//! - [`MetaClient`]: the namespace by inodes, routed to meta partitions, with
//!   transactions across partitions and delegations;
//! - [`data`]: blobs on the datanodes, file writes ([`data::file`]) and the
//!   shared reader with its extent window and read-ahead ([`data::reader`]);
//! - [`cache`]: the client's memory and disk block caches;
//! - [`types`]: the sdk's own attribute, entry and extent types;
//! - [`quota`]: directory quotas (a PVC's size) and what statfs reports under one;
//! - [`MasterClient`]: finds and follows the master leader.

pub mod cache;
pub mod data;
pub mod delegation;
pub mod fs;
pub mod fsck;
pub mod meta_client;
mod meta_tx;
pub mod quota;
pub mod trash;
pub mod types;
pub mod warmup;

pub use meta_client::MetaClient;
pub use strata_rpc::MasterClient;
/// The transport below the sdk (shared with the servers), under the names
/// front ends have always used.
pub use strata_rpc::{channels as rpc, master as master_client};
