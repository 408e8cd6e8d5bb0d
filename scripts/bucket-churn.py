"""Cheap buckets, measured: S3 clients create and delete many buckets, so an
empty volume must cost little. Against a running `strata dev` cluster (its
cluster.json names the gateway, the dev keys and every node's pid):

  1. creates N buckets and deletes them again, one after the other
     (rate of each);
  2. creates N buckets and keeps them, lets the cluster sit idle for a while,
     and reports each master's and metanode's CPU use over that time (from
     /proc/PID/stat), as a share of one core, against the same measure taken
     before the buckets existed;
  3. deletes them.

Usage: python3 scripts/bucket-churn.py CLUSTER_DIR [--buckets 1000] [--idle 60]
(CLUSTER_DIR: where `strata dev` keeps cluster.json, e.g. ./strata-dev).
Prints one JSON object with the figures.
"""

import argparse
import json
import os
import time

import boto3
from botocore.config import Config

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def idle_cpu(nodes, seconds):
    """Share of one core each node used over `seconds` of idling."""
    before = {n["id"]: cpu_seconds(n["pid"]) for n in nodes}
    time.sleep(seconds)
    return {f'{n["role"]}-{n["id"]}': round((cpu_seconds(n["pid"]) - before[n["id"]]) / seconds, 4) for n in nodes}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cluster_dir")
    parser.add_argument("--buckets", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=60)
    args = parser.parse_args()
    cluster = json.load(open(os.path.join(args.cluster_dir, "cluster.json")))
    s3conf = cluster["s3"]
    s3 = boto3.client(
        "s3",
        endpoint_url=s3conf["endpoint"],
        aws_access_key_id=s3conf["access_key_id"],
        aws_secret_access_key=s3conf["secret_access_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    watched = [n for n in cluster["nodes"] if n["role"] in ("master", "metanode")]
    names = [f"churn-{i:05d}" for i in range(args.buckets)]
    out = {"buckets": args.buckets, "idle_seconds": args.idle}

    out["idle_cpu_before"] = idle_cpu(watched, args.idle)
    started = time.time()
    for name in names:
        s3.create_bucket(Bucket=name)
    out["create_per_s"] = round(len(names) / (time.time() - started), 2)
    started = time.time()
    for name in names:
        s3.delete_bucket(Bucket=name)
    out["delete_per_s"] = round(len(names) / (time.time() - started), 2)

    for name in names:
        s3.create_bucket(Bucket=name)
    time.sleep(30)  # let elections, group creation and the first heartbeats settle
    out["idle_cpu_with_buckets"] = idle_cpu(watched, args.idle)
    for name in names:
        s3.delete_bucket(Bucket=name)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
