//! Access keys from the master, for s3s's signature checks.
//!
//! The master hands out one key at a time (never every secret in one
//! call); the gateway keeps what it looked up for [`KEY_TTL`], so a deleted
//! key stops working within that time, and remembers unknown keys as briefly
//! so a flood of bad keys does not become a flood of master calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Error, S3ErrorCode, S3Result};
use strata_common::ErrorCode;
use strata_sdk::MasterClient;

/// How long a looked-up key is trusted without asking the master again.
pub const KEY_TTL: Duration = Duration::from_secs(30);
/// How long an unknown key is remembered as unknown.
const UNKNOWN_TTL: Duration = Duration::from_secs(2);
/// Cached lookups before the oldest are dropped.
const CACHE_MAX: usize = 10_000;

#[derive(Clone)]
enum Lookup {
    Known { secret: Arc<str>, user: Arc<str> },
    Unknown,
}

/// Keys looked up in the master, cached briefly.
pub struct MasterKeys {
    master: MasterClient,
    cache: Mutex<HashMap<String, (Instant, Lookup)>>,
}

impl MasterKeys {
    pub fn new(master: MasterClient) -> Arc<MasterKeys> {
        Arc::new(MasterKeys { master, cache: Mutex::new(HashMap::new()) })
    }

    /// The secret and user of `access_key`.
    async fn lookup(&self, access_key: &str) -> S3Result<(Arc<str>, Arc<str>)> {
        let cached = self.cache.lock().expect("key cache").get(access_key).cloned();
        let lookup = match cached {
            Some((at, lookup)) if at.elapsed() < ttl(&lookup) => lookup,
            _ => self.fetch(access_key).await?,
        };
        match lookup {
            Lookup::Known { secret, user } => Ok((secret, user)),
            Lookup::Unknown => Err(S3Error::with_message(S3ErrorCode::InvalidAccessKeyId, "unknown access key")),
        }
    }

    async fn fetch(&self, access_key: &str) -> S3Result<Lookup> {
        let lookup = match self.master.get_access_key(access_key).await {
            Ok(key) => Lookup::Known { secret: key.secret_access_key.into(), user: key.user.into() },
            Err(e) if e.code == ErrorCode::NotFound => Lookup::Unknown,
            Err(e) => {
                tracing::warn!(error = %e, "looking up an access key failed");
                return Err(S3Error::with_message(S3ErrorCode::ServiceUnavailable, "the master did not answer"));
            }
        };
        let mut cache = self.cache.lock().expect("key cache");
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (at, lookup)| at.elapsed() < ttl(lookup));
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(access_key.to_string(), (Instant::now(), lookup.clone()));
        Ok(lookup)
    }

    /// The user holding `access_key` (after its signature was checked).
    pub async fn user_of(&self, access_key: &str) -> S3Result<Arc<str>> {
        Ok(self.lookup(access_key).await?.1)
    }
}

fn ttl(lookup: &Lookup) -> Duration {
    match lookup {
        Lookup::Known { .. } => KEY_TTL,
        Lookup::Unknown => UNKNOWN_TTL,
    }
}

/// The s3s side of [`MasterKeys`].
pub struct Auth(pub Arc<MasterKeys>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let (secret, _) = self.0.lookup(access_key).await?;
        Ok(SecretKey::from(&*secret))
    }
}
