//! An fsx-style random exerciser on a real mount: writes, reads, truncates,
//! mmap reads and writes, hole punches and fallocates on one file, each
//! checked against an in-memory model of what the file must hold. The seed
//! is printed (and taken from `FSX_SEED` to replay a run); `FSX_OPS` sets the
//! number of operations: 10,000 in the test suite (about 2 minutes on a debug
//! build here), 100,000 and more by hand (results in docs/PERFORMANCE.md).

mod common;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use common::*;

const MAX_SIZE: u64 = 1 << 20;
const MAX_IO: u64 = 64 << 10;

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[derive(Debug)]
enum Op {
    Write { offset: u64, len: u64 },
    Read { offset: u64, len: u64 },
    Truncate { size: u64 },
    MapRead { offset: u64, len: u64 },
    MapWrite { offset: u64, len: u64 },
    PunchHole { offset: u64, len: u64 },
    Fallocate { offset: u64, len: u64 },
    Reopen,
}

fn pick(rng: &mut Rng, size: u64) -> Op {
    let offset = rng.below(MAX_SIZE);
    let len = 1 + rng.below(MAX_IO);
    let inside = |rng: &mut Rng| {
        let offset = rng.below(size.max(1));
        (offset, (1 + rng.below(MAX_IO)).min(size.saturating_sub(offset)).max(1))
    };
    match rng.below(100) {
        0..25 => Op::Write { offset, len: len.min(MAX_SIZE - offset) },
        25..50 => Op::Read { offset: rng.below(size + 4096), len },
        50..58 => Op::Truncate { size: rng.below(MAX_SIZE) },
        58..68 if size > 0 => {
            let (offset, len) = inside(rng);
            Op::MapRead { offset, len }
        }
        68..78 if size > 0 => {
            let (offset, len) = inside(rng);
            Op::MapWrite { offset, len }
        }
        78..88 if size > 0 => {
            let (offset, len) = inside(rng);
            Op::PunchHole { offset, len }
        }
        88..97 => Op::Fallocate { offset, len: len.min(MAX_SIZE - offset) },
        97..100 => Op::Reopen,
        _ => Op::Read { offset: 0, len: size.max(1) },
    }
}

fn fallocate(file: &File, mode: i32, offset: u64, len: u64) {
    // SAFETY: a valid descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as i64, len as i64) };
    assert_eq!(rc, 0, "fallocate({mode:#x}, {offset}, {len}): {}", std::io::Error::last_os_error());
}

/// Maps the first `size` bytes of the file, shared.
fn map(file: &File, size: u64, writable: bool) -> *mut u8 {
    let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
    // SAFETY: mapping a file we hold open; checked below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), size as usize, prot, libc::MAP_SHARED, file.as_raw_fd(), 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    p.cast()
}

fn pattern(rng: &mut Rng, len: u64) -> Vec<u8> {
    (0..len).map(|_| (rng.next() >> 32) as u8).collect()
}

fn check(what: &str, got: &[u8], want: &[u8], seed: u64, step: usize, log: &[String]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!(
            "{what} differs at byte {at} (got {} bytes, want {}) after op {step} with seed {seed}; last ops:\n{}",
            got.len(),
            want.len(),
            log.join("\n")
        );
    }
}

#[test]
fn random_operations_match_a_model() {
    let ops: usize = std::env::var("FSX_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seed: u64 =
        std::env::var("FSX_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| rand::random::<u64>() | 1);
    eprintln!("fsx: {ops} operations, seed {seed} (FSX_SEED={seed} replays this run)");
    let mut cluster = DevCluster::new();
    cluster.start();
    let mount = Mount::new(&cluster, "mnt");
    let path = mount.path.join("fsx.bin");
    let open = || OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
    let mut file = open();
    let mut model: Vec<u8> = Vec::new();
    let mut rng = Rng(seed);
    let mut log: Vec<String> = Vec::new();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut lap = std::time::Instant::now();
    for step in 0..ops {
        if step > 0 && step % 5000 == 0 {
            // Progress of long runs (FSX_OPS), so a slowdown shows where it starts.
            eprintln!("fsx: {step} operations, last 5000 at {:.0} ops/s", 5000.0 / lap.elapsed().as_secs_f64());
            lap = std::time::Instant::now();
        }
        let op = pick(&mut rng, model.len() as u64);
        log.push(format!("{step}: {op:?} (size {})", model.len()));
        if log.len() > 30 {
            log.remove(0);
        }
        let name = match op {
            Op::Write { offset, len } => {
                let data = pattern(&mut rng, len);
                file.write_all_at(&data, offset).unwrap();
                let end = (offset + len) as usize;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[offset as usize..end].copy_from_slice(&data);
                "write"
            }
            Op::Read { offset, len } => {
                let mut buf = vec![0u8; len as usize];
                let n = file.read_at(&mut buf, offset).unwrap();
                let start = (offset as usize).min(model.len());
                let end = ((offset + len) as usize).min(model.len());
                check("read", &buf[..n], &model[start..end], seed, step, &log);
                "read"
            }
            Op::Truncate { size } => {
                file.set_len(size).unwrap();
                model.resize(size as usize, 0);
                "truncate"
            }
            Op::MapRead { offset, len } => {
                let size = model.len() as u64;
                let p = map(&file, size, false);
                // SAFETY: within the mapping of `size` bytes.
                let got = unsafe { std::slice::from_raw_parts(p.add(offset as usize), len as usize) }.to_vec();
                // SAFETY: unmapping what was mapped above.
                unsafe { libc::munmap(p.cast(), size as usize) };
                check("mapread", &got, &model[offset as usize..(offset + len) as usize], seed, step, &log);
                "mapread"
            }
            Op::MapWrite { offset, len } => {
                let size = model.len() as u64;
                let data = pattern(&mut rng, len);
                let p = map(&file, size, true);
                // SAFETY: within the mapping; msync then munmap what was mapped.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(offset as usize), len as usize);
                    assert_eq!(libc::msync(p.cast(), size as usize, libc::MS_SYNC), 0);
                    libc::munmap(p.cast(), size as usize);
                }
                model[offset as usize..(offset + len) as usize].copy_from_slice(&data);
                "mapwrite"
            }
            Op::PunchHole { offset, len } => {
                fallocate(&file, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len);
                model[offset as usize..(offset + len) as usize].fill(0);
                "punch"
            }
            Op::Fallocate { offset, len } => {
                fallocate(&file, 0, offset, len);
                let end = (offset + len) as usize;
                if model.len() < end {
                    model.resize(end, 0);
                }
                "fallocate"
            }
            Op::Reopen => {
                drop(file);
                file = open();
                let mut all = vec![0u8; model.len() + 10];
                let n = file.read_at(&mut all, 0).unwrap();
                check("reopened file", &all[..n], &model, seed, step, &log);
                "reopen"
            }
        };
        *counts.entry(name).or_default() += 1;
        assert_eq!(file.metadata().unwrap().len(), model.len() as u64, "size after op {step}, seed {seed}");
    }
    drop(file);
    let all = std::fs::read(&path).unwrap();
    check("final file", &all, &model, seed, ops, &log);
    eprintln!("fsx: {ops} operations passed, seed {seed}: {counts:?}");
}
