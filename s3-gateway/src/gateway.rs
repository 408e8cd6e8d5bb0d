//! The gateway's state: its configuration, the master, and the volumes it
//! has open as buckets; and who may use which bucket.
//!
//! A bucket is a volume. A volume with an owner is that user's bucket, and
//! the access keys the owner's admin granted (`strata bucket allow`) may
//! read, write or administer it; one without an owner (made by an admin,
//! e.g. `strata dev`'s) is open to every key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s3s::{S3Error, S3ErrorCode, S3Request, S3Result};
use strata_common::types::{AccessLevel, Redundancy, validate_volume_name};
use strata_common::{ErrorCode, S3Subject};
use strata_proto::master as pb;
use strata_sdk::MasterClient;
use strata_sdk::cache::{CacheConfig, DEFAULT_BLOCK_SIZE};
use strata_sdk::fs::Volume;

use crate::auth::MasterKeys;
use crate::errors::{S3ResultExt, to_s3};
use crate::object_meta::IMPLICIT_DIR_XATTR;

/// Everything `strata s3` is configured with.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Master addresses.
    pub masters: Vec<String>,
    /// What `x-amz-bucket-region` and GetBucketLocation answer.
    pub region: String,
    /// Redundancy of volumes made by CreateBucket.
    pub redundancy: Redundancy,
    /// Capacity of volumes made by CreateBucket.
    pub capacity_bytes: u64,
    /// Memory block cache per open bucket.
    pub cache_bytes_per_bucket: u64,
    /// Multipart uploads untouched this long are reclaimed.
    pub upload_expiry: Duration,
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        GatewayConfig {
            masters: Vec::new(),
            region: "us-east-1".into(),
            redundancy: Redundancy::Replicated { replicas: 3 },
            capacity_bytes: 100 << 30,
            cache_bytes_per_bucket: 64 << 20,
            upload_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// How long who may use a bucket is trusted before the master is asked again
/// (a grant or a revocation takes effect within this).
const ACCESS_TTL: Duration = Duration::from_secs(30);
/// A refused request asks the master again if what it knows is older than this.
const DENIED_RECHECK: Duration = Duration::from_secs(1);

/// An open bucket.
#[derive(Clone)]
pub struct Bucket {
    pub volume: Volume,
    access: Arc<Mutex<Access>>,
}

/// Who may use a bucket, as the master last said.
#[derive(Debug, Clone)]
struct Access {
    /// The owning user; empty: every key may use it.
    owner: String,
    /// Other access keys and what they may do.
    grants: HashMap<String, AccessLevel>,
    read_at: Instant,
}

impl Access {
    fn of(volume: &pb::Volume) -> Access {
        let grants = volume
            .grants
            .iter()
            .filter_map(|g| Some((g.access_key_id.clone(), AccessLevel::from_wire(g.level).ok()??)))
            .collect();
        Access { owner: volume.owner.clone(), grants, read_at: Instant::now() }
    }

    /// Whether `caller` may do what needs `need`.
    fn allows(&self, caller: &Caller, need: AccessLevel) -> bool {
        let granted = self.grants.get(&caller.access_key).copied();
        AccessLevel::on_volume(&self.owner, &caller.user, granted).is_some_and(|level| level >= need)
    }
}

/// Who signed a request: the access key and the user holding it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Arc<str>,
    pub access_key: String,
}

/// The S3 service. Cheap to clone (the server and its sweeper share one).
#[derive(Clone)]
pub struct Gateway {
    pub(crate) config: Arc<GatewayConfig>,
    pub(crate) master: Arc<MasterClient>,
    pub(crate) keys: Arc<MasterKeys>,
    open: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl Gateway {
    pub fn new(config: GatewayConfig, master: MasterClient, keys: Arc<MasterKeys>) -> Gateway {
        Gateway { config: Arc::new(config), master: Arc::new(master), keys, open: Arc::default() }
    }

    /// Who signed a request (s3s checked the signature).
    pub(crate) async fn caller<T>(&self, req: &S3Request<T>) -> S3Result<Caller> {
        let Some(credentials) = &req.credentials else {
            return Err(S3Error::with_message(S3ErrorCode::AccessDenied, "anonymous requests are not allowed"));
        };
        let user = self.keys.user_of(&credentials.access_key).await?;
        Ok(Caller { user, access_key: credentials.access_key.clone() })
    }

    /// The bucket `name`, if `caller` may do what needs `need` with it: it
    /// has no owner, `caller` owns it, or a grant to `caller`'s key allows it.
    pub(crate) async fn bucket(&self, name: &str, caller: &Caller, need: AccessLevel) -> S3Result<Bucket> {
        let cached = self.open.lock().expect("open buckets").get(name).cloned();
        let bucket = match cached {
            Some(bucket) => bucket,
            None => self.open_bucket(name).await?,
        };
        let (age, allowed) = {
            let access = bucket.access.lock().expect("bucket access");
            (access.read_at.elapsed(), access.allows(caller, need))
        };
        // A grant takes effect at once (a refusal asks again), a revocation within the TTL.
        if age > ACCESS_TTL || (!allowed && age > DENIED_RECHECK) {
            self.refresh_access(name, &bucket).await?;
        }
        if !bucket.access.lock().expect("bucket access").allows(caller, need) {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                format!("access key {} may not {} bucket {name}", caller.access_key, action(need)),
            ));
        }
        Ok(bucket)
    }

    async fn refresh_access(&self, name: &str, bucket: &Bucket) -> S3Result<()> {
        match self.master.get_volume(name).await {
            Ok(info) => {
                *bucket.access.lock().expect("bucket access") = Access::of(&info);
                Ok(())
            }
            Err(e) if e.code == ErrorCode::NotFound => {
                self.close_bucket(name);
                Err(no_such_bucket(name))
            }
            Err(e) => Err(to_s3(e, S3Subject::Bucket)),
        }
    }

    async fn open_bucket(&self, name: &str) -> S3Result<Bucket> {
        if validate_volume_name(name).is_err() {
            return Err(no_such_bucket(name));
        }
        let info = self.master.get_volume(name).await.for_bucket()?;
        let cache = CacheConfig {
            mem_bytes: self.config.cache_bytes_per_bucket,
            disk_dir: None,
            disk_bytes: 0,
            block_size: DEFAULT_BLOCK_SIZE,
            disk_direct_io: false,
            shared_tier: true,
        };
        let volume = Volume::connect(&self.master, name, &cache).await.for_bucket()?;
        let volume = volume.with_dir_mark(IMPLICIT_DIR_XATTR, b"1");
        let bucket = Bucket { volume, access: Arc::new(Mutex::new(Access::of(&info))) };
        self.open.lock().expect("open buckets").entry(name.to_string()).or_insert(bucket.clone());
        Ok(bucket)
    }

    /// The buckets open now.
    pub(crate) fn open_buckets(&self) -> Vec<(String, Bucket)> {
        self.open.lock().expect("open buckets").iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Forgets an open bucket (deleted, or found gone).
    pub(crate) fn close_bucket(&self, name: &str) {
        self.open.lock().expect("open buckets").remove(name);
    }

    /// Buckets `caller` may at least read.
    pub(crate) async fn buckets_of(&self, caller: &Caller) -> S3Result<Vec<pb::Volume>> {
        let volumes = self.master.list_volumes().await.map_err(|e| to_s3(e, S3Subject::Service))?;
        Ok(volumes.into_iter().filter(|v| Access::of(v).allows(caller, AccessLevel::Read)).collect())
    }

    /// CreateBucket: a new volume owned by `user`.
    pub(crate) async fn create_bucket(&self, name: &str, user: &str) -> S3Result<()> {
        validate_volume_name(name)
            .map_err(|e| S3Error::with_message(S3ErrorCode::InvalidBucketName, e.message.clone()))?;
        let request = pb::CreateVolumeRequest {
            name: name.to_string(),
            redundancy: Some(self.config.redundancy.into()),
            capacity_bytes: self.config.capacity_bytes,
            owner: user.to_string(),
            request_id: format!("s3-{:032x}", rand::random::<u128>()),
            // Buckets are many and mostly small: one Raft group to start,
            // split by the master as the namespace grows.
            meta_partitions: 1,
        };
        match self.master.create_volume(request).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == ErrorCode::AlreadyExists => {
                let existing = self.master.get_volume(name).await.for_bucket()?;
                let subject = if existing.owner == user { S3Subject::OwnBucket } else { S3Subject::Bucket };
                Err(to_s3(e, subject))
            }
            Err(e) => Err(to_s3(e, S3Subject::Bucket)),
        }
    }

    /// DeleteBucket: only an empty one.
    pub(crate) async fn delete_bucket(&self, name: &str, caller: &Caller) -> S3Result<()> {
        let bucket = self.bucket(name, caller, AccessLevel::Owner).await?;
        let page = crate::listing::list(
            &crate::tree::VolumeTree(&bucket.volume),
            &crate::listing::Query { max_keys: 1, ..Default::default() },
        )
        .await
        .for_bucket()?;
        if !page.objects.is_empty() || !page.prefixes.is_empty() {
            return Err(S3Error::with_message(S3ErrorCode::BucketNotEmpty, format!("bucket {name} holds objects")));
        }
        self.close_bucket(name);
        self.master.delete_volume(name).await.for_bucket()
    }
}

fn action(need: AccessLevel) -> &'static str {
    match need {
        AccessLevel::Read => "read",
        AccessLevel::Write => "write to",
        AccessLevel::Owner => "administer",
    }
}

pub(crate) fn no_such_bucket(name: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::NoSuchBucket, format!("no bucket named {name}"))
}
