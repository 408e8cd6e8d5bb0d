//! `strata console url`: a login link for the master's web console, signed
//! with an admin key's secret (HMAC, see `strata_master::console`), valid
//! for minutes; the secret itself never goes into the link.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use strata_master::console::{MAX_LINK_LIFETIME, login_signature};

use crate::cluster_file::ClusterFile;

/// How long a printed link stays valid by default.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Args)]
pub struct ConsoleUrlArgs {
    /// The console's HOST:PORT (default: a master's console from cluster.json).
    #[arg(long)]
    pub console: Option<String>,
    /// Access key id of the admin user (default: cluster.json's admin key).
    #[arg(long, env = "STRATA_ADMIN_KEY_ID")]
    pub key: Option<String>,
    /// Its secret (environment only, so it stays out of `ps`).
    #[arg(skip = std::env::var("STRATA_ADMIN_SECRET").ok())]
    pub secret: Option<String>,
    /// Minutes the link stays valid (at most 60).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub minutes: u64,
}

/// A login link for `console` with `key_id`, valid for [`DEFAULT_LIFETIME`].
pub fn login_link(console: &str, key_id: &str, secret: &str) -> String {
    link(console, key_id, secret, DEFAULT_LIFETIME)
}

fn link(console: &str, key_id: &str, secret: &str, lifetime: Duration) -> String {
    let lifetime = lifetime.min(MAX_LINK_LIFETIME);
    let expires = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + lifetime.as_secs();
    let signature = login_signature(secret, key_id, expires);
    format!("http://{console}/login?key={key_id}&expires={expires}&signature={signature}")
}

pub fn url(args: ConsoleUrlArgs, json: bool) -> anyhow::Result<()> {
    let recorded = [Path::new("."), Path::new("strata-dev")].into_iter().find_map(|d| ClusterFile::load(d).ok()?);
    let console = match (&args.console, &recorded) {
        (Some(console), _) => console.clone(),
        (None, Some(file)) => file
            .nodes
            .iter()
            .find_map(|n| n.console.clone())
            .ok_or_else(|| anyhow::anyhow!("cluster.json names no console; pass --console HOST:PORT"))?,
        (None, None) => anyhow::bail!("no console given: pass --console HOST:PORT"),
    };
    let admin = recorded.as_ref().and_then(|f| f.admin.clone());
    let (key, secret) = match (args.key, args.secret, admin) {
        (Some(key), Some(secret), _) => (key, secret),
        (None, None, Some(admin)) => (admin.access_key_id, admin.secret_access_key),
        _ => anyhow::bail!("pass the admin key as --key (or STRATA_ADMIN_KEY_ID) with STRATA_ADMIN_SECRET"),
    };
    let url = link(&console, &key, &secret, Duration::from_secs(args.minutes * 60));
    if json {
        println!("{}", serde_json::json!({ "url": url, "valid_minutes": args.minutes }));
    } else {
        println!("{url}");
    }
    Ok(())
}
