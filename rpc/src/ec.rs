//! Reed-Solomon layout of an erasure-coded blob: the blob is cut into K
//! equal data shards (the last padded with zeros), M parity shards are
//! computed from them, and shard i goes to member i of the partition. Byte x
//! of the blob is byte x % L of data shard x / L (L the shard length), so a
//! ranged read touches only the shards it needs, and because the code works
//! column by column, a missing shard's columns [a, b) can be rebuilt from
//! columns [a, b) of any K other shards.

use bytes::Bytes;
use reed_solomon_erasure::galois_8::ReedSolomon;
use strata_common::{Result, StrataError};

/// Codec id recorded with every stripe: reed-solomon-erasure 6, GF(2^8).
pub const CODEC_RS_GF8: u32 = 1;
/// Codec id of a replicated blob.
pub const CODEC_REPLICA: u32 = 0;

fn codec(k: usize, m: usize) -> Result<ReedSolomon> {
    ReedSolomon::new(k, m).map_err(|e| StrataError::invalid(format!("erasure code {k}+{m}: {e:?}")))
}

/// Length of each shard of a `blob_size`-byte blob cut in `k`.
pub fn shard_len(blob_size: u64, k: usize) -> u64 {
    blob_size.div_ceil(k as u64).max(1)
}

/// The K data shards and M parity shards of `data`.
pub fn encode(data: &[u8], k: usize, m: usize) -> Result<Vec<Bytes>> {
    let len = shard_len(data.len() as u64, k) as usize;
    let mut shards: Vec<Vec<u8>> = (0..k + m)
        .map(|i| {
            let start = (i * len).min(data.len());
            let end = ((i + 1) * len).min(data.len());
            let mut shard = if i < k { data[start..end].to_vec() } else { Vec::new() };
            shard.resize(len, 0);
            shard
        })
        .collect();
    codec(k, m)?.encode(&mut shards).map_err(|e| StrataError::internal(format!("encoding: {e:?}")))?;
    Ok(shards.into_iter().map(Bytes::from).collect())
}

/// A piece of a ranged read: bytes [shard_offset, shard_offset + length) of
/// data shard `shard` are bytes [blob_offset, …) of the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub shard: usize,
    pub shard_offset: u64,
    pub length: u64,
    pub blob_offset: u64,
}

/// The data-shard pieces covering bytes [offset, offset + length) of the blob.
pub fn pieces(blob_size: u64, k: usize, offset: u64, length: u64) -> Vec<Piece> {
    let len = shard_len(blob_size, k);
    let end = offset.saturating_add(length).min(blob_size);
    let mut out = Vec::new();
    let mut at = offset;
    while at < end {
        let shard = (at / len) as usize;
        let shard_end = ((shard as u64 + 1) * len).min(end);
        out.push(Piece { shard, shard_offset: at - shard as u64 * len, length: shard_end - at, blob_offset: at });
        at = shard_end;
    }
    out
}

/// Rebuilds the missing data shards among `columns` (one entry per shard,
/// all present ones the same length) from any K present ones.
pub fn reconstruct(columns: &mut [Option<Vec<u8>>], k: usize, m: usize) -> Result<()> {
    let present = columns.iter().filter(|c| c.is_some()).count();
    if present < k {
        return Err(StrataError::unavailable(format!("only {present} of the {k} shards needed are readable")));
    }
    codec(k, m)?.reconstruct_data(columns).map_err(|e| StrataError::internal(format!("decoding: {e:?}")))
}

/// Rebuilds every missing shard, data and parity, from any K present ones.
pub fn reconstruct_all(shards: &mut [Option<Vec<u8>>], k: usize, m: usize) -> Result<()> {
    let present = shards.iter().filter(|c| c.is_some()).count();
    if present < k {
        return Err(StrataError::unavailable(format!("only {present} of the {k} shards needed are readable")));
    }
    codec(k, m)?.reconstruct(shards).map_err(|e| StrataError::internal(format!("decoding: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn pieces_cover_the_range_in_order() {
        // 10 bytes in 4 shards of 3: [0..3) [3..6) [6..9) [9..10)+pad.
        let p = pieces(10, 4, 2, 6);
        assert_eq!(
            p,
            vec![
                Piece { shard: 0, shard_offset: 2, length: 1, blob_offset: 2 },
                Piece { shard: 1, shard_offset: 0, length: 3, blob_offset: 3 },
                Piece { shard: 2, shard_offset: 0, length: 2, blob_offset: 6 },
            ]
        );
        assert_eq!(pieces(10, 4, 8, 100).iter().map(|p| p.length).sum::<u64>(), 2);
        assert!(pieces(10, 4, 10, 5).is_empty());
    }

    #[test]
    fn any_k_shards_rebuild_any_column_range() {
        let (k, m) = (4, 2);
        let data = blob(1_000_003);
        let shards = encode(&data, k, m).unwrap();
        let len = shard_len(data.len() as u64, k) as usize;
        assert!(shards.iter().all(|s| s.len() == len));
        // Lose shards 1 and 3 and rebuild only columns [1000, 5000).
        let (a, b) = (1000, 5000);
        let mut columns: Vec<Option<Vec<u8>>> =
            shards.iter().enumerate().map(|(i, s)| (i != 1 && i != 3).then(|| s[a..b].to_vec())).collect();
        reconstruct(&mut columns, k, m).unwrap();
        assert_eq!(columns[1].as_deref(), Some(&data[len + a..len + b]));
        assert_eq!(columns[3].as_deref(), Some(&shards[3][a..b]));
        // Three lost is one too many.
        let mut columns: Vec<Option<Vec<u8>>> =
            shards.iter().enumerate().map(|(i, s)| (i > 2).then(|| s.to_vec())).collect();
        assert!(reconstruct(&mut columns, k, m).is_err());
    }
}
