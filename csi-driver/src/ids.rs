//! What a CSI volume id names, and how a CSI volume name becomes a Strata
//! name. Ids are opaque to Kubernetes but must stay stable for the life of
//! a PVC, so their format is versioned: `v1:volume:NAME` (a whole volume)
//! or `v1:subdir:VOLUME:DIR` (one directory of a shared volume).

use std::fmt;

use strata_common::hash::Fnv64;
use strata_common::types::validate_volume_name;

/// A PVC's storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VolumeId {
    /// A volume of its own.
    Volume { volume: String },
    /// The directory `/DIR` of the shared volume `volume`.
    Subdir { volume: String, dir: String },
}

impl VolumeId {
    /// Parses an id this driver handed out; `None` for anything else.
    pub fn parse(id: &str) -> Option<VolumeId> {
        let rest = id.strip_prefix("v1:")?;
        if let Some(volume) = rest.strip_prefix("volume:") {
            validate_volume_name(volume).ok()?;
            return Some(VolumeId::Volume { volume: volume.to_string() });
        }
        let (volume, dir) = rest.strip_prefix("subdir:")?.split_once(':')?;
        validate_volume_name(volume).ok()?;
        if !is_plain_dir_name(dir) {
            return None;
        }
        Some(VolumeId::Subdir { volume: volume.to_string(), dir: dir.to_string() })
    }

    /// The Strata volume holding the PVC.
    pub fn volume(&self) -> &str {
        match self {
            VolumeId::Volume { volume } | VolumeId::Subdir { volume, .. } => volume,
        }
    }

    /// The PVC's directory inside its volume (`None`: the whole volume).
    pub fn dir(&self) -> Option<&str> {
        match self {
            VolumeId::Volume { .. } => None,
            VolumeId::Subdir { dir, .. } => Some(dir),
        }
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeId::Volume { volume } => write!(f, "v1:volume:{volume}"),
            VolumeId::Subdir { volume, dir } => write!(f, "v1:subdir:{volume}:{dir}"),
        }
    }
}

/// The Strata volume name for the CSI volume `name`: the name itself when
/// it is a valid volume name (`pvc-<uid>` is), else `csi-` and a hash of it.
pub fn volume_name_for(name: &str) -> String {
    if validate_volume_name(name).is_ok() {
        return name.to_string();
    }
    format!("csi-{:016x}", Fnv64::of(name.as_bytes()))
}

/// The directory name for the CSI volume `name` in a shared volume: the
/// name itself when it is plain, else `csi-` and a hash of it.
pub fn dir_name_for(name: &str) -> String {
    if is_plain_dir_name(name) {
        return name.to_string();
    }
    format!("csi-{:016x}", Fnv64::of(name.as_bytes()))
}

/// Letters, digits, `-`, `_` and `.`, up to 200 bytes, not starting with a dot.
fn is_plain_dir_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_as_what_they_name() {
        for id in [
            VolumeId::Volume { volume: "pvc-1234".into() },
            VolumeId::Subdir { volume: "shared".into(), dir: "pvc-9_a.b".into() },
        ] {
            assert_eq!(VolumeId::parse(&id.to_string()), Some(id));
        }
    }

    #[test]
    fn foreign_or_malformed_ids_name_nothing() {
        for id in [
            "",
            "pvc-1",
            "v1:volume:",
            "v1:volume:Bad_Name",
            "v2:volume:abc",
            "v1:subdir:abc",
            "v1:subdir:abc:..",
            "v1:subdir:abc:a/b",
            "v1:other:abc",
        ] {
            assert_eq!(VolumeId::parse(id), None, "{id}");
        }
    }

    #[test]
    fn names_that_cannot_be_used_as_they_are_are_hashed_stably() {
        assert_eq!(volume_name_for("pvc-3f1c"), "pvc-3f1c");
        let hashed = volume_name_for("My Volume");
        assert!(hashed.starts_with("csi-") && validate_volume_name(&hashed).is_ok());
        assert_eq!(hashed, volume_name_for("My Volume"));
        assert_ne!(hashed, volume_name_for("My Volume 2"));
        assert_eq!(dir_name_for("pvc-3f1c"), "pvc-3f1c");
        assert!(dir_name_for("../etc").starts_with("csi-"));
        assert!(dir_name_for(".hidden").starts_with("csi-"));
    }
}
