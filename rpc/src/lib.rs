//! How Strata's processes reach each other, shared by the client library
//! (`strata-sdk`) and the servers (metanode, datanode, and the coming
//! cachenode) so that neither depends on the other:
//!
//! - [`channels`]: one gRPC channel per address, and [`channels::LeaderRouter`],
//!   which finds and follows the leader of a Raft group with retries and a deadline;
//! - [`master`]: [`MasterClient`], the master's client;
//! - [`framed`]: the framed data protocol (codec, and a pool of client connections);
//! - [`blob_reader`]: reads of blobs from their partition's datanodes,
//!   replicated or erasure-coded, around failed and slow nodes;
//! - [`datanode`]: a datanode's gRPC control calls (delete, list, stats);
//! - [`ec`]: how an erasure-coded blob is cut into shards and rebuilt.

pub mod blob_reader;
pub mod channels;
pub mod datanode;
pub mod ec;
pub mod framed;
pub mod master;

pub use master::MasterClient;
