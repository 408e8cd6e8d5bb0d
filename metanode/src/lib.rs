//! The metanode: hosts the meta partitions the master assigns to it, each a
//! Raft group (one RocksDB, one engine thread and one transport for all of
//! them), holding a volume's namespace by inode range: inodes, dentries and
//! xattrs in RocksDB, never all in memory.

mod attrs;
mod blob_deleter;
pub mod delegation;
pub mod extents;
pub mod gc;
mod host;
mod keys;
pub mod locks;
pub mod machine;
mod ops;
pub mod quota;
pub mod read;
mod rename;
mod server;
mod service;
pub mod tx;
mod txn;

pub use machine::MetaMachine;

pub use server::run;
