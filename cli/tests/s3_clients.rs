//! The S3 gateway of a `strata dev` cluster driven by real clients (boto3 and
//! awscli from PyPI, rclone and s3fs from Debian: `scripts/setup.sh`
//! installs them) over real HTTP (and HTTPS, a second gateway), with
//! the default volume mounted to check that objects and files are the same
//! data. The checks live in `tests/s3/clients.py`; this test runs it.
//! `STRATA_S3_LIST_KEYS` sets how many keys the listing check writes
//! (default 2,000; the 10,000 with `STRATA_S3_LIST_KEYS=10000`).

mod common;

use std::process::Command;

use common::{DevCluster, Mount};

#[test]
fn real_s3_clients_work_against_the_gateway() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&["--datanodes", "3"]);
    let file = cluster.cluster_file();
    let s3 = &file["s3"];
    let endpoint = s3["endpoint"].as_str().expect("cluster.json names the gateway's endpoint");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let mount = Mount::new(&cluster, "s3-mnt");
    let work = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/clients.py");
    let output = Command::new("python3")
        .arg(script)
        .env("STRATA_S3_ENDPOINT", endpoint)
        .env("AWS_ACCESS_KEY_ID", s3["access_key_id"].as_str().unwrap())
        .env("AWS_SECRET_ACCESS_KEY", s3["secret_access_key"].as_str().unwrap())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("STRATA_MOUNT", &mount.path)
        .env("STRATA_S3_WORK", work.path())
        .env("STRATA_BIN", env!("CARGO_BIN_EXE_strata"))
        .env("STRATA_MASTER", cluster.masters().join(","))
        .output()
        .expect("python3 runs (scripts/setup.sh puts a venv with boto3 and awscli first on PATH)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    let log = std::fs::read_to_string(cluster.cluster_dir().join("s3.log")).unwrap_or_default();
    assert!(
        output.status.success() && stdout.contains("all s3 client checks passed"),
        "the s3 client checks failed:\n{stdout}\n{stderr}\ngateway log (tail):\n{}",
        log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    // The access log names each request's operation (counted per operation too).
    for op in ["PutObject", "CompleteMultipartUpload", "UploadPartCopy", "ListObjectsV2"] {
        assert!(log.contains(op), "the gateway's access log names no {op} request");
    }
    mount.unmount();
}
