//! What every Strata server process runs, below the roles (metanode,
//! datanode, and the cachenode to come), so that servers depend on this
//! crate and on `strata-rpc`, never on the client library:
//!
//! - [`agent`]: the node's identity in its data directory, registration and
//!   heartbeats with the master, and the `Node` gRPC service;
//! - [`framed_server`]: the framed protocol's server loop for any
//!   [`framed_server::FramedHandler`], with file ranges sent by sendfile(2),
//!   and one port shared with gRPC.
//!
//! A node's RocksDB is opened by `strata_raftstore::open_db`, which every
//! role with a database already shares.

pub mod agent;
pub mod framed_server;
