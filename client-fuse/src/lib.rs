//! Strata's FUSE client: a volume mounted as a POSIX file system over the
//! sdk (metadata through `MetaClient`, file contents through the data path).
//! `fuser` runs several session threads; every request that waits on the
//! network is handed to the tokio runtime and answered from there.

mod attr;
mod bdi;
mod fs;
mod handles;
mod inner;
pub mod mountinfo;
mod watchdog;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fuser::{Config, MountOption};
use strata_sdk::cache::{BlockCache, CacheConfig, SharedTier};
use strata_sdk::data::DataClient;
use strata_sdk::data::file::DEFAULT_BLOB_SIZE;
use strata_sdk::{MasterClient, MetaClient};

/// How a volume is mounted.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub masters: Vec<String>,
    pub volume: String,
    /// How long the kernel may trust attributes and names it was given.
    pub attr_timeout: Duration,
    pub entry_timeout: Duration,
    /// FUSE session threads.
    pub threads: usize,
    /// The block caches (L1 memory, L2 disk).
    pub cache: CacheConfig,
    /// The kernel's read-ahead for this mount in bytes (0: the kernel's default).
    pub kernel_read_ahead: u64,
    /// Answer lookups, attributes and opens from metanode delegations while
    /// they hold (see `strata_sdk::delegation`).
    pub delegations: bool,
}

/// A mounted volume; unmounted when dropped or by [`Mounted::unmount`].
pub struct Mounted {
    session: fuser::BackgroundSession,
}

impl Mounted {
    pub fn unmount(self) -> anyhow::Result<()> {
        self.session.umount_and_join().context("unmounting")
    }

    /// Waits until the file system is unmounted from outside (`strata umount`).
    pub fn join(self) -> anyhow::Result<()> {
        self.session.join().context("serving the mount")
    }
}

/// Records the mount's cache figures every few seconds while it is mounted.
async fn record_cache_figures(inner: std::sync::Weak<inner::Inner>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        strata_sdk::cache::CacheReport { delegation_hits: inner.meta.delegation_hits(), ..inner.cache.report() }
            .record();
    }
}

/// Mounts `config.volume` at `mountpoint`; requests are served on `runtime`.
pub async fn mount(
    config: &MountConfig,
    mountpoint: &Path,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<Mounted> {
    let master = MasterClient::new(config.masters.clone())?;
    let meta = MetaClient::open(&master, &config.volume).await.context("opening the volume's namespace")?;
    let data = DataClient::open(&master, &config.volume).await.context("opening the volume's data path")?;
    // A lock session for this mount, renewed for as long as the runtime runs.
    if config.delegations {
        meta.enable_delegations();
    }
    let meta = Arc::new(meta);
    let session = rand::random::<u64>() | 1;
    meta.renew_session(session, inner::SESSION_LEASE).await.context("starting the lock session")?;
    let renewer = meta.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(inner::SESSION_RENEW).await;
            if let Err(e) = renewer.renew_session(session, inner::SESSION_LEASE).await {
                tracing::warn!(error = %e, "renewing the lock session failed");
            }
        }
    });
    // What reaches the disk cache is read from there again, not from the datanodes.
    data.set_drop_behind(config.cache.disk_dir.is_some() && config.cache.disk_bytes > 0);
    let data = Arc::new(data);
    let cache = BlockCache::new(data.clone(), &config.cache).context("opening the block caches")?;
    if config.cache.shared_tier {
        cache.set_shared_tier(SharedTier::open(data.master()?).await);
    }
    let inner = inner::Inner {
        meta,
        data,
        cache,
        handles: handles::Handles::default(),
        attr_ttl: config.attr_timeout,
        entry_ttl: config.entry_timeout,
        blob_size: DEFAULT_BLOB_SIZE,
        session,
        notifier: std::sync::OnceLock::new(),
        versions: std::sync::Mutex::new(std::collections::HashMap::new()),
        lock_users: std::sync::Mutex::new(std::collections::HashSet::new()),
    };
    let inner = Arc::new(inner);
    runtime.spawn(record_cache_figures(Arc::downgrade(&inner)));
    let filesystem = fs::StrataFs { inner: inner.clone(), runtime };
    let mut options = Config::default();
    options.mount_options = vec![
        MountOption::FSName(mountinfo::source_of(&config.volume)),
        MountOption::Subtype("strata".into()),
        MountOption::DefaultPermissions,
    ];
    // Every user may use the mount; the kernel checks permissions (default_permissions).
    options.acl = fuser::SessionACL::All;
    options.n_threads = Some(config.threads.max(1));
    options.clone_fd = true;
    let session = fuser::Session::new(filesystem, mountpoint, &options)
        .with_context(|| format!("mounting {} at {}", config.volume, mountpoint.display()))?;
    let _ = inner.notifier.set(session.notifier());
    if config.kernel_read_ahead > 0 {
        bdi::set_read_ahead(mountpoint, config.kernel_read_ahead);
    }
    let session = session.spawn().context("starting the FUSE session")?;
    tracing::info!(volume = %config.volume, mountpoint = %mountpoint.display(), "volume mounted");
    Ok(Mounted { session })
}
