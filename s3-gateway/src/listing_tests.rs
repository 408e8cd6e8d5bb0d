//! The listing against a brute-force model: every key of a random tree,
//! sorted, filtered and rolled up by S3's rules.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// A directory in memory: its inode and its entries by name.
type MemDir = (u64, BTreeMap<Vec<u8>, Node>);

/// A tree in memory: directory path (`a/b/` or empty) → its directory.
#[derive(Default)]
struct MemTree {
    dirs: BTreeMap<Vec<u8>, MemDir>,
    markers: BTreeSet<u64>,
    inos: u64,
}

impl MemTree {
    fn new() -> MemTree {
        let mut tree = MemTree::default();
        tree.dirs.insert(Vec::new(), (1, BTreeMap::new()));
        tree.inos = 1;
        tree
    }

    /// Adds a file at `key`; false if a file or directory is in the way.
    fn add(&mut self, key: &[u8]) -> bool {
        let names: Vec<&[u8]> = key.split(|b| *b == b'/').collect();
        let mut dir = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let last = i == names.len() - 1;
            let entries = &self.dirs[&dir].1;
            match entries.get(*name) {
                Some(node) if last || !node.is_dir => return false,
                Some(_) => {}
                None => {
                    self.inos += 1;
                    let node = Node {
                        name: name.to_vec(),
                        ino: self.inos,
                        is_dir: !last,
                        size: key.len() as u64,
                        mtime_ns: 0,
                        etag: None,
                    };
                    let mut child = dir.clone();
                    child.extend_from_slice(name);
                    child.push(b'/');
                    if !last {
                        self.dirs.insert(child.clone(), (self.inos, BTreeMap::new()));
                    }
                    self.dirs.get_mut(&dir).unwrap().1.insert(name.to_vec(), node);
                }
            }
            if !last {
                dir.extend_from_slice(name);
                dir.push(b'/');
            }
        }
        true
    }

    /// Every key in the model: files, and marker directories as `dir/`.
    fn keys(&self) -> BTreeSet<Vec<u8>> {
        let mut keys = BTreeSet::new();
        for (path, (_, entries)) in &self.dirs {
            for node in entries.values() {
                let mut key = path.clone();
                key.extend_from_slice(&node.name);
                if node.is_dir {
                    key.push(b'/');
                    if !self.markers.contains(&node.ino) {
                        continue;
                    }
                }
                keys.insert(key);
            }
        }
        keys
    }
}

#[async_trait]
impl Tree for MemTree {
    async fn page(&self, dir: u64, after: &[u8], limit: u32) -> Result<(Vec<Node>, Option<Vec<u8>>)> {
        let (_, entries) = self.dirs.values().find(|(ino, _)| *ino == dir).expect("a known directory");
        let mut page: Vec<Node> = entries
            .range::<[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .map(|(_, n)| n.clone())
            .take(limit as usize + 1)
            .collect();
        let more = page.len() > limit as usize;
        page.truncate(limit as usize);
        let next = if more { page.last().map(|n| n.name.clone()) } else { None };
        Ok((page, next))
    }

    async fn dir(&self, path: &[u8]) -> Result<Option<Node>> {
        let name = path.strip_suffix(b"/").unwrap_or(path);
        let name = name.rsplit(|b| *b == b'/').next().unwrap_or_default().to_vec();
        Ok(self.dirs.get(path).map(|(ino, _)| Node { name, ino: *ino, is_dir: true, size: 0, mtime_ns: 0, etag: None }))
    }

    async fn is_marker(&self, dir: &Node) -> Result<bool> {
        Ok(self.markers.contains(&dir.ino))
    }
}

/// S3's answer, by brute force over the sorted keys: (objects, prefixes) in order.
fn model(keys: &BTreeSet<Vec<u8>>, query: &Query) -> Vec<(bool, Vec<u8>)> {
    let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
    for key in keys {
        if !key.starts_with(&query.prefix) {
            continue;
        }
        let rolled = query.delimiter.as_ref().filter(|d| !d.is_empty()).and_then(|d| {
            find(&key[query.prefix.len()..], d).map(|i| key[..query.prefix.len() + i + d.len()].to_vec())
        });
        match rolled {
            Some(common) => {
                if common <= query.after || out.last() == Some(&(true, common.clone())) {
                    continue;
                }
                out.push((true, common));
            }
            None if *key > query.after => out.push((false, key.clone())),
            None => {}
        }
    }
    out
}

fn flatten(listing: &Listing) -> Vec<(bool, Vec<u8>)> {
    let mut all: Vec<(bool, Vec<u8>)> = listing.objects.iter().map(|(k, _)| (false, k.clone())).collect();
    all.extend(listing.prefixes.iter().map(|p| (true, p.clone())));
    all.sort_by(|a, b| a.1.cmp(&b.1));
    all
}

fn random_key(rng: &mut StdRng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ab.-0z~";
    let depth = rng.random_range(1..=3);
    let mut key = Vec::new();
    for i in 0..depth {
        if i > 0 {
            key.push(b'/');
        }
        for _ in 0..rng.random_range(1..=3) {
            key.push(ALPHABET[rng.random_range(0..ALPHABET.len())]);
        }
    }
    key
}

#[tokio::test]
async fn listings_match_the_s3_model_page_by_page() {
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tree = MemTree::new();
        for _ in 0..rng.random_range(5..120) {
            tree.add(&random_key(&mut rng));
        }
        let dir_inos: Vec<u64> = tree.dirs.values().map(|(ino, _)| *ino).filter(|i| *i != 1).collect();
        for ino in dir_inos {
            if rng.random_bool(0.3) {
                tree.markers.insert(ino);
            }
        }
        let keys = tree.keys();
        let samples: Vec<Vec<u8>> = keys.iter().cloned().collect();
        for round in 0..30 {
            let pick = |rng: &mut StdRng| -> Vec<u8> {
                if samples.is_empty() || rng.random_bool(0.2) {
                    return random_key(rng);
                }
                let key = &samples[rng.random_range(0..samples.len())];
                key[..rng.random_range(0..=key.len())].to_vec()
            };
            let prefix = if rng.random_bool(0.5) { pick(&mut rng) } else { Vec::new() };
            let delimiter = match rng.random_range(0..4) {
                0 | 1 => Some(b"/".to_vec()),
                2 => Some(b"-".to_vec()),
                _ => None,
            };
            let after = if rng.random_bool(0.3) { pick(&mut rng) } else { Vec::new() };
            let max_keys = rng.random_range(1..8);
            let what = format!(
                "seed {seed} round {round}: prefix {:?} delimiter {:?} after {:?} max {max_keys}",
                String::from_utf8_lossy(&prefix),
                delimiter.as_ref().map(|d| String::from_utf8_lossy(d).to_string()),
                String::from_utf8_lossy(&after)
            );
            let full = model(
                &keys,
                &Query { prefix: prefix.clone(), delimiter: delimiter.clone(), after: after.clone(), max_keys: 0 },
            );
            // Page through with each page's last entry as the next start.
            let mut got = Vec::new();
            let mut start = after.clone();
            loop {
                let query =
                    Query { prefix: prefix.clone(), delimiter: delimiter.clone(), after: start.clone(), max_keys };
                let page = list(&tree, &query).await.unwrap();
                let entries = flatten(&page);
                assert!(entries.len() <= max_keys, "{what}");
                got.extend(entries);
                if !page.truncated {
                    break;
                }
                start = page.last.clone().expect("a truncated page names its last entry");
            }
            assert_eq!(got, full, "{what}");
        }
    }
}

#[test]
fn seek_cursors_start_at_the_first_entry_that_can_hold_the_key() {
    // "a.txt": the directory "a" (keys "a/…") sorts after it, so reading starts at "a".
    let cursor = seek_cursor(b"a.txt");
    assert!(cursor.as_slice() < &b"a"[..] && cursor.as_slice() > &b"`"[..]);
    let cursor = seek_cursor(b"bc/d");
    assert!(cursor.as_slice() < &b"bc"[..] && cursor.as_slice() > &b"bb"[..]);
    assert!(seek_cursor(b"").is_empty());
}
