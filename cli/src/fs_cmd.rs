//! `strata fs`: a volume by paths from the command line, through the sdk's
//! path API (`strata_sdk::fs::Volume`), without a mount: list, stat, make
//! directories, put and get whole files (a put appears whole or not at all),
//! remove, rename, and reclaim temporaries left by writers that died.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use strata_sdk::MasterClient;
use strata_sdk::cache::{CacheConfig, DEFAULT_BLOCK_SIZE};
use strata_sdk::fs::{CreateOptions, Volume};
use strata_sdk::types::{Attr, FileKind};

/// Bytes read from the input before each write to the volume.
const PUT_CHUNK: usize = 4 << 20;
/// Bytes fetched per read of `strata fs get`.
const GET_CHUNK: u64 = 8 << 20;

#[derive(Debug, Subcommand)]
pub enum FsCmd {
    /// List a directory (names in byte order, with kind and size).
    Ls {
        volume: String,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Attributes of a path.
    Stat { volume: String, path: String },
    /// Make a directory and its missing parents.
    Mkdir { volume: String, path: String },
    /// Write standard input as the whole file PATH (made visible only once complete).
    Put {
        volume: String,
        path: String,
        /// Make missing parent directories.
        #[arg(long)]
        parents: bool,
        /// Fail if PATH exists instead of replacing it.
        #[arg(long)]
        no_replace: bool,
    },
    /// Write the file PATH to standard output.
    Get { volume: String, path: String },
    /// Remove a file or an empty directory.
    Rm { volume: String, path: String },
    /// Rename FROM to TO (replacing a file at TO).
    Mv { volume: String, from: String, to: String },
    /// Remove temporaries of writers that died, older than --grace-secs.
    Reclaim {
        volume: String,
        #[arg(long, default_value_t = strata_sdk::fs::TEMP_GRACE.as_secs())]
        grace_secs: u64,
    },
}

pub(crate) async fn open(masters: Vec<String>, volume: &str) -> anyhow::Result<Volume> {
    let master = MasterClient::new(masters)?;
    let cache = CacheConfig {
        mem_bytes: 64 << 20,
        disk_dir: None,
        disk_bytes: 0,
        block_size: DEFAULT_BLOCK_SIZE,
        disk_direct_io: false,
        shared_tier: false,
    };
    Volume::connect(&master, volume, &cache).await.with_context(|| format!("opening volume {volume}"))
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::CharDevice => "char-device",
        FileKind::BlockDevice => "block-device",
    }
}

fn attr_json(attr: &Attr) -> serde_json::Value {
    serde_json::json!({
        "ino": attr.ino,
        "kind": kind_name(attr.kind),
        "mode": format!("{:o}", attr.perm),
        "uid": attr.uid,
        "gid": attr.gid,
        "size": attr.size,
        "nlink": attr.nlink,
        "mtime_ns": attr.mtime_ns,
    })
}

pub async fn run(masters: Vec<String>, command: FsCmd, json: bool) -> anyhow::Result<()> {
    match command {
        FsCmd::Ls { volume, path } => {
            let volume = open(masters, &volume).await?;
            let mut after = Vec::new();
            let mut listed = Vec::new();
            loop {
                let page =
                    volume.list(path.as_bytes(), &after, 1000).await.with_context(|| format!("listing {path}"))?;
                for entry in page.entries {
                    let name = String::from_utf8_lossy(&entry.name).into_owned();
                    let size = entry.attr.as_ref().map_or(0, |a| a.size);
                    if json {
                        listed.push(serde_json::json!({"name": name, "kind": kind_name(entry.kind), "size": size}));
                    } else {
                        println!("{:<12} {:>14} {name}", kind_name(entry.kind), size);
                    }
                }
                match page.next {
                    Some(next) => after = next,
                    None => break,
                }
            }
            if json {
                println!("{}", serde_json::Value::Array(listed));
            }
        }
        FsCmd::Stat { volume, path } => {
            let attr = open(masters, &volume).await?.stat(path.as_bytes()).await?;
            println!(
                "{}",
                if json { attr_json(&attr).to_string() } else { serde_json::to_string_pretty(&attr_json(&attr))? }
            );
        }
        FsCmd::Mkdir { volume, path } => {
            open(masters, &volume).await?.mkdir_p(path.as_bytes()).await?;
        }
        FsCmd::Put { volume, path, parents, no_replace } => {
            let volume = open(masters, &volume).await?;
            let options = CreateOptions { make_parents: parents, no_replace };
            let mut write = volume.create(path.as_bytes(), options).await?;
            let mut stdin = std::io::stdin().lock();
            let mut buffer = vec![0; PUT_CHUNK];
            loop {
                let n = match stdin.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        write.abort().await;
                        return Err(e).context("reading standard input");
                    }
                };
                if let Err(e) = write.write(&buffer[..n]).await {
                    write.abort().await;
                    return Err(e).context("writing to the volume");
                }
            }
            let attr = write.commit().await.with_context(|| format!("committing {path}"))?;
            if json {
                println!("{}", attr_json(&attr));
            }
        }
        FsCmd::Get { volume, path } => {
            let file = open(masters, &volume).await?.open(path.as_bytes()).await?;
            let mut out = std::io::stdout().lock();
            let mut at = 0;
            while at < file.attr().size {
                let piece = file.read(at, GET_CHUNK).await?;
                if piece.is_empty() {
                    break;
                }
                out.write_all(&piece).context("writing standard output")?;
                at += piece.len() as u64;
            }
            out.flush()?;
        }
        FsCmd::Rm { volume, path } => open(masters, &volume).await?.remove(path.as_bytes()).await?,
        FsCmd::Mv { volume, from, to } => open(masters, &volume).await?.rename(from.as_bytes(), to.as_bytes()).await?,
        FsCmd::Reclaim { volume, grace_secs } => {
            let removed = open(masters, &volume).await?.reclaim_temporaries(Duration::from_secs(grace_secs)).await?;
            if json {
                println!("{}", serde_json::json!({ "removed": removed }));
            } else {
                println!("removed {removed} temporaries");
            }
        }
    }
    Ok(())
}
