//! Small JSON state files (a node's identity, a dev cluster's description):
//! read if present, replaced atomically, durably when it matters.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, StrataError};

/// Reads and parses `path`; `None` if it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StrataError::invalid(format!("parsing {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StrataError::internal(format!("reading {}: {e}", path.display()))),
    }
}

/// Replaces `path` with `value` as pretty JSON through a temporary file and a
/// rename, so readers see the old or the new file, never half of one. With
/// `durable`, the file and its directory are fsynced before returning.
pub fn write_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| StrataError::internal(format!("encoding {}: {e}", path.display())))?;
    write_atomic(path, &bytes, durable)
}

/// Replaces `path` with `bytes` through a temporary file and a rename (see
/// [`write_json`]).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let io = |what: &str, e: std::io::Error| StrataError::internal(format!("{what} {}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(|e| io("creating a temporary file for", e))?;
    file.write_all(bytes).map_err(|e| io("writing", e))?;
    if durable {
        file.sync_all().map_err(|e| io("syncing", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io("replacing", e))?;
    if durable {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the directory of", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_none_and_written_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), None);
        write_json(&path, &vec![1u32, 2], true).unwrap();
        write_json(&path, &vec![3u32], false).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&path).unwrap(), Some(vec![3]));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(read_json::<Vec<u32>>(&path).is_err());
    }
}
