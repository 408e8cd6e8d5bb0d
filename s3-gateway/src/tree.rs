//! A volume as the [`Tree`] listings walk: regular files are objects,
//! directories hold keys; other kinds (symlinks, devices) and the volume's
//! hidden root entries are not in S3's view.

use async_trait::async_trait;
use strata_common::{ErrorCode, Result};
use strata_sdk::fs::{ROOT_INO, Volume};
use strata_sdk::types::FileKind;

use crate::keys::RESERVED_PREFIX;
use crate::listing::{Node, Tree};
use crate::object_meta::{MARKER_XATTR, ObjectMeta, XATTR, provisional_etag};
use crate::objects::EMPTY_MD5;

pub struct VolumeTree<'v>(pub &'v Volume);

#[async_trait]
impl Tree for VolumeTree<'_> {
    async fn page(&self, dir: u64, after: &[u8], limit: u32) -> Result<(Vec<Node>, Option<Vec<u8>>)> {
        let page = self.0.list_dir_with(dir, after, limit, XATTR).await?;
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
                let etag = listed_etag(
                    e.ino,
                    is_dir,
                    attr.size,
                    attr.mtime_ns,
                    e.xattr.as_deref().and_then(ObjectMeta::decode),
                );
                Some(Node {
                    name: e.name,
                    ino: e.ino,
                    is_dir,
                    size: attr.size,
                    mtime_ns: attr.mtime_ns,
                    etag: Some(etag),
                })
            })
            .collect();
        Ok((nodes, page.next))
    }

    async fn dir(&self, path: &[u8]) -> Result<Option<Node>> {
        match self.0.stat(path).await {
            Ok(attr) if attr.is_dir() => {
                let name = path.strip_suffix(b"/").unwrap_or(path);
                let name = name.rsplit(|b| *b == b'/').next().unwrap_or_default().to_vec();
                let (size, mtime_ns) = (attr.size, attr.mtime_ns);
                Ok(Some(Node { name, ino: attr.ino, is_dir: true, size, mtime_ns, etag: Some(EMPTY_MD5.into()) }))
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

/// What a listing shows as the ETag of an entry, from its stored object
/// record: the stored MD5 while it still describes the file, else a
/// provisional one (a file changed through a mount since).
pub fn listed_etag(ino: u64, is_dir: bool, size: u64, mtime_ns: i64, record: Option<ObjectMeta>) -> String {
    if is_dir {
        return EMPTY_MD5.to_string();
    }
    match record {
        Some(meta) if meta.matches_listing(size, mtime_ns) => meta.etag,
        _ => provisional_etag(ino, size, mtime_ns),
    }
}
