//! Choosing nodes for partition replicas: distinct nodes, drawn at random with
//! probability proportional to free space (weighted sampling without
//! replacement, Efraimidis–Spirakis: keep the k largest of u^(1/w)).

use rand::Rng;
use strata_common::{ErrorCode, Result, StrataError};

/// A node that may hold a replica, with its free bytes as weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub node_id: u64,
    pub free_bytes: u64,
}

/// Picks `count` distinct candidates, favouring free space.
pub fn pick(candidates: &[Candidate], count: usize, what: &str, rng: &mut impl Rng) -> Result<Vec<u64>> {
    if candidates.len() < count {
        return Err(StrataError::new(
            ErrorCode::FailedPrecondition,
            format!("{what} needs {count} distinct live nodes, {} are available", candidates.len()),
        ));
    }
    let mut keyed: Vec<(f64, u64)> = candidates
        .iter()
        .map(|c| {
            let weight = (c.free_bytes.max(1)) as f64;
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (u.ln() / weight, c.node_id)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(keyed.into_iter().take(count).map(|(_, id)| id).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn candidates(free: &[u64]) -> Vec<Candidate> {
        free.iter().enumerate().map(|(i, f)| Candidate { node_id: i as u64 + 1, free_bytes: *f }).collect()
    }

    #[test]
    fn picks_distinct_nodes() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let mut picked = pick(&candidates(&[10; 6]), 6, "ec:4+2", &mut rng).unwrap();
            picked.sort();
            assert_eq!(picked, vec![1, 2, 3, 4, 5, 6]);
        }
    }

    #[test]
    fn too_few_nodes_is_an_error() {
        let mut rng = StdRng::seed_from_u64(1);
        let err = pick(&candidates(&[10; 5]), 6, "ec:4+2", &mut rng).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
        assert!(err.message.contains("needs 6"), "{}", err.message);
    }

    #[test]
    fn favours_free_space() {
        let mut rng = StdRng::seed_from_u64(7);
        let pool = candidates(&[1000, 1000, 10, 10]);
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for _ in 0..2000 {
            for id in pick(&pool, 1, "replica:1", &mut rng).unwrap() {
                *counts.entry(id).or_default() += 1;
            }
        }
        let big = counts.get(&1).copied().unwrap_or(0) + counts.get(&2).copied().unwrap_or(0);
        let small = counts.get(&3).copied().unwrap_or(0) + counts.get(&4).copied().unwrap_or(0);
        assert!(big > 20 * small.max(1) / 2, "big {big} small {small}");
    }
}
