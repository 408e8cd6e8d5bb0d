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

/// `strata bench s3` against the dev gateway, small: every operation of
/// every cell is measured (its GETs checked byte for byte, its listings
/// counted), the report holds no secret, and what it wrote is gone.
#[test]
fn strata_bench_s3_measures_every_operation_of_the_gateway() {
    let mut cluster = DevCluster::new();
    cluster.start_with(&[]);
    let file = cluster.cluster_file();
    let s3 = &file["s3"];
    let (endpoint, key, secret) = (
        s3["endpoint"].as_str().unwrap(),
        s3["access_key_id"].as_str().unwrap(),
        s3["secret_access_key"].as_str().unwrap(),
    );
    let work = tempfile::tempdir().unwrap();
    let json = work.path().join("s3.json");
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "s3", "--endpoint", &format!("strata={endpoint},{key},{secret}")])
        .args(["--endpoint", &format!("again={endpoint},{key},{secret}")])
        .args(["--sizes", "4KiB,300KiB", "--clients", "1,3", "--rounds", "1", "--max-objects", "12"])
        .args(["--bucket", "bench-s3"])
        .arg("--json-file")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("again/strata"), "{stdout}");
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(!text.contains(secret), "the report holds the secret");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 2 * 5, "sizes × clients × operations");
    for row in rows {
        let medians = row["medians"].as_array().unwrap();
        assert_eq!(medians.len(), 2, "{row}");
        assert!(medians.iter().all(|m| m.as_f64().unwrap() > 0.0), "{row}");
        assert_eq!(row["objects"].as_u64().unwrap(), 12, "{row}");
    }
    // Everything written was deleted again: the bucket lists nothing.
    let listed = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--master", &cluster.masters().join(","), "fs", "ls", "bench-s3", "/"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listing}{}", String::from_utf8_lossy(&listed.stderr));
    assert!(!listing.contains("strata-bench-"), "left behind: {listing}");
}
