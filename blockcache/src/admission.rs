//! Frequency-based admission (TinyLFU's idea): a full cache admits a new
//! block only if it has been asked for at least as often, lately, as the
//! block it would push out. A block read once by a scan has a frequency of
//! one, a block of the hot set more, so a single pass over a dataset larger
//! than the cache replaces other once-read blocks but not the hot set. An
//! empty or partly filled cache admits everything (filling it costs nothing).
//!
//! Frequencies live in a count-min sketch of 4-bit counters (four rows, a
//! few bytes per cached block whatever the number of keys seen); every
//! counter is halved after as many increments as ten times its width, so
//! what was hot an hour ago fades.

use std::sync::Mutex;

use crate::BlockKey;
use crate::mix;

const ROWS: usize = 4;
const MAX_COUNT: u8 = 15;

pub struct Admission {
    inner: Mutex<Sketch>,
}

struct Sketch {
    /// ROWS rows of `width` counters each.
    counters: Vec<u8>,
    width: usize,
    increments: usize,
    reset_after: usize,
}

impl Sketch {
    fn slots(&self, key: &BlockKey) -> [usize; ROWS] {
        let hash = key.stable_hash();
        std::array::from_fn(|row| row * self.width + (mix(hash ^ row as u64) as usize & (self.width - 1)))
    }

    fn estimate(&self, key: &BlockKey) -> u8 {
        self.slots(key).iter().map(|&i| self.counters[i]).min().unwrap_or(0)
    }
}

impl Admission {
    /// A sketch for a cache of about `blocks` blocks.
    pub fn new(blocks: u64) -> Admission {
        let width = (blocks.max(64) as usize * 2).next_power_of_two();
        Admission {
            inner: Mutex::new(Sketch {
                counters: vec![0; width * ROWS],
                width,
                increments: 0,
                reset_after: width * 10,
            }),
        }
    }

    /// Counts one request for `key`.
    pub fn record(&self, key: &BlockKey) {
        let mut sketch = self.inner.lock().unwrap();
        let slots = sketch.slots(key);
        let least = slots.iter().map(|&i| sketch.counters[i]).min().unwrap_or(0);
        // Conservative update: only the counters at the minimum grow.
        if least < MAX_COUNT {
            for i in slots {
                if sketch.counters[i] == least {
                    sketch.counters[i] += 1;
                }
            }
        }
        sketch.increments += 1;
        if sketch.increments >= sketch.reset_after {
            sketch.counters.iter_mut().for_each(|c| *c /= 2);
            sketch.increments = 0;
        }
    }

    /// How often `key` was asked for lately (an over-estimate at worst).
    pub fn frequency(&self, key: &BlockKey) -> u8 {
        self.inner.lock().unwrap().estimate(key)
    }

    /// Whether `candidate` may take the place of `victim` (the block the
    /// cache would evict for it); no victim (room left): yes.
    pub fn admits(&self, candidate: &BlockKey, victim: Option<&BlockKey>) -> bool {
        let Some(victim) = victim else { return true };
        let sketch = self.inner.lock().unwrap();
        sketch.estimate(candidate) >= sketch.estimate(victim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(blob_id: u64) -> BlockKey {
        BlockKey { data_partition: 1, blob_id, block: 0 }
    }

    #[test]
    fn frequent_keys_outrank_once_seen_ones_and_fade() {
        let admission = Admission::new(1000);
        for _ in 0..5 {
            admission.record(&key(1));
        }
        admission.record(&key(2));
        assert_eq!(admission.frequency(&key(1)), 5);
        assert!(!admission.admits(&key(2), Some(&key(1))), "a once-read block does not push out a hot one");
        assert!(admission.admits(&key(1), Some(&key(2))));
        assert!(admission.admits(&key(3), Some(&key(4))), "ties admit: new once-read blocks replace old ones");
        assert!(admission.admits(&key(3), None), "room left: everything is admitted");
        // A long stream of other keys halves the counts.
        for i in 0..30_000 {
            admission.record(&key(1000 + i));
        }
        assert!(admission.frequency(&key(1)) < 5, "old frequencies fade");
    }
}
