//! The master's state machine applied through a real single-node engine on
//! RocksDB: the rules each command enforces.

use strata_common::ErrorCode;
use strata_common::types::AccessLevel;
use strata_raftstore::testing::{LocalNetwork, fast_config};
use strata_raftstore::{AddressBook, Engine, GroupSpec, open_db};

use crate::state::*;

async fn engine(dir: &std::path::Path) -> Engine {
    let net = LocalNetwork::new();
    let db = open_db(dir, &fast_config(1000)).unwrap();
    let engine = Engine::start(1, db, fast_config(1000), net.transport(1), AddressBook::new());
    net.register(1, engine.clone());
    let spec = GroupSpec { initial_voters: vec![(1, "local-1".into())] };
    engine.create_group(MASTER_GROUP, spec, Box::new(MasterMachine)).await.unwrap();
    for _ in 0..200 {
        if engine.status(MASTER_GROUP).is_some_and(|s| s.leader_id == 1) {
            return engine;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("single master did not elect itself");
}

async fn run(engine: &Engine, cmd: Command) -> strata_common::Result<Outcome> {
    let reply = engine.propose(MASTER_GROUP, serde_json::to_vec(&cmd).unwrap()).await?;
    serde_json::from_slice::<Outcome>(&reply).unwrap().into_result()
}

fn register(id: u64, role: &str, address: &str) -> Command {
    Command::RegisterNode { id, role: role.into(), address: address.into(), now_ms: 1 }
}

fn create_volume(name: &str, request_id: &str) -> Command {
    Command::CreateVolume {
        name: name.into(),
        redundancy: "replica:3".into(),
        capacity_bytes: 1 << 30,
        owner: "alice".into(),
        request_id: request_id.into(),
        now_ms: 5,
        meta: vec![
            PlannedMetaPartition { inode_start: 1, inode_end: Some(100), members: vec![101, 102, 103] },
            PlannedMetaPartition { inode_start: 100, inode_end: None, members: vec![103, 101, 102] },
        ],
        data: vec![vec![201, 202, 203]],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registration_assigns_or_keeps_ids() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let Outcome::Node(a) = run(&engine, register(0, "datanode", "h:1")).await.unwrap() else { panic!() };
    let Outcome::Node(b) = run(&engine, register(0, "datanode", "h:2")).await.unwrap() else { panic!() };
    assert!(a.id >= 1000 && b.id == a.id + 1, "assigned ids are fresh: {a:?} {b:?}");
    // re-registering an id with a new address keeps the id
    let Outcome::Node(moved) = run(&engine, register(a.id, "datanode", "h:9")).await.unwrap() else { panic!() };
    assert_eq!((moved.id, moved.address.as_str()), (a.id, "h:9"));
    // an id cannot change role
    let err = run(&engine, register(a.id, "metanode", "h:9")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);
    let nodes = StateReader(engine.kv(MASTER_GROUP)).nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_get_fresh_ids_and_creates_are_idempotent_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let Outcome::Volume(v) = run(&engine, create_volume("vol-a", "req-1")).await.unwrap() else { panic!() };
    assert_eq!(v.id, 1);
    let partition_ids: Vec<u64> =
        v.meta_partitions.iter().map(|p| p.id).chain(v.data_partitions.iter().map(|p| p.id)).collect();
    assert_eq!(partition_ids, vec![1, 2, 3]);
    assert_eq!(v.meta_partitions[1].inode_end, None, "last meta partition is open-ended");

    // the same request again (a client retry) returns the same volume
    let Outcome::Volume(again) = run(&engine, create_volume("vol-a", "req-1")).await.unwrap() else { panic!() };
    assert_eq!(again, v);
    // another request for the same name is refused
    let err = run(&engine, create_volume("vol-a", "req-2")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);

    let Outcome::Volume(b) = run(&engine, create_volume("vol-b", "req-3")).await.unwrap() else { panic!() };
    assert_eq!(b.id, 2);
    assert_eq!(b.meta_partitions[0].id, 4, "partition ids are never reused");

    run(&engine, Command::DeleteVolume { name: "vol-a".into() }).await.unwrap();
    let err = run(&engine, Command::DeleteVolume { name: "vol-a".into() }).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    let Outcome::Volume(c) = run(&engine, create_volume("vol-a", "req-4")).await.unwrap() else { panic!() };
    assert_eq!(c.id, 3, "a recreated volume gets a new id");
    let names: Vec<String> =
        StateReader(engine.kv(MASTER_GROUP)).volumes().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["vol-a", "vol-b"]);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_access_keys() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let key = |id: &str| AccessKeyRecord { id: id.into(), secret: "s".into(), created_at_ms: 1 };
    run(&engine, Command::CreateUser { name: "bob".into(), access_key: key("K1"), now_ms: 1 }).await.unwrap();
    let err =
        run(&engine, Command::CreateUser { name: "bob".into(), access_key: key("K2"), now_ms: 1 }).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);
    run(&engine, Command::CreateAccessKey { user: "bob".into(), access_key: key("K3") }).await.unwrap();
    let err =
        run(&engine, Command::CreateAccessKey { user: "nobody".into(), access_key: key("K4") }).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    run(&engine, Command::DeleteAccessKey { access_key_id: "K1".into() }).await.unwrap();
    let users = StateReader(engine.kv(MASTER_GROUP)).users().unwrap();
    let keys: Vec<&str> = users[0].access_keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(keys, ["K3"]);
    run(&engine, Command::DeleteUser { name: "bob".into() }).await.unwrap();
    let err = run(&engine, Command::DeleteAccessKey { access_key_id: "K3".into() }).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "deleting a user removes its keys");
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_need_a_volume_and_a_key_and_can_be_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let key = AccessKeyRecord { id: "K1".into(), secret: "s".into(), created_at_ms: 1 };
    run(&engine, Command::CreateUser { name: "bob".into(), access_key: key, now_ms: 1 }).await.unwrap();
    run(&engine, create_volume("vol-a", "req-1")).await.unwrap();
    let grant = |volume: &str, key: &str, level: Option<AccessLevel>| Command::SetGrant {
        volume: volume.into(),
        access_key_id: key.into(),
        level,
    };
    let grants = || StateReader(engine.kv(MASTER_GROUP)).volume("vol-a").unwrap().unwrap().grants;
    run(&engine, grant("vol-a", "K1", Some(AccessLevel::Read))).await.unwrap();
    run(&engine, grant("vol-a", "K1", Some(AccessLevel::Write))).await.unwrap();
    assert_eq!(grants().into_iter().collect::<Vec<_>>(), vec![("K1".to_string(), AccessLevel::Write)]);
    let err = run(&engine, grant("vol-a", "K9", Some(AccessLevel::Read))).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "an unknown key gets no grant");
    let err = run(&engine, grant("vol-b", "K1", Some(AccessLevel::Read))).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "an unknown volume gets no grant");
    run(&engine, grant("vol-a", "K1", None)).await.unwrap();
    assert!(grants().is_empty());
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_s_capacity_changes_and_an_unknown_volume_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    run(&engine, create_volume("vol-a", "req-1")).await.unwrap();
    let capacity = || StateReader(engine.kv(MASTER_GROUP)).volume("vol-a").unwrap().unwrap().capacity_bytes;
    let before = capacity();
    let set = |volume: &str, capacity_bytes| Command::SetCapacity { volume: volume.into(), capacity_bytes };
    run(&engine, set("vol-a", before * 2)).await.unwrap();
    assert_eq!(capacity(), before * 2);
    let err = run(&engine, set("vol-b", 1 << 30)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    engine.shutdown();
}
