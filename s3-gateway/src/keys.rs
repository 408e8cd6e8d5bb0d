//! Object keys as paths: which keys a volume's tree can hold, and where.
//!
//! A key `a/b/c` is the file `/a/b/c`; a key ending in `/` is a directory
//! marker (the directory itself). A key no path can hold is refused before
//! anything is written, so a bad key never leaves a partial tree behind.

use s3s::{S3Error, S3ErrorCode};
use strata_sdk::fs::{NAME_MAX, TEMP_DIR};

/// Longest key S3 accepts.
pub const KEY_MAX: usize = 1024;
/// Root entries of the gateway's own (hidden from listings, refused as keys).
pub const RESERVED_PREFIX: &[u8] = b".strata-";

/// Where an object lives in a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    /// The path without a trailing `/` (never empty).
    pub path: Vec<u8>,
    /// The key ended in `/`: the object is the directory itself.
    pub dir_marker: bool,
}

impl ObjectPath {
    /// Checks `key` and maps it onto a path.
    pub fn parse(key: &str) -> Result<ObjectPath, S3Error> {
        let bytes = key.as_bytes();
        if bytes.is_empty() {
            return Err(S3Error::with_message(S3ErrorCode::InvalidArgument, "an object key cannot be empty"));
        }
        if bytes.len() > KEY_MAX {
            return Err(S3Error::with_message(S3ErrorCode::KeyTooLongError, format!("a key of {} bytes", bytes.len())));
        }
        let (body, dir_marker) = match bytes.strip_suffix(b"/") {
            Some(body) => (body, true),
            None => (bytes, false),
        };
        if body.is_empty() {
            return Err(unstorable(key, "a key cannot be only '/'"));
        }
        for (i, name) in body.split(|b| *b == b'/').enumerate() {
            match name {
                b"" => return Err(unstorable(key, "empty path components ('//' or a leading '/')")),
                b"." | b".." => return Err(unstorable(key, "'.' or '..' components")),
                _ if name.contains(&0) => return Err(unstorable(key, "NUL bytes")),
                _ if name.len() > NAME_MAX => {
                    return Err(S3Error::with_message(
                        S3ErrorCode::KeyTooLongError,
                        format!("a path component of {} bytes (at most {NAME_MAX})", name.len()),
                    ));
                }
                _ if i == 0 && (name == TEMP_DIR || name.starts_with(RESERVED_PREFIX)) => {
                    return Err(unstorable(key, "a first component starting with '.strata-' (reserved)"));
                }
                _ => {}
            }
        }
        Ok(ObjectPath { path: body.to_vec(), dir_marker })
    }

    /// The directories above the object, deepest first (`a/b/c` → `a/b`, `a`).
    pub fn parents(&self) -> impl Iterator<Item = &[u8]> {
        let path = &self.path[..];
        path.iter().enumerate().rev().filter(|(_, b)| **b == b'/').map(move |(i, _)| &path[..i])
    }
}

fn unstorable(key: &str, why: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, format!("the key {key:?} cannot name a file: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_onto_paths() {
        assert_eq!(ObjectPath::parse("a/b/c").unwrap(), ObjectPath { path: b"a/b/c".to_vec(), dir_marker: false });
        assert_eq!(ObjectPath::parse("a/b/").unwrap(), ObjectPath { path: b"a/b".to_vec(), dir_marker: true });
        assert_eq!(ObjectPath::parse("x").unwrap().parents().count(), 0);
        let deep = ObjectPath::parse("a/b/c").unwrap();
        let parents: Vec<&[u8]> = deep.parents().collect();
        assert_eq!(parents, vec![&b"a/b"[..], b"a"]);
    }

    #[test]
    fn keys_no_path_can_hold_are_refused_with_a_defined_code() {
        for bad in ["", "/", "a//b", "/a", "a/./b", "a/../b", "..", "a/b//", ".strata-tmp/x", ".strata-uploads", "a\0b"]
        {
            let err = ObjectPath::parse(bad).unwrap_err();
            assert_eq!(*err.code(), S3ErrorCode::InvalidArgument, "{bad:?}");
        }
        let long = "k".repeat(KEY_MAX + 1);
        assert_eq!(*ObjectPath::parse(&long).unwrap_err().code(), S3ErrorCode::KeyTooLongError);
        let long_name = format!("a/{}", "n".repeat(NAME_MAX + 1));
        assert_eq!(*ObjectPath::parse(&long_name).unwrap_err().code(), S3ErrorCode::KeyTooLongError);
        // Deeper components may start with the reserved prefix.
        assert!(ObjectPath::parse("a/.strata-tmp").is_ok());
    }
}
