//! A volume as the [`Tree`] listings walk: regular files are objects,
//! directories hold keys; other kinds (symlinks, devices) and the volume's
//! hidden root entries are not in S3's view.

use async_trait::async_trait;
use strata_common::{ErrorCode, Result};
use strata_sdk::fs::{ROOT_INO, Volume};
use strata_sdk::types::FileKind;

use crate::keys::RESERVED_PREFIX;
use crate::listing::{Node, Tree};
use crate::object_meta::MARKER_XATTR;

pub struct VolumeTree<'v>(pub &'v Volume);

#[async_trait]
impl Tree for VolumeTree<'_> {
    async fn page(&self, dir: u64, after: &[u8], limit: u32) -> Result<(Vec<Node>, Option<Vec<u8>>)> {
        let page = self.0.list_dir(dir, after, limit).await?;
        let nodes = page
            .entries
            .into_iter()
            .filter(|e| !(dir == ROOT_INO && e.name.starts_with(RESERVED_PREFIX)))
            .filter_map(|e| {
                let attr = e.attr?;
                let is_dir = match attr.kind {
                    FileKind::Dir => true,
                    FileKind::File => false,
                    _ => return None,
                };
                Some(Node { name: e.name, ino: e.ino, is_dir, size: attr.size, mtime_ns: attr.mtime_ns })
            })
            .collect();
        Ok((nodes, page.next))
    }

    async fn dir(&self, path: &[u8]) -> Result<Option<Node>> {
        match self.0.stat(path).await {
            Ok(attr) if attr.is_dir() => {
                let name = path.strip_suffix(b"/").unwrap_or(path);
                let name = name.rsplit(|b| *b == b'/').next().unwrap_or_default().to_vec();
                Ok(Some(Node { name, ino: attr.ino, is_dir: true, size: attr.size, mtime_ns: attr.mtime_ns }))
            }
            Ok(_) => Ok(None),
            Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::NotDir | ErrorCode::InvalidArgument) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn is_marker(&self, dir: &Node) -> Result<bool> {
        match self.0.meta().get_xattr(dir.ino, MARKER_XATTR).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.code, ErrorCode::NoData | ErrorCode::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
