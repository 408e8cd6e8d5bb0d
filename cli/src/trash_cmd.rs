//! `strata trash list|restore|purge VOLUME`: the files a volume kept after
//! they were deleted (see `strata_sdk::trash`; `strata volume set NAME
//! --trash-hours N` turns it on).

use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;
use strata_common::size::format_size;

use crate::admin::output;
use crate::fs_cmd::open;

#[derive(Debug, Subcommand)]
pub enum TrashCmd {
    /// The deleted files the volume keeps, oldest first.
    List { volume: String },
    /// Put a deleted file back where it was (or at --to PATH); never replaces a file.
    Restore {
        volume: String,
        /// The entry's name in the trash, as `strata trash list` shows it.
        entry: String,
        #[arg(long)]
        to: Option<String>,
    },
    /// Remove kept files for good: those older than the volume's retention,
    /// or every one with --all.
    Purge {
        volume: String,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Serialize)]
struct EntryView {
    entry: String,
    ino: u64,
    size: u64,
    /// Inode of the directory it was deleted from, and its name there.
    parent: u64,
    name: String,
    deleted_at_ms: u64,
    /// When it will be purged (ms since the epoch).
    expires_at_ms: u64,
}

pub async fn run(masters: Vec<String>, action: TrashCmd, json: bool) -> anyhow::Result<()> {
    match action {
        TrashCmd::List { volume } => {
            let volume = open(masters, &volume).await?;
            let retention = volume.meta().trash_retention().unwrap_or(Duration::ZERO);
            let entries: Vec<EntryView> = volume
                .meta()
                .trash_list()
                .await?
                .into_iter()
                .map(|e| EntryView {
                    entry: String::from_utf8_lossy(&e.entry).into_owned(),
                    ino: e.ino,
                    size: e.size,
                    parent: e.parent,
                    name: String::from_utf8_lossy(&e.name).into_owned(),
                    deleted_at_ms: e.deleted_at_ms,
                    expires_at_ms: e.deleted_at_ms + retention.as_millis() as u64,
                })
                .collect();
            output(json, &entries, |entries| {
                for e in entries {
                    println!("{}  {:>10}  {} (in directory inode {})", e.entry, format_size(e.size), e.name, e.parent);
                }
            })
        }
        TrashCmd::Restore { volume, entry, to } => {
            let volume = open(masters, &volume).await?;
            let target = match &to {
                Some(path) => {
                    let path = path.trim_matches('/');
                    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
                    anyhow::ensure!(!name.is_empty(), "--to needs a file path");
                    Some((volume.stat(dir.as_bytes()).await?.ino, name.as_bytes().to_vec()))
                }
                None => None,
            };
            let restored =
                volume.meta().trash_restore(entry.as_bytes(), target.as_ref().map(|(p, n)| (*p, n.as_slice()))).await?;
            output(json, &serde_json::json!({ "entry": entry, "ino": restored.ino }), |_| println!("{entry} restored"))
        }
        TrashCmd::Purge { volume, all } => {
            let volume = open(masters, &volume).await?;
            let older_than = if all {
                Duration::ZERO
            } else {
                volume.meta().trash_retention().ok_or_else(|| {
                    anyhow::anyhow!("the volume keeps no deleted files; --all empties what its trash still holds")
                })?
            };
            let purged = volume.meta().trash_purge(older_than).await?;
            output(json, &serde_json::json!({ "purged": purged }), |_| println!("{purged} files purged"))
        }
    }
}
