//! The tokio runtime of a strata process, and how many workers it gets.
//!
//! A request served by a runtime costs a thread wake-up per hop, and a
//! runtime with idle workers wakes some of them to steal each new task: on
//! a machine shared with other busy processes (a mount next to the
//! application, the dozen nodes of `strata dev`), fewer workers answer
//! faster. Measured on 2 cores: context switches per lookup in the mount
//! 5.6 with two workers, 3.3 with one (docs/PERFORMANCE.md).

use crate::Cmd;

/// A quarter of this machine's cores, at least one: the default share of a
/// process that runs next to others (a mount, a node of `strata dev`).
pub fn shared_machine_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 4).max(1)
}

/// Worker threads for `command`: `--io-threads` where the command has it
/// (0 meaning the command's default), tokio's one per core otherwise.
fn workers(command: &Cmd) -> Option<usize> {
    match command {
        Cmd::Mount(args) => Some(args.io_threads()),
        Cmd::Master(args) | Cmd::Metanode(args) | Cmd::Datanode(args) => {
            (args.io_threads > 0).then_some(args.io_threads)
        }
        Cmd::S3(args) => (args.io_threads > 0).then_some(args.io_threads),
        _ => None,
    }
}

pub fn build(command: &Cmd) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers(command) {
        builder.worker_threads(workers);
    }
    builder.enable_all().build().expect("starting the tokio runtime")
}
