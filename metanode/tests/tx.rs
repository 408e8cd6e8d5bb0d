//! Conformance of transactions across two meta partitions (two raft groups
//! on one engine, each with its own state machine).

use std::time::Duration;

use prost::Message;
use strata_common::{ErrorCode, Result};
use strata_metanode::machine::decode_outcome;
use strata_metanode::{MetaMachine, read, tx};
use strata_proto::meta::{meta_command::Op, tx_step::Step, *};
use strata_raftstore::testing::{LocalNetwork, fast_config};
use strata_raftstore::{AddressBook, Engine, GroupSpec, open_db};

const A: u64 = 21; // holds the root: inodes [1, 1000)
const B: u64 = 22; // inodes [1000, ∞)
const ROOT: u64 = 1;
const DIR: u32 = libc::S_IFDIR;

struct Two {
    engine: Engine,
    _dir: tempfile::TempDir,
    clock: i64,
}

impl Drop for Two {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}

impl Two {
    async fn new() -> Two {
        let dir = tempfile::tempdir().unwrap();
        let config = fast_config(1000);
        let engine = Engine::start(
            1,
            open_db(dir.path(), &config).unwrap(),
            config,
            LocalNetwork::new().transport(1),
            AddressBook::new(),
        );
        for p in [A, B] {
            let spec = GroupSpec { initial_voters: vec![(1, "local-1".into())] };
            engine.create_group(p, spec, Box::new(MetaMachine::new(p))).await.unwrap();
        }
        for _ in 0..500 {
            if [A, B].iter().all(|p| engine.status(*p).is_some_and(|s| s.leader_id == 1)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut two = Two { engine, _dir: dir, clock: 1_000 };
        two.run(A, Op::Init(InitPartition { volume_id: 1, inode_start: 1, inode_end: Some(1000) })).await.unwrap();
        two.run(B, Op::Init(InitPartition { volume_id: 1, inode_start: 1000, inode_end: None })).await.unwrap();
        two
    }

    async fn run(&mut self, partition: u64, op: Op) -> Result<MutateReply> {
        self.clock += 1;
        let request = MutateRequest {
            partition_id: partition,
            request_id: 0,
            command: Some(MetaCommand { now_ns: self.clock, op: Some(op) }),
            client: 0,
        };
        decode_outcome(&self.engine.propose(partition, request.encode_to_vec()).await?)
    }

    fn lookup(&self, partition: u64, parent: u64, name: &str) -> Result<Inode> {
        read::lookup(&self.engine.kv(partition), parent, name.as_bytes())
    }
}

fn prepare(txid: u64, steps: Vec<Step>) -> Op {
    Op::TxPrepare(TxPrepareOp {
        txid,
        primary: B,
        primary_members: vec![],
        deadline_ns: 5_000,
        steps: steps.into_iter().map(|s| TxStep { step: Some(s) }).collect(),
    })
}

fn finish(txid: u64, commit: bool) -> Op {
    Op::TxFinish(TxFinishOp { txid, commit })
}

/// mkdir "name" in the root (partition A) with the directory's inode in B.
async fn prepare_mkdir(two: &mut Two, txid: u64, name: &str) -> u64 {
    let new = Step::NewInode(NewInode { mode: DIR | 0o755, parent: ROOT, ..Default::default() });
    let ino = two.run(B, prepare(txid, vec![new])).await.unwrap().allocated_ino;
    assert!(ino >= 1000, "allocated in B's range: {ino}");
    let entry = Step::AddEntry(AddEntry { parent: ROOT, name: name.into(), ino, file_type: DIR, ..Default::default() });
    two.run(A, prepare(txid, vec![entry])).await.unwrap();
    ino
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_partition_mkdir_is_invisible_until_commit_and_locks_what_it_touches() {
    let mut two = Two::new().await;
    let ino = prepare_mkdir(&mut two, 0x51, "d").await;
    assert_eq!(two.lookup(A, ROOT, "d").unwrap_err().code, ErrorCode::NotFound, "not visible while prepared");
    // a plain create of the same name waits (retryable) instead of racing the transaction
    let create =
        Op::Create(CreateOp { parent: ROOT, name: "d".into(), mode: libc::S_IFREG | 0o644, ..Default::default() });
    let err = two.run(A, create.clone()).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // the primary commits first, then the other participant
    two.run(B, finish(0x51, true)).await.unwrap();
    two.run(A, finish(0x51, true)).await.unwrap();
    let d = two.lookup(A, ROOT, "d").unwrap();
    assert_eq!(d.ino, ino);
    assert_eq!(d.nlink, 0, "the inode lives in B: A answers with a bare inode");
    let stats = read::stats(&two.engine.kv(B), 0).unwrap();
    assert_eq!(stats.inode_count, 1);
    let dir_inode = strata_metanode::read::scan(&two.engine.kv(B), ScanKind::Inodes, b"", 10).unwrap().inodes;
    assert_eq!((dir_inode[0].ino, dir_inode[0].nlink, dir_inode[0].parent), (ino, 2, ROOT));
    let root = read::scan(&two.engine.kv(A), ScanKind::Inodes, b"", 10).unwrap().inodes[0].clone();
    assert_eq!(root.nlink, 3, "the new subdirectory links the root");
    assert_eq!(two.run(A, create).await.unwrap_err().code, ErrorCode::AlreadyExists);
    // committing again is harmless
    two.run(A, finish(0x51, true)).await.unwrap();
    assert!(tx::pending(&two.engine.kv(A)).unwrap().is_empty());
    assert_eq!(tx::outcome(&two.engine.kv(B), 0x51).unwrap(), TxState::Committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_leaves_nothing_and_unlocks() {
    let mut two = Two::new().await;
    prepare_mkdir(&mut two, 0x52, "d").await;
    two.run(B, finish(0x52, false)).await.unwrap();
    two.run(A, finish(0x52, false)).await.unwrap();
    assert_eq!(two.lookup(A, ROOT, "d").unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(read::stats(&two.engine.kv(B), 0).unwrap().inode_count, 0);
    let create =
        Op::Create(CreateOp { parent: ROOT, name: "d".into(), mode: libc::S_IFREG | 0o644, ..Default::default() });
    two.run(A, create).await.unwrap();
    assert_eq!(tx::outcome(&two.engine.kv(B), 0x52).unwrap(), TxState::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_decides_for_a_dead_coordinator() {
    let mut two = Two::new().await;
    // 1. The coordinator died before preparing the primary: resolving aborts,
    //    and a late prepare at the primary is refused.
    let state = two.run(B, Op::TxResolve(TxResolveOp { txid: 0x61 })).await.unwrap().tx_state;
    assert_eq!(state, TxState::Aborted as i32);
    let new = Step::NewInode(NewInode { mode: DIR | 0o755, parent: ROOT, ..Default::default() });
    let err = two.run(B, prepare(0x61, vec![new])).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);

    // 2. Prepared everywhere, coordinator gone: before the deadline the primary waits...
    prepare_mkdir(&mut two, 0x62, "late").await;
    let state = two.run(B, Op::TxResolve(TxResolveOp { txid: 0x62 })).await.unwrap().tx_state;
    assert_eq!(state, TxState::Prepared as i32);
    // ...after it, the primary aborts, and the other participant follows.
    two.clock = 10_000;
    let state = two.run(B, Op::TxResolve(TxResolveOp { txid: 0x62 })).await.unwrap().tx_state;
    assert_eq!(state, TxState::Aborted as i32);
    assert_eq!(tx::pending(&two.engine.kv(A)).unwrap().len(), 1, "A still holds it prepared");
    // a coordinator that comes back too late cannot commit at the primary any more
    let err = two.run(B, finish(0x62, true)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict, "{err}");
    two.run(A, finish(0x62, false)).await.unwrap();
    assert!(tx::pending(&two.engine.kv(A)).unwrap().is_empty());
    assert_eq!(two.lookup(A, ROOT, "late").unwrap_err().code, ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_partition_unlink_rmdir_and_stale_expectations() {
    let mut two = Two::new().await;
    let d = prepare_mkdir(&mut two, 0x71, "d").await;
    two.run(B, finish(0x71, true)).await.unwrap();
    two.run(A, finish(0x71, true)).await.unwrap();
    // a plain rmdir at A cannot remove d: its inode is in B
    let err = two
        .run(A, Op::Unlink(UnlinkOp { parent: ROOT, name: "d".into(), directory: true, evict: false }))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::CrossPartition, "{err}");
    // a file in d (d lives in B, so does the file)
    let f = two
        .run(B, Op::Create(CreateOp { parent: d, name: "f".into(), mode: libc::S_IFREG | 0o644, ..Default::default() }))
        .await
        .unwrap()
        .inode
        .unwrap();
    // rmdir of a non-empty d fails at prepare
    let remove_dir = |txid| {
        (
            prepare(
                txid,
                vec![Step::AdjustInode(AdjustInode { ino: d, remove_empty_dir: true, ..Default::default() })],
            ),
            prepare(
                txid,
                vec![Step::RemoveEntry(RemoveEntry { parent: ROOT, name: "d".into(), expect_ino: d, is_dir: true })],
            ),
        )
    };
    let (at_b, _) = remove_dir(0x72);
    assert_eq!(two.run(B, at_b).await.unwrap_err().code, ErrorCode::NotEmpty);
    two.run(B, Op::Unlink(UnlinkOp { parent: d, name: "f".into(), directory: false, evict: false })).await.unwrap();
    // an expectation that no longer holds is a conflict
    let stale = prepare(
        0x73,
        vec![Step::RemoveEntry(RemoveEntry { parent: ROOT, name: "d".into(), expect_ino: f.ino, is_dir: true })],
    );
    let err = two.run(A, stale).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict, "{err}");
    // now the rmdir goes through
    let (at_b, at_a) = remove_dir(0x74);
    two.run(B, at_b).await.unwrap();
    two.run(A, at_a).await.unwrap();
    two.run(B, finish(0x74, true)).await.unwrap();
    two.run(A, finish(0x74, true)).await.unwrap();
    assert_eq!(two.lookup(A, ROOT, "d").unwrap_err().code, ErrorCode::NotFound);
    let root = read::scan(&two.engine.kv(A), ScanKind::Inodes, b"", 10).unwrap().inodes[0].clone();
    assert_eq!(root.nlink, 2);
    assert!(read::scan(&two.engine.kv(B), ScanKind::Inodes, b"", 10).unwrap().inodes.iter().all(|i| i.ino != d));
}
