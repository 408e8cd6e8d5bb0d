//! S3 listings over a directory tree.
//!
//! S3 lists keys in byte order; a tree walk in name order does not give that
//! order, because a directory `a` stands for keys `a/…` that sort after
//! `a.txt` and `a-b` ('.' and '-' sort before '/'). [`Walk`] yields the tree
//! in key order anyway: each directory's entries are read page by page in
//! name order, and an entry is held back until no entry still to come can
//! sort before it (a directory sorts as its name plus `/`, never before its
//! name, so everything read up to name `n` that sorts at or below `n` can go).
//!
//! [`list`] puts S3's rules on top: a prefix, an exclusive start key (marker,
//! start-after or continuation token), a delimiter (with `/`, a directory
//! past the prefix is rolled up into one common prefix without being read),
//! and max-keys with a resumable next key.

use std::collections::BTreeMap;

use async_trait::async_trait;
use strata_common::Result;

/// Entries read from a directory per request.
const PAGE: u32 = 1000;

/// One directory entry as the walk sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub ino: u64,
    pub is_dir: bool,
    pub size: u64,
    pub mtime_ns: i64,
    /// The ETag, when the tree read it with the page (else it is asked per key).
    pub etag: Option<String>,
}

/// The tree being listed (a volume; a map in the tests).
#[async_trait]
pub trait Tree: Send + Sync {
    /// Entries of directory `dir` whose names sort after `after`, in name
    /// order, at most `limit`; and the cursor of the next page (`None`: the
    /// end). Entries may be left out (hidden ones), never reordered.
    async fn page(&self, dir: u64, after: &[u8], limit: u32) -> Result<(Vec<Node>, Option<Vec<u8>>)>;
    /// The directory at `path` (`a/b/`, or empty for the root); `None` if there is none.
    async fn dir(&self, path: &[u8]) -> Result<Option<Node>>;
    /// Whether the directory is also an object (an S3 client put `key/`).
    async fn is_marker(&self, dir: &Node) -> Result<bool>;
}

struct Frame {
    ino: u64,
    /// Key prefix of this directory's entries (`a/b/`, or empty).
    prefix: Vec<u8>,
    /// Name cursor of the next page.
    after: Vec<u8>,
    more: bool,
    /// The cursor of the last page read: every name still to come sorts
    /// after it. `None` before the first page.
    last_read: Option<Vec<u8>>,
    /// Entries read and not yet yielded, by their name as a key part.
    pending: BTreeMap<Vec<u8>, Node>,
}

/// A tree's entries in key order. Directories are yielded (key with a
/// trailing `/`) and entered only if [`Walk::descend`] is called next.
pub struct Walk<'t, T: Tree> {
    tree: &'t T,
    stack: Vec<Frame>,
}

impl<'t, T: Tree> Walk<'t, T> {
    /// Walks directory `ino` whose keys start with `prefix`, from the first
    /// entry that can hold a key at or after `prefix + seek`.
    pub fn new(tree: &'t T, ino: u64, prefix: Vec<u8>, seek: &[u8]) -> Walk<'t, T> {
        let mut walk = Walk { tree, stack: Vec::new() };
        walk.push(ino, prefix, seek);
        walk
    }

    fn push(&mut self, ino: u64, prefix: Vec<u8>, seek: &[u8]) {
        let after = seek_cursor(seek);
        self.stack.push(Frame { ino, prefix, after, more: true, last_read: None, pending: BTreeMap::new() });
    }

    /// Enters the directory just yielded as `key`, from the first entry that
    /// can hold a key at or after `key + seek`.
    pub fn descend(&mut self, node: &Node, key: Vec<u8>, seek: &[u8]) {
        self.push(node.ino, key, seek);
    }

    /// The next entry in key order, with its key.
    pub async fn next(&mut self) -> Result<Option<(Vec<u8>, Node)>> {
        loop {
            let Some(frame) = self.stack.last_mut() else { return Ok(None) };
            let ready = match frame.pending.first_key_value() {
                Some((part, _)) => !frame.more || frame.last_read.as_ref().is_some_and(|last| part <= last),
                None => false,
            };
            if ready {
                let (part, node) = frame.pending.pop_first().expect("checked above");
                let mut key = frame.prefix.clone();
                key.extend_from_slice(&part);
                return Ok(Some((key, node)));
            }
            if !frame.more {
                self.stack.pop();
                continue;
            }
            let (page, next) = self.tree.page(frame.ino, &frame.after, PAGE).await?;
            frame.more = next.is_some();
            if let Some(next) = next {
                frame.last_read = Some(next.clone());
                frame.after = next;
            }
            for node in page {
                let mut part = node.name.clone();
                if node.is_dir {
                    part.push(b'/');
                }
                frame.pending.insert(part, node);
            }
        }
    }
}

/// The name cursor from which a directory's entries can hold keys at or
/// after `seek` (relative to the directory). A directory `n` sorts as `n/`,
/// so names that are a prefix of the first component followed by a byte
/// below '/' must be read too.
fn seek_cursor(seek: &[u8]) -> Vec<u8> {
    let component = seek.split(|b| *b == b'/').next().unwrap_or_default();
    let cut = component.iter().position(|b| *b < b'/').unwrap_or(component.len());
    let lowest = &component[..cut];
    // The greatest name below `lowest`: names after it are those at or after `lowest`.
    match lowest.split_last() {
        None | Some((0, _)) => lowest.get(..lowest.len().saturating_sub(1)).unwrap_or_default().to_vec(),
        Some((last, head)) => {
            let mut cursor = head.to_vec();
            cursor.push(last - 1);
            cursor.extend(std::iter::repeat_n(0xff, strata_sdk::fs::NAME_MAX));
            cursor
        }
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub prefix: Vec<u8>,
    pub delimiter: Option<Vec<u8>>,
    /// Keys after this one only (exclusive; empty: from the start).
    pub after: Vec<u8>,
    pub max_keys: usize,
}

/// One page of a listing, in key order.
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<(Vec<u8>, Node)>,
    pub prefixes: Vec<Vec<u8>>,
    pub truncated: bool,
    /// The last key or prefix returned (where the next page starts).
    pub last: Option<Vec<u8>>,
}

/// One page of keys under `query`.
pub async fn list<T: Tree>(tree: &T, query: &Query) -> Result<Listing> {
    let mut out = Listing::default();
    if query.max_keys == 0 {
        return Ok(out);
    }
    let prefix = &query.prefix[..];
    let after = &query.after[..];
    let base_len = prefix.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
    let Some(base) = tree.dir(&prefix[..base_len]).await? else { return Ok(out) };
    let bound: &[u8] = if after > prefix { after } else { prefix };
    if !bound.starts_with(&prefix[..base_len]) {
        return Ok(out); // `after` lies past every key under the prefix
    }
    // A prefix naming a directory (`a/`): the directory's own marker object,
    // the key `a/` itself, is the first key under it and no walk inside yields it.
    if base_len > 0 && prefix.len() == base_len && prefix > after && tree.is_marker(&base).await? {
        emit(&mut out, Emit::Object(prefix.to_vec(), base.clone()), query.max_keys);
    }
    let slash_delimited = query.delimiter.as_deref() == Some(b"/");
    let mut walk = Walk::new(tree, base.ino, prefix[..base_len].to_vec(), &bound[base_len..]);
    let mut last_prefix: Option<Vec<u8>> = None;
    while let Some((key, node)) = walk.next().await? {
        if !key.starts_with(prefix) {
            if node.is_dir && prefix.starts_with(&key) {
                let seek = bound.strip_prefix(&key[..]).unwrap_or_default();
                walk.descend(&node, key, seek);
                continue;
            }
            if key[..] > *prefix {
                break; // past the range of keys under the prefix
            }
            continue;
        }
        let entry = if node.is_dir {
            let beyond_prefix = key.len() > prefix.len();
            if slash_delimited && beyond_prefix {
                // Everything under it rolls up into this one common prefix.
                if key[..] > *after && !emit(&mut out, Emit::Prefix(key), query.max_keys) {
                    break;
                }
                continue;
            }
            if key[..] <= *after && !after.starts_with(&key) {
                continue; // it and all under it come before the start
            }
            let seek = after.strip_prefix(&key[..]).unwrap_or_default().to_vec();
            let marker = key[..] > *after && tree.is_marker(&node).await?;
            walk.descend(&node, key.clone(), &seek);
            if !marker {
                continue;
            }
            (key, node)
        } else {
            if key[..] <= *after {
                continue;
            }
            (key, node)
        };
        // An object; another delimiter than '/' rolls keys up here.
        let rolled = match &query.delimiter {
            Some(delimiter) if !slash_delimited && !delimiter.is_empty() => find(&entry.0[prefix.len()..], delimiter)
                .map(|i| entry.0[..prefix.len() + i + delimiter.len()].to_vec()),
            _ => None,
        };
        let emitted = match rolled {
            Some(common) => {
                if common[..] <= *after || last_prefix.as_ref() == Some(&common) {
                    continue;
                }
                last_prefix = Some(common.clone());
                emit(&mut out, Emit::Prefix(common), query.max_keys)
            }
            None => emit(&mut out, Emit::Object(entry.0, entry.1), query.max_keys),
        };
        if !emitted {
            break;
        }
    }
    Ok(out)
}

enum Emit {
    Object(Vec<u8>, Node),
    Prefix(Vec<u8>),
}

/// Adds one entry to the page; false (and the page marked truncated) if it
/// is already full.
fn emit(out: &mut Listing, entry: Emit, max_keys: usize) -> bool {
    if out.objects.len() + out.prefixes.len() >= max_keys {
        out.truncated = true;
        return false;
    }
    match entry {
        Emit::Object(key, node) => {
            out.last = Some(key.clone());
            out.objects.push((key, node));
        }
        Emit::Prefix(key) => {
            out.last = Some(key.clone());
            out.prefixes.push(key);
        }
    }
    true
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
