//! Key layout in the node's RocksDB. Every group owns two key ranges:
//!
//! - `0x01 group kind [index]`: Raft state (log entries, hard state, conf
//!   state, applied index, truncation point, peer addresses);
//! - `0x02 group user-key`: the state machine's data.
//!
//! Group ids and log indexes are big-endian so that ranges sort numerically.

const RAFT: u8 = 0x01;
const DATA: u8 = 0x02;

pub const LOG: u8 = 0x01;
pub const HARD_STATE: u8 = 0x02;
pub const CONF_STATE: u8 = 0x03;
pub const APPLIED: u8 = 0x04;
pub const TRUNCATED: u8 = 0x05;
pub const PEERS: u8 = 0x06;
/// Set while a snapshot's data is being written (in several batches): found
/// at start, it means the group's data is partial and must be dropped.
pub const INSTALLING: u8 = 0x07;

fn prefixed(space: u8, group: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    key.push(space);
    key.extend_from_slice(&group.to_be_bytes());
    key
}

pub fn log_key(group: u64, index: u64) -> Vec<u8> {
    let mut key = prefixed(RAFT, group);
    key.push(LOG);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The index a log key ends in; `None` for a key too short to hold one.
pub fn log_index(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    key[start..].try_into().ok().map(u64::from_be_bytes)
}

pub fn state_key(group: u64, kind: u8) -> Vec<u8> {
    let mut key = prefixed(RAFT, group);
    key.push(kind);
    key
}

pub fn data_key(group: u64, user_key: &[u8]) -> Vec<u8> {
    let mut key = prefixed(DATA, group);
    key.extend_from_slice(user_key);
    key
}

/// `[start, end)` of a group's state-machine data.
pub fn data_range(group: u64) -> (Vec<u8>, Vec<u8>) {
    let start = prefixed(DATA, group);
    let end = next_prefix(&start).expect("a data prefix starts with 0x02, so it has a successor");
    (start, end)
}

pub fn data_prefix_len() -> usize {
    9
}

/// The smallest key greater than every key starting with `prefix`.
pub fn next_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_index_and_round_trip() {
        let a = log_key(7, 9);
        let b = log_key(7, 300);
        assert!(a < b);
        assert_eq!(log_index(&b), Some(300));
        assert_eq!(log_index(&b[..7]), None);
        assert!(log_key(7, u64::MAX) < log_key(8, 0));
    }

    #[test]
    fn data_range_covers_exactly_one_group() {
        let (start, end) = data_range(5);
        let inside = data_key(5, &[0xff, 0xff, 0xff]);
        assert!(start <= inside && inside < end);
        assert!(data_key(6, b"") >= end);
        assert!(data_key(4, &[0xff]) < start);
    }

    #[test]
    fn next_prefix_carries() {
        assert_eq!(next_prefix(&[1, 0xff]), Some(vec![2]));
        assert_eq!(next_prefix(&[0xff]), None);
    }
}
