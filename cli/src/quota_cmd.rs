//! `strata quota`: directory quotas by path (what a `subdir` PVC's size
//! becomes): set or change one, list a volume's with their usage, remove one
//! from an empty directory.

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use strata_common::size::{format_size, parse_size};
use strata_sdk::quota::QuotaStatus;

use crate::fs_cmd::open;

#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// Make the empty directory PATH a quota's root, or change its limits.
    Set {
        volume: String,
        path: String,
        /// Bytes of file contents allowed, e.g. 10GiB (0: no limit).
        #[arg(long, visible_alias = "bytes", default_value = "0")]
        max_bytes: String,
        /// Files and directories allowed, the root included (0: no limit).
        #[arg(long, visible_alias = "files", default_value_t = 0)]
        max_inodes: u64,
    },
    /// A volume's quotas with their usage (a second or two old).
    List { volume: String },
    /// The quota rooted at PATH with its usage.
    Get { volume: String, path: String },
    /// Take the quota off PATH (which must be empty).
    Remove { volume: String, path: String },
}

#[derive(Debug, Serialize)]
struct QuotaView {
    root: u64,
    max_bytes: u64,
    max_inodes: u64,
    used_bytes: u64,
    used_inodes: u64,
}

impl From<QuotaStatus> for QuotaView {
    fn from(q: QuotaStatus) -> Self {
        QuotaView {
            root: q.root,
            max_bytes: q.max_bytes,
            max_inodes: q.max_inodes,
            used_bytes: q.used_bytes,
            used_inodes: q.used_inodes,
        }
    }
}

fn print(quotas: &[QuotaView], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(quotas)?);
        return Ok(());
    }
    let limit = |v: u64, f: &dyn Fn(u64) -> String| if v == 0 { "-".to_string() } else { f(v) };
    println!("{:>12} {:>12} {:>12} {:>12} {:>12}", "ROOT", "MAX BYTES", "USED", "MAX INODES", "INODES");
    for q in quotas {
        println!(
            "{:>12} {:>12} {:>12} {:>12} {:>12}",
            q.root,
            limit(q.max_bytes, &format_size),
            format_size(q.used_bytes),
            limit(q.max_inodes, &|n| n.to_string()),
            q.used_inodes
        );
    }
    Ok(())
}

pub async fn run(masters: Vec<String>, command: QuotaCmd, json: bool) -> anyhow::Result<()> {
    match command {
        QuotaCmd::Set { volume, path, max_bytes, max_inodes } => {
            let max_bytes = parse_size(&max_bytes)?;
            let status = open(masters, &volume)
                .await?
                .set_quota(path.as_bytes(), max_bytes, max_inodes)
                .await
                .with_context(|| format!("setting the quota of {path}"))?;
            print(&[status.into()], json)
        }
        QuotaCmd::List { volume } => {
            let handle = open(masters, &volume).await?;
            let quotas = handle.meta().list_quotas().await.with_context(|| format!("listing quotas of {volume}"))?;
            print(&quotas.into_iter().map(QuotaView::from).collect::<Vec<_>>(), json)
        }
        QuotaCmd::Get { volume, path } => {
            let handle = open(masters, &volume).await?;
            let root = handle.stat(path.as_bytes()).await.with_context(|| format!("finding {path}"))?.ino;
            let quotas = handle.meta().list_quotas().await.with_context(|| format!("listing quotas of {volume}"))?;
            let quota = quotas
                .into_iter()
                .find(|q| q.root == root)
                .ok_or_else(|| anyhow::anyhow!("{path} is not the root of a quota"))?;
            print(&[quota.into()], json)
        }
        QuotaCmd::Remove { volume, path } => {
            let handle = open(masters, &volume).await?;
            let root = handle.stat(path.as_bytes()).await.with_context(|| format!("finding {path}"))?.ino;
            handle.meta().remove_quota(root).await.with_context(|| format!("removing the quota of {path}"))?;
            crate::admin::done(
                json,
                serde_json::json!({ "removed_quota_root": root }),
                &format!("quota of {path} removed"),
            )
        }
    }
}
