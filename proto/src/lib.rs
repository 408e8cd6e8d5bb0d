//! Wire types of Strata: the protobuf messages and tonic services, and nothing
//! else. Domain types live in `strata-common` and are built from these with
//! validating `TryFrom` conversions, so no other crate trusts a wire value blindly.

pub mod master {
    tonic::include_proto!("strata.master");
}

pub mod raft {
    tonic::include_proto!("strata.raft");
}

pub mod node {
    tonic::include_proto!("strata.node");
}

pub mod meta {
    tonic::include_proto!("strata.meta");
}

pub mod data {
    tonic::include_proto!("strata.data");
}

/// The Container Storage Interface v1 (see `proto/csi.proto`).
pub mod csi {
    tonic::include_proto!("csi.v1");
}
