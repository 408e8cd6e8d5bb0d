//! The S3 gateway of `strata dev`: a `strata s3` child on a free port (or
//! `--s3-port`), and a `dev` user whose key pair goes into cluster.json, so
//! `aws --endpoint-url` works against the cluster right away.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strata_common::ErrorCode;
use strata_sdk::MasterClient;

use crate::cluster_file::ClusterFile;

/// The user `strata dev` makes for S3 clients.
pub const DEV_USER: &str = "dev";

/// The gateway as cluster.json records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevS3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub port: u16,
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub pid: Option<u32>,
}

/// Starts the gateway and returns its process; records it in `file`.
pub async fn start(dir: &Path, file: &mut ClusterFile, port: Option<u16>) -> anyhow::Result<Child> {
    let client = MasterClient::new(file.master_addresses())?;
    let recorded = file.s3.as_ref().map(|s3| s3.access_key_id.as_str());
    let (access_key_id, secret_access_key) = user_key(&client, DEV_USER, recorded).await?;
    let port = match (port, &file.s3) {
        (Some(port), _) => port,
        (None, Some(s3)) => s3.port,
        (None, None) => crate::dev::free_port()?,
    };
    let listen = format!("127.0.0.1:{port}");
    let exe = std::env::current_exe().context("locating the strata binary")?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("s3.log"))?;
    let mut command = Command::new(exe);
    command
        .arg("--master")
        .arg(file.master_addresses().join(","))
        .args(file.s3_metrics.iter().flat_map(|m| ["--metrics", m.as_str()]))
        .arg("s3")
        .arg("--listen")
        .arg(&listen)
        .arg("--io-threads")
        .arg(crate::runtime::shared_machine_workers().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env_remove("STRATA_S3_LISTEN")
        .env_remove("STRATA_METRICS");
    let mut child = command.spawn().context("starting the s3 gateway")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("the s3 gateway exited ({status}); see {}", dir.join("s3.log").display());
        }
        anyhow::ensure!(Instant::now() < deadline, "the s3 gateway did not listen on {listen} within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s3 =
        DevS3 { endpoint: format!("http://{listen}"), port, access_key_id, secret_access_key, pid: Some(child.id()) };
    println!("s3 gateway: {}  (user {DEV_USER})", s3.endpoint);
    println!("export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={}", s3.access_key_id, s3.secret_access_key);
    println!("aws --endpoint-url {} s3 ls", s3.endpoint);
    file.s3 = Some(s3);
    file.store(dir)?;
    Ok(child)
}

/// A key pair of `user`: the one recorded (`recorded`, an access key id) if
/// the master still knows it, else a new one (making the user if needed).
pub async fn user_key(client: &MasterClient, user: &str, recorded: Option<&str>) -> anyhow::Result<(String, String)> {
    if let Some(id) = recorded {
        match client.get_access_key(id).await {
            Ok(key) => return Ok((key.access_key_id, key.secret_access_key)),
            Err(e) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("looking up the {user} access key")),
        }
    }
    let key = match client.create_user(user).await {
        Ok(user) => user.access_keys.into_iter().next().context("a new user comes with a key")?,
        Err(e) if e.code == ErrorCode::AlreadyExists => client.create_access_key(user).await?,
        Err(e) => return Err(e).with_context(|| format!("creating the {user} user")),
    };
    Ok((key.access_key_id, key.secret_access_key))
}

/// Stops the gateway child.
pub fn stop(mut child: Child) {
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
