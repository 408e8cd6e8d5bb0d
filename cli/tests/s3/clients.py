"""Real S3 clients (boto3, awscli) against `strata s3` on a live cluster.

Run by cli/tests/s3_clients.rs with STRATA_S3_ENDPOINT, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and STRATA_MOUNT (the default volume mounted) set.
Every check raises on a wrong answer; the script prints one line per check.
"""

import concurrent.futures
import datetime
import hashlib
import os
import subprocess
import sys
import time
import urllib.request

import boto3
import botocore
import botocore.auth
from botocore.config import Config

ENDPOINT = os.environ["STRATA_S3_ENDPOINT"]
KEY = os.environ["AWS_ACCESS_KEY_ID"]
SECRET = os.environ["AWS_SECRET_ACCESS_KEY"]
MOUNT = os.environ["STRATA_MOUNT"]
KEYS_LISTED = int(os.environ.get("STRATA_S3_LIST_KEYS", "2000"))


def client(key=KEY, secret=SECRET, **config):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}, **config),
    )


s3 = client()


def check(name):
    def wrap(f):
        started = time.time()
        f()
        print(f"ok {name} ({time.time() - started:.1f} s)", flush=True)
        return f

    return wrap


def error_code(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{call.__name__} succeeded but should have failed")


def md5(data):
    return hashlib.md5(data).hexdigest()


@check("bucket life cycle")
def _():
    s3.create_bucket(Bucket="life")
    assert "life" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket="life")
    assert error_code(s3.create_bucket, Bucket="life")[0] == "BucketAlreadyOwnedByYou"
    assert error_code(s3.create_bucket, Bucket="Bad_Name")[0] == "InvalidBucketName"
    s3.put_object(Bucket="life", Key="x", Body=b"1")
    assert error_code(s3.delete_bucket, Bucket="life")[0] == "BucketNotEmpty"
    s3.delete_object(Bucket="life", Key="x")
    s3.delete_bucket(Bucket="life")
    assert error_code(s3.head_bucket, Bucket="life")[1] == 404
    assert error_code(s3.list_objects_v2, Bucket="life")[0] == "NoSuchBucket"
    loc = s3.get_bucket_location(Bucket="default")
    assert loc.get("LocationConstraint") in (None, ""), loc


@check("objects: put, get, head, metadata, ranges, conditions, copy, tags, delete")
def _():
    body = os.urandom(3 * 1024 * 1024 + 17)
    put = s3.put_object(
        Bucket="default",
        Key="docs/a.bin",
        Body=body,
        ContentType="application/x-test",
        Metadata={"owner": "strata"},
        CacheControl="max-age=60",
        Tagging="team=ml&stage=raw",
    )
    assert put["ETag"] == f'"{md5(body)}"', put["ETag"]
    got = s3.get_object(Bucket="default", Key="docs/a.bin")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"owner": "strata"}
    assert got["CacheControl"] == "max-age=60" and got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket="default", Key="docs/a.bin")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
    for header, want in [("bytes=0-9", body[:10]), ("bytes=-5", body[-5:]), ("bytes=3145728-", body[3145728:])]:
        part = s3.get_object(Bucket="default", Key="docs/a.bin", Range=header)
        assert part["Body"].read() == want and part["ResponseMetadata"]["HTTPStatusCode"] == 206, header
    assert error_code(s3.get_object, Bucket="default", Key="docs/a.bin", Range=f"bytes={len(body)}-") == ("InvalidRange", 416)
    assert error_code(s3.get_object, Bucket="default", Key="docs/a.bin", IfMatch='"nope"')[1] == 412
    assert error_code(s3.get_object, Bucket="default", Key="docs/a.bin", IfNoneMatch=put["ETag"])[1] == 304
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    assert error_code(s3.get_object, Bucket="default", Key="docs/a.bin", IfModifiedSince=later)[1] == 304
    earlier = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    assert error_code(s3.get_object, Bucket="default", Key="docs/a.bin", IfUnmodifiedSince=earlier)[1] == 412
    s3.get_object(Bucket="default", Key="docs/a.bin", IfMatch=put["ETag"], IfModifiedSince=earlier)
    # Conditional create: the second one is refused.
    s3.put_object(Bucket="default", Key="docs/once", Body=b"first", IfNoneMatch="*")
    assert error_code(s3.put_object, Bucket="default", Key="docs/once", Body=b"second", IfNoneMatch="*")[1] == 412
    assert s3.get_object(Bucket="default", Key="docs/once")["Body"].read() == b"first"
    tags = s3.get_object_tagging(Bucket="default", Key="docs/a.bin")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("stage", "raw"), ("team", "ml")], tags
    s3.put_object_tagging(Bucket="default", Key="docs/a.bin", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert s3.get_object_tagging(Bucket="default", Key="docs/a.bin")["TagSet"] == [{"Key": "k", "Value": "v"}]
    copy = s3.copy_object(Bucket="default", Key="copies/a.bin", CopySource={"Bucket": "default", "Key": "docs/a.bin"})
    assert copy["CopyObjectResult"]["ETag"] == put["ETag"]
    copied = s3.get_object(Bucket="default", Key="copies/a.bin")
    assert copied["Body"].read() == body and copied["Metadata"] == {"owner": "strata"}
    assert error_code(s3.get_object, Bucket="default", Key="docs/missing")[0] == "NoSuchKey"
    s3.delete_object(Bucket="default", Key="copies/a.bin")
    s3.delete_object(Bucket="default", Key="copies/a.bin")  # deleting twice is fine
    assert error_code(s3.head_object, Bucket="default", Key="copies/a.bin")[1] == 404
    assert not os.path.exists(os.path.join(MOUNT, "copies")), "the implied directory went with its last object"
    out = s3.delete_objects(Bucket="default", Delete={"Objects": [{"Key": "docs/once"}, {"Key": "a//b"}]})
    assert [d["Key"] for d in out["Deleted"]] == ["docs/once"] and out["Errors"][0]["Key"] == "a//b", out


@check("keys no path can hold get defined errors and leave nothing behind")
def _():
    s3.put_object(Bucket="default", Key="file", Body=b"x")
    for key, code in [("a//b", "InvalidArgument"), ("a/./b", "InvalidArgument"), ("a/../b", "InvalidArgument"),
                      ("k" * 1025, "KeyTooLongError"), ("file/under", "InvalidRequest")]:
        assert error_code(s3.put_object, Bucket="default", Key=key, Body=b"y")[0] == code, key
    s3.put_object(Bucket="default", Key="tree/leaf", Body=b"z")
    assert error_code(s3.put_object, Bucket="default", Key="tree", Body=b"w")[0] == "InvalidRequest"
    assert s3.get_object(Bucket="default", Key="tree/leaf")["Body"].read() == b"z"
    assert not os.path.exists(os.path.join(MOUNT, "a")), "nothing of a refused key was made"
    s3.put_object(Bucket="default", Key="marker/", Body=b"")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="default", Prefix="marker")["Contents"]]
    assert keys == ["marker/"], keys
    for key in ["file", "tree/leaf", "marker/"]:
        s3.delete_object(Bucket="default", Key=key)


@check(f"listing {KEYS_LISTED} keys with and without delimiters, across pages")
def _():
    keys = sorted(f"many/d{i % 10}/k{i:05d}" for i in range(KEYS_LISTED))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="default", Key=k, Body=k.encode()), keys))
    listed = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="default", Prefix="many/", PaginationConfig={"PageSize": 1000}):
        assert page["KeyCount"] <= 1000
        listed += [o["Key"] for o in page.get("Contents", [])]
    assert listed == keys, (len(listed), len(keys))
    v1 = []
    for page in s3.get_paginator("list_objects").paginate(Bucket="default", Prefix="many/d3/", PaginationConfig={"PageSize": 300}):
        v1 += [o["Key"] for o in page.get("Contents", [])]
    assert v1 == [k for k in keys if k.startswith("many/d3/")]
    top = s3.list_objects_v2(Bucket="default", Prefix="many/", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == [f"many/d{i}/" for i in range(10)], top
    paged = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="default", Prefix="many/", Delimiter="/", PaginationConfig={"PageSize": 3}):
        paged += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert paged == [f"many/d{i}/" for i in range(10)], paged
    after = s3.list_objects_v2(Bucket="default", Prefix="many/d9/", StartAfter=keys[-2], EncodingType="url")
    assert [o["Key"] for o in after["Contents"]] == [keys[-1]]
    versions = s3.list_object_versions(Bucket="default", Prefix="many/d0/", MaxKeys=5)
    assert all(v["VersionId"] == "null" and v["IsLatest"] for v in versions["Versions"]) and versions["IsTruncated"]
    subprocess.run(["aws", "--endpoint-url", ENDPOINT, "s3", "rm", "--recursive", "--only-show-errors", "s3://default/many/"], check=True)
    assert s3.list_objects_v2(Bucket="default", Prefix="many/")["KeyCount"] == 0
    assert not os.path.exists(os.path.join(MOUNT, "many")), "every implied directory removed with its objects"


@check("presigned URLs: GET and PUT, an expired one refused")
def _():
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "default", "Key": "signed"}, ExpiresIn=300)
    req = urllib.request.Request(url, data=b"by url", method="PUT")
    assert urllib.request.urlopen(req).status == 200
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "default", "Key": "signed"}, ExpiresIn=300)
    assert urllib.request.urlopen(url).read() == b"by url"
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": "default", "Key": "signed"}, ExpiresIn=1)
    time.sleep(2)
    try:
        urllib.request.urlopen(expired)
        raise AssertionError("an expired URL was honoured")
    except urllib.error.HTTPError as e:
        assert e.code == 403 and b"AccessDenied" in e.read(), e.code
    s3.delete_object(Bucket="default", Key="signed")


@check("refusals: wrong secret, unknown key, no signature, clock skew")
def _():
    assert error_code(client(secret="wrong" * 8).list_buckets)[0] == "SignatureDoesNotMatch"
    assert error_code(client(key="AKIANOTAKEY000000000").list_buckets)[0] == "InvalidAccessKeyId"
    try:
        urllib.request.urlopen(f"{ENDPOINT}/default/anything")
        raise AssertionError("an anonymous request was served")
    except urllib.error.HTTPError as e:
        body = e.read()
        assert e.code == 403 and b"AccessDenied" in body and b"<RequestId>" in body, body
        assert e.headers["x-amz-request-id"], e.headers
    real = botocore.auth.datetime.datetime

    class Skewed(real):
        @classmethod
        def utcnow(cls):
            return real.utcnow() - datetime.timedelta(minutes=20)

        @classmethod
        def now(cls, tz=None):
            return real.now(tz) - datetime.timedelta(minutes=20)

    botocore.auth.datetime.datetime = Skewed
    try:
        assert error_code(client().list_buckets)[0] == "RequestTimeTooSkewed"
    finally:
        botocore.auth.datetime.datetime = real


@check("the same data through the mount")
def _():
    s3.put_object(Bucket="default", Key="shared/from-s3.txt", Body=b"written by s3")
    with open(os.path.join(MOUNT, "shared", "from-s3.txt"), "rb") as f:
        assert f.read() == b"written by s3"
    path = os.path.join(MOUNT, "shared", "from-mount.txt")
    with open(path, "wb") as f:
        f.write(b"version one")
    listed = {o["Key"]: o for o in s3.list_objects_v2(Bucket="default", Prefix="shared/")["Contents"]}
    assert listed["shared/from-mount.txt"]["Size"] == 11, listed
    first = s3.head_object(Bucket="default", Key="shared/from-mount.txt")["ETag"]
    assert first == f'"{md5(b"version one")}"', first
    with open(path, "wb") as f:
        f.write(b"version two, longer")
    got = s3.get_object(Bucket="default", Key="shared/from-mount.txt")
    assert got["Body"].read() == b"version two, longer"
    assert got["ETag"] == f'"{md5(b"version two, longer")}"' and got["ETag"] != first
    for key in ["shared/from-s3.txt", "shared/from-mount.txt"]:
        s3.delete_object(Bucket="default", Key=key)


@check("awscli: cp, ls, sync up and back")
def _():
    src = os.path.join(os.environ["STRATA_S3_WORK"], "tree")
    for i in range(20):
        os.makedirs(os.path.join(src, f"d{i % 4}"), exist_ok=True)
        with open(os.path.join(src, f"d{i % 4}", f"f{i}"), "wb") as f:
            f.write(os.urandom(1000 * i + 1))
    aws = ["aws", "--endpoint-url", ENDPOINT, "--only-show-errors"]
    subprocess.run(aws + ["s3", "sync", src, "s3://default/synced"], check=True)
    back = os.path.join(os.environ["STRATA_S3_WORK"], "back")
    subprocess.run(aws + ["s3", "sync", "s3://default/synced", back], check=True)
    subprocess.run(["diff", "-r", src, back], check=True)
    subprocess.run(["diff", "-r", src, os.path.join(MOUNT, "synced")], check=True)
    subprocess.run(aws + ["s3", "rm", "--recursive", "s3://default/synced"], check=True)


print("all s3 client checks passed")
sys.exit(0)
