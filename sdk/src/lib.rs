//! The client side of Strata: how anything outside the master talks to it.
//! [`MasterClient`] finds and follows the master leader; [`node_agent`] is
//! the part of every metanode and datanode that registers with the master,
//! heartbeats and serves the node's identity.

pub mod cache;
pub mod data;
pub mod delegation;
pub mod fsck;
pub mod master_client;
pub mod meta_client;
mod meta_tx;
pub mod node_agent;
pub mod rpc;

pub use master_client::MasterClient;
pub use meta_client::MetaClient;
