//! The bytes of a group snapshot: the group's peer addresses and every
//! key/value of its state-machine data. Taken at the applied index, so the
//! data and the snapshot's metadata (index, term, conf state) agree.
//!
//! Format (little-endian): version u8 = 1; peer count u32, then per peer
//! id u64, address length u32, address; then pairs until the end, each key
//! length u32, key, value length u32, value.

use strata_common::{Result, StrataError};

pub(crate) const VERSION: u8 = 1;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SnapshotData {
    pub peers: Vec<(u64, String)>,
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SnapshotData {
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.pairs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(5 + size + self.peers.len() * 32);
        out.push(VERSION);
        out.extend_from_slice(&(self.peers.len() as u32).to_le_bytes());
        for (id, addr) in &self.peers {
            out.extend_from_slice(&id.to_le_bytes());
            put_bytes(&mut out, addr.as_bytes());
        }
        for (k, v) in &self.pairs {
            put_bytes(&mut out, k);
            put_bytes(&mut out, v);
        }
        out
    }

    pub fn decode(mut buf: &[u8]) -> Result<SnapshotData> {
        let version = take(&mut buf, 1)?[0];
        if version != VERSION {
            return Err(corrupt(&format!("unknown snapshot version {version}")));
        }
        let peer_count = u32::from_le_bytes(take(&mut buf, 4)?.try_into().unwrap());
        let mut data = SnapshotData::default();
        for _ in 0..peer_count {
            let id = u64::from_le_bytes(take(&mut buf, 8)?.try_into().unwrap());
            let addr =
                String::from_utf8(take_bytes(&mut buf)?.to_vec()).map_err(|_| corrupt("peer address is not utf-8"))?;
            data.peers.push((id, addr));
        }
        while !buf.is_empty() {
            let k = take_bytes(&mut buf)?.to_vec();
            let v = take_bytes(&mut buf)?.to_vec();
            data.pairs.push((k, v));
        }
        Ok(data)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if buf.len() < n {
        return Err(corrupt("snapshot is truncated"));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = u32::from_le_bytes(take(buf, 4)?.try_into().unwrap()) as usize;
    take(buf, len)
}

fn corrupt(what: &str) -> StrataError {
    StrataError::new(strata_common::ErrorCode::Corrupted, format!("decoding snapshot: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data = SnapshotData {
            peers: vec![(1, "127.0.0.1:1".into()), (2, "h:2".into())],
            pairs: vec![(b"a".to_vec(), b"".to_vec()), (vec![0xff; 3], vec![7; 1000])],
        };
        assert_eq!(SnapshotData::decode(&data.encode()).unwrap(), data);
    }

    #[test]
    fn truncation_is_detected() {
        let data = SnapshotData { peers: vec![], pairs: vec![(b"key".to_vec(), b"value".to_vec())] };
        let bytes = data.encode();
        assert!(SnapshotData::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(SnapshotData::decode(&[9]).is_err());
    }
}
