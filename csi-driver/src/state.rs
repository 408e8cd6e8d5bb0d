//! What the node plugin has staged and published, kept as one JSON file
//! per staging path under its state directory: a restarted plugin reads
//! them back to adopt the mounts it made (and repair broken ones).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_common::files::{read_json, write_json};
use strata_common::hash::Fnv64;

use crate::ids::VolumeId;
use crate::request::MountOptions;

/// One staged PVC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub volume_id: String,
    pub volume: String,
    /// The PVC's directory in `volume` (`None`: all of it).
    pub dir: Option<String>,
    pub staging_path: PathBuf,
    pub cache_size: Option<String>,
    pub mem_cache: Option<String>,
    /// The StorageClass makes every publish read-only.
    pub read_only: bool,
    /// Published paths, each with whether it is read-only.
    pub targets: BTreeMap<PathBuf, bool>,
}

impl Staged {
    pub fn new(id: &VolumeId, staging_path: &Path, options: &MountOptions) -> Staged {
        Staged {
            volume_id: id.to_string(),
            volume: id.volume().to_string(),
            dir: id.dir().map(str::to_string),
            staging_path: staging_path.to_path_buf(),
            cache_size: options.cache_size.clone(),
            mem_cache: options.mem_cache.clone(),
            read_only: options.read_only,
            targets: BTreeMap::new(),
        }
    }

    pub fn options(&self) -> MountOptions {
        MountOptions {
            cache_size: self.cache_size.clone(),
            mem_cache: self.mem_cache.clone(),
            read_only: self.read_only,
        }
    }
}

/// The records of one state directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn open(state_dir: &Path) -> anyhow::Result<Records> {
        let dir = state_dir.join("staged");
        std::fs::create_dir_all(&dir)?;
        Ok(Records { dir })
    }

    fn file(&self, staging_path: &Path) -> PathBuf {
        self.dir.join(format!("{:016x}.json", Fnv64::of(staging_path.as_os_str().as_encoded_bytes())))
    }

    pub fn get(&self, staging_path: &Path) -> anyhow::Result<Option<Staged>> {
        let found: Option<Staged> = read_json(&self.file(staging_path))?;
        // A hash collision names another path: not this one's record.
        Ok(found.filter(|s| s.staging_path == staging_path))
    }

    /// Writes `staged` durably (it must survive a crash of the node).
    pub fn put(&self, staged: &Staged) -> anyhow::Result<()> {
        Ok(write_json(&self.file(&staged.staging_path), staged, true)?)
    }

    pub fn remove(&self, staging_path: &Path) -> anyhow::Result<()> {
        match std::fs::remove_file(self.file(staging_path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Every record, in no particular order (unreadable files are skipped and logged).
    pub fn all(&self) -> anyhow::Result<Vec<Staged>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match read_json::<Staged>(&path) {
                Ok(Some(staged)) => out.push(staged),
                Ok(None) => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable staging record"),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_are_found_by_staging_path() {
        let state = tempfile::tempdir().unwrap();
        let records = Records::open(state.path()).unwrap();
        let id = VolumeId::Subdir { volume: "shared".into(), dir: "pvc-1".into() };
        let mut staged = Staged::new(&id, Path::new("/var/lib/kubelet/x/globalmount"), &MountOptions::default());
        staged.targets.insert("/pods/a".into(), true);
        records.put(&staged).unwrap();
        let reopened = Records::open(state.path()).unwrap();
        assert_eq!(reopened.get(&staged.staging_path).unwrap(), Some(staged.clone()));
        assert_eq!(reopened.all().unwrap(), vec![staged.clone()]);
        assert_eq!(reopened.get(Path::new("/elsewhere")).unwrap(), None);
        reopened.remove(&staged.staging_path).unwrap();
        reopened.remove(&staged.staging_path).unwrap();
        assert!(reopened.all().unwrap().is_empty());
    }
}
