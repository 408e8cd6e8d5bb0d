//! A meta partition on a real single-node raft engine and RocksDB, for the
//! conformance suites.
#![allow(dead_code)]

use std::time::Duration;

use prost::Message;
use strata_common::{ErrorCode, Result};
use strata_metanode::machine::decode_outcome;
use strata_metanode::{MetaMachine, read};
use strata_proto::meta::{meta_command::Op, *};
use strata_raftstore::testing::{LocalNetwork, fast_config};
use strata_raftstore::{AddressBook, Engine, GroupKv, GroupSpec, open_db};

pub const PARTITION: u64 = 11;
pub const ROOT: u64 = 1;
pub const DIR: u32 = libc::S_IFDIR;
pub const REG: u32 = libc::S_IFREG;

pub struct Ns {
    pub engine: Engine,
    _dir: tempfile::TempDir,
    pub clock: i64,
}

impl Ns {
    pub async fn new(inode_end: Option<u64>) -> Ns {
        let mut ns = Ns::uninitialised().await;
        ns.run(0, Op::Init(InitPartition { volume_id: 1, inode_start: 1, inode_end })).await.unwrap();
        ns
    }

    /// A partition whose group runs but which was never initialised.
    pub async fn uninitialised() -> Ns {
        Ns::uninitialised_with(MetaMachine::new(PARTITION)).await
    }

    /// An initialised partition whose machine remembers request ids for `window` entries.
    pub async fn with_request_window(window: u64) -> Ns {
        let mut ns = Ns::uninitialised_with(MetaMachine::with_request_window(PARTITION, window)).await;
        ns.run(0, Op::Init(InitPartition { volume_id: 1, inode_start: 1, inode_end: None })).await.unwrap();
        ns
    }

    pub async fn uninitialised_with(machine: MetaMachine) -> Ns {
        let dir = tempfile::tempdir().unwrap();
        let net = LocalNetwork::new();
        let engine = Engine::start(
            1,
            open_db(dir.path(), &fast_config(1000)).unwrap(),
            fast_config(1000),
            net.transport(1),
            AddressBook::new(),
        );
        let spec = GroupSpec { initial_voters: vec![(1, "local-1".into())] };
        engine.create_group(PARTITION, spec, Box::new(machine)).await.unwrap();
        for _ in 0..500 {
            if engine.status(PARTITION).is_some_and(|s| s.leader_id == 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ns { engine, _dir: dir, clock: 1_000 }
    }

    pub fn kv(&self) -> GroupKv {
        self.engine.kv(PARTITION)
    }

    pub async fn run(&mut self, request_id: u64, op: Op) -> Result<Option<Inode>> {
        self.clock += 1;
        let request = MutateRequest {
            partition_id: PARTITION,
            request_id,
            command: Some(MetaCommand { now_ns: self.clock, op: Some(op) }),
            client: 0,
        };
        let reply = self.engine.propose(PARTITION, request.encode_to_vec()).await?;
        decode_outcome(&reply).map(|r| r.inode)
    }

    pub async fn create(&mut self, parent: u64, name: &str, mode: u32) -> Result<Inode> {
        let op = CreateOp { parent, name: name.into(), mode, uid: 1000, gid: 100, ..Default::default() };
        self.run(0, Op::Create(op)).await.map(Option::unwrap)
    }

    pub async fn mkdir(&mut self, parent: u64, name: &str) -> Result<Inode> {
        self.create(parent, name, DIR | 0o755).await
    }

    pub async fn file(&mut self, parent: u64, name: &str) -> Result<Inode> {
        self.create(parent, name, REG | 0o644).await
    }

    pub async fn unlink(&mut self, parent: u64, name: &str, directory: bool) -> Result<Inode> {
        self.run(0, Op::Unlink(UnlinkOp { parent, name: name.into(), directory, evict: false }))
            .await
            .map(Option::unwrap)
    }

    pub async fn rename(&mut self, sp: u64, sn: &str, dp: u64, dn: &str, flags: u32) -> Result<Inode> {
        let op = RenameOp {
            src_parent: sp,
            src_name: sn.into(),
            dst_parent: dp,
            dst_name: dn.into(),
            flags,
            evict_replaced: false,
            set_xattrs: vec![],
        };
        self.run(0, Op::Rename(op)).await.map(Option::unwrap)
    }

    pub async fn link(&mut self, ino: u64, parent: u64, name: &str) -> Result<Inode> {
        self.run(0, Op::Link(LinkOp { ino, new_parent: parent, new_name: name.into() })).await.map(Option::unwrap)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Inode> {
        read::lookup(&self.kv(), parent, name.as_bytes())
    }

    pub fn attr(&self, ino: u64) -> Inode {
        self.get(ino).unwrap()
    }

    pub fn get(&self, ino: u64) -> Option<Inode> {
        read_inode(&self.kv(), ino)
    }

    pub fn names(&self, dir: u64) -> Vec<String> {
        let (entries, _) = read::readdir(&self.kv(), dir, b"", 4096, false, b"").unwrap();
        entries.into_iter().map(|e| String::from_utf8(e.name).unwrap()).collect()
    }
}

pub fn read_inode(kv: &GroupKv, ino: u64) -> Option<Inode> {
    use strata_raftstore::KvRead;
    let mut key = vec![b'i'];
    key.extend_from_slice(&ino.to_be_bytes());
    kv.get(&key).unwrap().map(|b| Inode::decode(b.as_slice()).unwrap())
}

pub fn code<T: std::fmt::Debug>(r: Result<T>) -> ErrorCode {
    r.expect_err("the operation should fail").code
}

impl Drop for Ns {
    /// Stops the engine thread so RocksDB is closed before the process exits.
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}
