//! Validated domain types, built from wire types with `TryFrom` on the receiving
//! side so that no handler works with an unchecked value.

use std::fmt;
use std::str::FromStr;

use strata_proto::master as pb;

use crate::error::{Result, StrataError};

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeRole {
    Master,
    Metanode,
    Datanode,
    Cachenode,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Master => "master",
            NodeRole::Metanode => "metanode",
            NodeRole::Datanode => "datanode",
            NodeRole::Cachenode => "cachenode",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeRole {
    type Err = StrataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "master" => Ok(NodeRole::Master),
            "metanode" => Ok(NodeRole::Metanode),
            "datanode" => Ok(NodeRole::Datanode),
            "cachenode" => Ok(NodeRole::Cachenode),
            other => Err(StrataError::invalid(format!("unknown node role {other:?}"))),
        }
    }
}

impl TryFrom<i32> for NodeRole {
    type Error = StrataError;
    fn try_from(value: i32) -> Result<Self> {
        match pb::NodeRole::try_from(value) {
            Ok(pb::NodeRole::Master) => Ok(NodeRole::Master),
            Ok(pb::NodeRole::Metanode) => Ok(NodeRole::Metanode),
            Ok(pb::NodeRole::Datanode) => Ok(NodeRole::Datanode),
            Ok(pb::NodeRole::Cachenode) => Ok(NodeRole::Cachenode),
            _ => Err(StrataError::invalid(format!("node role {value} is not a known role"))),
        }
    }
}

impl From<NodeRole> for pb::NodeRole {
    fn from(role: NodeRole) -> pb::NodeRole {
        match role {
            NodeRole::Master => pb::NodeRole::Master,
            NodeRole::Metanode => pb::NodeRole::Metanode,
            NodeRole::Datanode => pb::NodeRole::Datanode,
            NodeRole::Cachenode => pb::NodeRole::Cachenode,
        }
    }
}

/// Most replicas or shards a partition may have; bounded by what a cluster can place.
pub const MAX_PARTITION_WIDTH: u32 = 32;

/// How a volume protects its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Redundancy {
    /// N full copies on N datanodes.
    Replicated { replicas: u32 },
    /// Reed-Solomon: K data shards and M parity shards on K+M datanodes.
    ErasureCoded { data: u32, parity: u32 },
}

impl Redundancy {
    /// `replica:N` or `ec:K+M` of a wire redundancy; `None` if absent or invalid.
    pub fn name_of(wire: Option<&pb::Redundancy>) -> Option<String> {
        wire.and_then(|r| Redundancy::try_from(r).ok()).map(|r| r.to_string())
    }

    /// How many datanodes one data partition spans.
    pub fn width(self) -> u32 {
        match self {
            Redundancy::Replicated { replicas } => replicas,
            Redundancy::ErasureCoded { data, parity } => data + parity,
        }
    }

    /// Raw bytes stored per byte of data (3.0 for three replicas, 1.5 for ec:4+2).
    pub fn raw_per_logical(self) -> f64 {
        match self {
            Redundancy::Replicated { replicas } => f64::from(replicas),
            Redundancy::ErasureCoded { data, parity } => f64::from(data + parity) / f64::from(data),
        }
    }

    pub fn validate(self) -> Result<Self> {
        let ok = match self {
            Redundancy::Replicated { replicas } => (1..=MAX_PARTITION_WIDTH).contains(&replicas),
            Redundancy::ErasureCoded { data, parity } => {
                data >= 1 && parity >= 1 && data + parity <= MAX_PARTITION_WIDTH
            }
        };
        if ok {
            Ok(self)
        } else {
            Err(StrataError::invalid(format!(
                "redundancy {self} is out of range (1..={MAX_PARTITION_WIDTH} replicas, or K>=1, M>=1, K+M<={MAX_PARTITION_WIDTH})"
            )))
        }
    }
}

impl fmt::Display for Redundancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Redundancy::Replicated { replicas } => write!(f, "replica:{replicas}"),
            Redundancy::ErasureCoded { data, parity } => write!(f, "ec:{data}+{parity}"),
        }
    }
}

impl FromStr for Redundancy {
    type Err = StrataError;
    /// Parses `replica:N` or `ec:K+M`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || StrataError::invalid(format!("redundancy {s:?} is not replica:N or ec:K+M"));
        let parsed = if let Some(n) = s.strip_prefix("replica:") {
            Redundancy::Replicated { replicas: n.parse().map_err(|_| bad())? }
        } else if let Some(km) = s.strip_prefix("ec:") {
            let (k, m) = km.split_once('+').ok_or_else(bad)?;
            Redundancy::ErasureCoded { data: k.parse().map_err(|_| bad())?, parity: m.parse().map_err(|_| bad())? }
        } else {
            return Err(bad());
        };
        parsed.validate()
    }
}

impl TryFrom<&pb::Redundancy> for Redundancy {
    type Error = StrataError;
    fn try_from(value: &pb::Redundancy) -> Result<Self> {
        let parsed = match &value.scheme {
            Some(pb::redundancy::Scheme::Replicated(r)) => Redundancy::Replicated { replicas: r.replicas },
            Some(pb::redundancy::Scheme::ErasureCoded(ec)) => {
                Redundancy::ErasureCoded { data: ec.data_shards, parity: ec.parity_shards }
            }
            None => return Err(StrataError::invalid("redundancy is missing")),
        };
        parsed.validate()
    }
}

impl From<Redundancy> for pb::Redundancy {
    fn from(r: Redundancy) -> pb::Redundancy {
        let scheme = match r {
            Redundancy::Replicated { replicas } => pb::redundancy::Scheme::Replicated(pb::Replicated { replicas }),
            Redundancy::ErasureCoded { data, parity } => {
                pb::redundancy::Scheme::ErasureCoded(pb::ErasureCoded { data_shards: data, parity_shards: parity })
            }
        };
        pb::Redundancy { scheme: Some(scheme) }
    }
}

/// Checks a volume name. Volumes are S3 buckets too, so the S3 bucket rules
/// apply: 3 to 63 characters of lowercase letters, digits and hyphens, starting
/// and ending with a letter or digit.
pub fn validate_volume_name(name: &str) -> Result<()> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let valid_ends = name.bytes().next().is_some_and(|b| b != b'-') && name.bytes().last().is_some_and(|b| b != b'-');
    if (3..=63).contains(&name.len()) && valid_chars && valid_ends {
        return Ok(());
    }
    Err(StrataError::invalid(format!(
        "volume name {name:?} must be 3-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen"
    )))
}

/// Checks a user name: 1 to 64 characters of letters, digits, '-', '_' or '.'.
pub fn validate_user_name(name: &str) -> Result<()> {
    let valid = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(StrataError::invalid(format!("user name {name:?} must be 1-64 letters, digits, '-', '_' or '.'")))
    }
}

/// What an access key other than the owner's may do with a bucket, weakest
/// first (a level includes those below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// List and read objects.
    Read,
    /// Also write and delete objects, and run multipart uploads.
    Write,
    /// Everything the owner may do, deleting the bucket included.
    Owner,
}

impl AccessLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Read => "read",
            AccessLevel::Write => "write",
            AccessLevel::Owner => "owner",
        }
    }

    /// The level a wire grant carries; `None` for GRANT_NONE (no access).
    pub fn from_wire(level: i32) -> Result<Option<AccessLevel>> {
        match pb::GrantLevel::try_from(level) {
            Ok(pb::GrantLevel::GrantNone) => Ok(None),
            Ok(pb::GrantLevel::GrantRead) => Ok(Some(AccessLevel::Read)),
            Ok(pb::GrantLevel::GrantWrite) => Ok(Some(AccessLevel::Write)),
            Ok(pb::GrantLevel::GrantOwner) => Ok(Some(AccessLevel::Owner)),
            Err(_) => Err(StrataError::invalid(format!("unknown grant level {level}"))),
        }
    }

    /// What `user` holding a key granted `granted` may do on a volume owned
    /// by `owner`: everything when the volume has no owner or is the user's,
    /// else what the key was granted. The one rule for S3 and CSI.
    pub fn on_volume(owner: &str, user: &str, granted: Option<AccessLevel>) -> Option<AccessLevel> {
        if owner.is_empty() || owner == user {
            return Some(AccessLevel::Owner);
        }
        granted
    }

    pub fn to_wire(level: Option<AccessLevel>) -> pb::GrantLevel {
        match level {
            None => pb::GrantLevel::GrantNone,
            Some(AccessLevel::Read) => pb::GrantLevel::GrantRead,
            Some(AccessLevel::Write) => pb::GrantLevel::GrantWrite,
            Some(AccessLevel::Owner) => pb::GrantLevel::GrantOwner,
        }
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a client trusts a partition's delegations (see the metanode's
/// `delegation` module) after the send of its last confirmed renewal; the
/// longest a change waits for a holder that stopped answering.
pub const DELEGATION_LEASE: std::time::Duration = std::time::Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redundancy_parses_and_prints() {
        for text in ["replica:3", "replica:1", "ec:4+2", "ec:6+3"] {
            let r: Redundancy = text.parse().unwrap();
            assert_eq!(r.to_string(), text);
        }
        assert_eq!("ec:4+2".parse::<Redundancy>().unwrap().width(), 6);
    }

    #[test]
    fn redundancy_rejects_nonsense() {
        for text in ["replica:0", "ec:0+2", "ec:4+0", "ec:4", "raid5", "replica:x", "ec:30+3"] {
            assert!(text.parse::<Redundancy>().is_err(), "{text}");
        }
    }

    #[test]
    fn redundancy_round_trips_through_the_wire() {
        let r = Redundancy::ErasureCoded { data: 4, parity: 2 };
        let wire = pb::Redundancy::from(r);
        assert_eq!(Redundancy::try_from(&wire).unwrap(), r);
        assert!(Redundancy::try_from(&pb::Redundancy { scheme: None }).is_err());
    }

    #[test]
    fn volume_names_follow_bucket_rules() {
        validate_volume_name("data-2026").unwrap();
        for bad in ["ab", "Data", "-abc", "abc-", "a_b_c", &"x".repeat(64)] {
            assert!(validate_volume_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_levels_order_and_round_trip_through_the_wire() {
        assert!(AccessLevel::Read < AccessLevel::Write && AccessLevel::Write < AccessLevel::Owner);
        for level in [None, Some(AccessLevel::Read), Some(AccessLevel::Write), Some(AccessLevel::Owner)] {
            assert_eq!(AccessLevel::from_wire(AccessLevel::to_wire(level) as i32).unwrap(), level);
        }
        assert!(AccessLevel::from_wire(17).is_err());
    }

    #[test]
    fn roles_round_trip() {
        for role in [NodeRole::Master, NodeRole::Metanode, NodeRole::Datanode, NodeRole::Cachenode] {
            assert_eq!(role.as_str().parse::<NodeRole>().unwrap(), role);
            assert_eq!(NodeRole::try_from(pb::NodeRole::from(role) as i32).unwrap(), role);
        }
        assert!(NodeRole::try_from(0).is_err());
    }
}
