//! Checks on what a CSI request asks for, shared by the controller and the
//! node: volume capabilities, capacity ranges and StorageClass parameters.
//! Each refusal carries the gRPC code the CSI specification gives it.

use std::collections::HashMap;

use strata_common::size::parse_size;
use strata_common::types::Redundancy;
use strata_proto::csi::{self as pb, volume_capability::AccessType, volume_capability::access_mode::Mode};
use tonic::Status;

/// Bytes given to a volume whose request names no capacity.
pub const DEFAULT_CAPACITY: u64 = 10 << 30;

/// Access modes a Strata volume serves: any number of readers and writers
/// on any number of nodes (close-to-open consistency across mounts).
const SUPPORTED_MODES: [Mode; 7] = [
    Mode::SingleNodeWriter,
    Mode::SingleNodeReaderOnly,
    Mode::MultiNodeReaderOnly,
    Mode::MultiNodeSingleWriter,
    Mode::MultiNodeMultiWriter,
    Mode::SingleNodeSingleWriter,
    Mode::SingleNodeMultiWriter,
];

/// Why a capability cannot be served, or `None` when it can.
pub fn unsupported(capability: &pb::VolumeCapability) -> Option<String> {
    match capability.access_type {
        Some(AccessType::Mount(ref mount)) if !mount.fs_type.is_empty() && mount.fs_type != "strata" => {
            return Some(format!(
                "file system type {:?} is not served: Strata volumes are mounted as strata",
                mount.fs_type
            ));
        }
        Some(AccessType::Mount(_)) => {}
        Some(AccessType::Block(_)) => {
            return Some("block volumes are not served: Strata volumes are file systems".into());
        }
        None => return Some("a volume capability names neither a mount nor a block volume".into()),
    }
    let mode = capability.access_mode.as_ref().map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown));
    match mode {
        Some(mode) if SUPPORTED_MODES.contains(&mode) => None,
        Some(mode) => Some(format!("access mode {} is not served", mode.as_str_name())),
        None => Some("a volume capability has no access mode".into()),
    }
}

/// Whether `capability` only ever reads.
pub fn is_reader_only(capability: &pb::VolumeCapability) -> bool {
    let mode = capability.access_mode.as_ref().map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown));
    matches!(mode, Some(Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly))
}

/// A request's list of capabilities: present, and each one served
/// (INVALID_ARGUMENT otherwise, as CreateVolume's spec asks).
pub fn check_capabilities(capabilities: &[pb::VolumeCapability]) -> Result<(), Status> {
    if capabilities.is_empty() {
        return Err(Status::invalid_argument("volume capabilities are missing"));
    }
    match capabilities.iter().find_map(unsupported) {
        Some(why) => Err(Status::invalid_argument(why)),
        None => Ok(()),
    }
}

/// The capacity to give for `range`: the required bytes, else the limit,
/// else [`DEFAULT_CAPACITY`] (within the limit). OUT_OF_RANGE if the range
/// cannot be met, INVALID_ARGUMENT if it is negative.
pub fn capacity_for(range: Option<&pb::CapacityRange>) -> Result<u64, Status> {
    let Some(range) = range else { return Ok(DEFAULT_CAPACITY) };
    let (required, limit) = (range.required_bytes, range.limit_bytes);
    if required < 0 || limit < 0 {
        return Err(Status::invalid_argument("a capacity range is never negative"));
    }
    if limit > 0 && required > limit {
        return Err(Status::out_of_range(format!("{required} bytes are required but at most {limit} allowed")));
    }
    Ok(match (required, limit) {
        (0, 0) => DEFAULT_CAPACITY,
        (0, limit) => DEFAULT_CAPACITY.min(limit as u64),
        (required, _) => required as u64,
    })
}

/// Whether an existing volume of `capacity` bytes satisfies `range`.
pub fn capacity_fits(capacity: u64, range: Option<&pb::CapacityRange>) -> bool {
    let Some(range) = range else { return true };
    let required_ok = range.required_bytes <= 0 || capacity >= range.required_bytes as u64;
    let limit_ok = range.limit_bytes <= 0 || capacity <= range.limit_bytes as u64;
    required_ok && limit_ok
}

/// How PVCs of a StorageClass are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// A Strata volume per PVC, with this redundancy.
    Volume { redundancy: Redundancy },
    /// A directory per PVC in the shared volume `volume`.
    Subdir { volume: String },
}

/// A StorageClass's parameters, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameters {
    pub layout: Layout,
    /// Mount options carried to the node in the volume context.
    pub mount: MountOptions,
}

/// How the node mounts a PVC's volume (StorageClass parameters, carried in
/// the volume context so every node mounts it the same way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// L2 disk cache bytes (`cache-size`), memory cache bytes (`mem-cache`).
    pub cache_size: Option<String>,
    pub mem_cache: Option<String>,
    /// Every publish is read-only (`read-only: "true"`).
    pub read_only: bool,
}

const CONTEXT_CACHE_SIZE: &str = "strata.io/cache-size";
const CONTEXT_MEM_CACHE: &str = "strata.io/mem-cache";
const CONTEXT_READ_ONLY: &str = "strata.io/read-only";

impl MountOptions {
    /// The volume-context entries naming these options.
    pub fn to_context(&self) -> HashMap<String, String> {
        let mut context = HashMap::new();
        if let Some(size) = &self.cache_size {
            context.insert(CONTEXT_CACHE_SIZE.to_string(), size.clone());
        }
        if let Some(size) = &self.mem_cache {
            context.insert(CONTEXT_MEM_CACHE.to_string(), size.clone());
        }
        if self.read_only {
            context.insert(CONTEXT_READ_ONLY.to_string(), "true".to_string());
        }
        context
    }

    /// The options a volume context carries (unknown keys are Kubernetes' own).
    pub fn from_context(context: &HashMap<String, String>) -> Result<MountOptions, Status> {
        let size = |key: &str| -> Result<Option<String>, Status> {
            let Some(value) = context.get(key) else { return Ok(None) };
            parse_size(value).map_err(|e| Status::invalid_argument(format!("{key}: {e}")))?;
            Ok(Some(value.clone()))
        };
        Ok(MountOptions {
            cache_size: size(CONTEXT_CACHE_SIZE)?,
            mem_cache: size(CONTEXT_MEM_CACHE)?,
            read_only: context.get(CONTEXT_READ_ONLY).is_some_and(|v| v == "true"),
        })
    }
}

/// Parameters Kubernetes' sidecars add on their own (PVC name and namespace).
const KUBERNETES_PREFIX: &str = "csi.storage.k8s.io/";

impl Parameters {
    /// Parses a StorageClass's parameters: `mode` (`subdir`, the default,
    /// or `volume`), `volume` (the shared volume of `subdir`, default
    /// `default_volume`), `redundancy` (`replica:N` or `ec:K+M` for `volume`),
    /// `cache-size`, `mem-cache`, `read-only`. Unknown keys are refused.
    pub fn parse(
        parameters: &HashMap<String, String>,
        default_volume: &str,
        default_redundancy: Redundancy,
    ) -> Result<Parameters, Status> {
        let mut mount = MountOptions::default();
        let (mut mode, mut volume, mut redundancy) = (None, None, None);
        for (key, value) in parameters {
            match key.as_str() {
                "mode" => mode = Some(value.as_str()),
                "volume" => volume = Some(value.clone()),
                "redundancy" => {
                    let parsed = value.parse::<Redundancy>();
                    redundancy =
                        Some(parsed.map_err(|e| Status::invalid_argument(format!("redundancy: {}", e.message)))?);
                }
                "cache-size" | "mem-cache" => {
                    parse_size(value).map_err(|e| Status::invalid_argument(format!("{key}: {e}")))?;
                    let slot = if key == "cache-size" { &mut mount.cache_size } else { &mut mount.mem_cache };
                    *slot = Some(value.clone());
                }
                "read-only" => {
                    mount.read_only = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(Status::invalid_argument(format!("read-only is true or false, not {other:?}")));
                        }
                    }
                }
                other if other.starts_with(KUBERNETES_PREFIX) => {}
                other => return Err(Status::invalid_argument(format!("unknown StorageClass parameter {other:?}"))),
            }
        }
        let layout = match mode.unwrap_or("subdir") {
            "subdir" => {
                if redundancy.is_some() {
                    return Err(Status::invalid_argument("redundancy is the shared volume's in mode subdir"));
                }
                Layout::Subdir { volume: volume.unwrap_or_else(|| default_volume.to_string()) }
            }
            "volume" => {
                if volume.is_some() {
                    return Err(Status::invalid_argument("volume names the shared volume of mode subdir"));
                }
                Layout::Volume { redundancy: redundancy.unwrap_or(default_redundancy) }
            }
            other => return Err(Status::invalid_argument(format!("mode is subdir or volume, not {other:?}"))),
        };
        Ok(Parameters { layout, mount })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn capability(mode: Mode, block: bool) -> pb::VolumeCapability {
        let access_type =
            if block { AccessType::Block(BlockVolume {}) } else { AccessType::Mount(MountVolume::default()) };
        pb::VolumeCapability { access_type: Some(access_type), access_mode: Some(AccessMode { mode: mode as i32 }) }
    }

    #[test]
    fn file_system_volumes_in_every_sharing_mode_are_served_and_block_volumes_are_not() {
        assert!(check_capabilities(&[capability(Mode::MultiNodeMultiWriter, false)]).is_ok());
        assert!(check_capabilities(&[capability(Mode::SingleNodeWriter, false)]).is_ok());
        let block = check_capabilities(&[capability(Mode::SingleNodeWriter, true)]).unwrap_err();
        assert_eq!(block.code(), tonic::Code::InvalidArgument);
        assert!(check_capabilities(&[]).is_err());
        assert!(check_capabilities(&[capability(Mode::Unknown, false)]).is_err());
        let mut xfs = capability(Mode::SingleNodeWriter, false);
        xfs.access_type = Some(AccessType::Mount(MountVolume { fs_type: "xfs".into(), ..Default::default() }));
        assert!(unsupported(&xfs).is_some());
        assert!(is_reader_only(&capability(Mode::MultiNodeReaderOnly, false)));
        assert!(!is_reader_only(&capability(Mode::MultiNodeMultiWriter, false)));
    }

    #[test]
    fn capacity_ranges_are_met_or_refused() {
        let range = |required, limit| pb::CapacityRange { required_bytes: required, limit_bytes: limit };
        assert_eq!(capacity_for(None).unwrap(), DEFAULT_CAPACITY);
        assert_eq!(capacity_for(Some(&range(5 << 30, 0))).unwrap(), 5 << 30);
        assert_eq!(capacity_for(Some(&range(0, 1 << 30))).unwrap(), 1 << 30);
        assert_eq!(capacity_for(Some(&range(2, 1))).unwrap_err().code(), tonic::Code::OutOfRange);
        assert_eq!(capacity_for(Some(&range(-1, 0))).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(capacity_fits(5, Some(&range(5, 5))));
        assert!(!capacity_fits(4, Some(&range(5, 0))));
        assert!(!capacity_fits(6, Some(&range(0, 5))));
    }

    #[test]
    fn storage_class_parameters_are_checked() {
        let params = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let replica3: Redundancy = "replica:3".parse().unwrap();
        let parsed = Parameters::parse(&params(&[]), "shared", replica3).unwrap();
        assert_eq!(parsed.layout, Layout::Subdir { volume: "shared".into() });
        let parsed = Parameters::parse(
            &params(&[("mode", "volume"), ("redundancy", "ec:4+2"), ("read-only", "true")]),
            "x",
            replica3,
        )
        .unwrap();
        assert_eq!(parsed.layout, Layout::Volume { redundancy: "ec:4+2".parse().unwrap() });
        assert!(parsed.mount.read_only);
        let with_k8s = params(&[("csi.storage.k8s.io/pvc/name", "data"), ("cache-size", "1GiB")]);
        let parsed = Parameters::parse(&with_k8s, "shared", replica3).unwrap();
        assert_eq!(MountOptions::from_context(&parsed.mount.to_context()).unwrap(), parsed.mount);
        for bad in [
            params(&[("mode", "block")]),
            params(&[("colour", "blue")]),
            params(&[("redundancy", "replica:0")]),
            params(&[("mode", "subdir"), ("redundancy", "replica:3")]),
            params(&[("cache-size", "lots")]),
            params(&[("read-only", "yes")]),
        ] {
            let refused = Parameters::parse(&bad, "shared", replica3).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }
}
