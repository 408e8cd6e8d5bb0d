"""Real S3 clients (boto3, awscli) against `strata s3` on a live cluster.

Run by cli/tests/s3_clients.rs with STRATA_S3_ENDPOINT, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and STRATA_MOUNT (the default volume mounted) set.
Every check raises on a wrong answer; the script prints one line per check.
"""

import concurrent.futures
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
import http.client
import urllib.error
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
MULTIPART_MIB = int(os.environ.get("STRATA_S3_MULTIPART_MIB", "1024"))
MiB = 1 << 20


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


# Runs only the checks whose names contain one of these (comma-separated; all by default).
ONLY = [part for part in os.environ.get("STRATA_S3_ONLY", "").split(",") if part]


def check(name):
    def wrap(f):
        if ONLY and not any(part in name for part in ONLY):
            print(f"not run (STRATA_S3_ONLY={ONLY!r}): {name}", flush=True)
            return f
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
    versioning = s3.get_bucket_versioning(Bucket="default")
    assert "Status" not in versioning, versioning
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
        got = error_code(s3.put_object, Bucket="default", Key=key, Body=b"y")
        assert got[0] == code, (key[:20], got)
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


def multipart_etag(parts):
    return '"%s-%d"' % (hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest(), len(parts))


@check(f"multipart: {MULTIPART_MIB} MiB in 8 MiB parts uploaded in parallel, read back by range and whole")
def _():
    size = MULTIPART_MIB * MiB
    data = memoryview(os.urandom(size))
    key = "mp/big.bin"
    upload = s3.create_multipart_upload(Bucket="default", Key=key, ContentType="application/x-test", Metadata={"m": "1"})
    uid = upload["UploadId"]
    bounds = [(i, min(i + 8 * MiB, size)) for i in range(0, size, 8 * MiB)]

    def put(n):
        a, b = bounds[n - 1]
        return n, s3.upload_part(Bucket="default", Key=key, UploadId=uid, PartNumber=n, Body=bytes(data[a:b]))["ETag"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        etags = dict(pool.map(put, range(1, len(bounds) + 1)))
    for n, (a, b) in enumerate(bounds, 1):
        assert etags[n] == f'"{md5(data[a:b])}"', n
    # Nothing is visible before Complete; the upload and its parts are listed.
    assert error_code(s3.head_object, Bucket="default", Key=key)[1] == 404
    assert not os.path.exists(os.path.join(MOUNT, key))
    listed = s3.list_multipart_uploads(Bucket="default", Prefix="mp/")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [(key, uid)], listed
    parts, marker = [], 0
    while True:
        page = s3.list_parts(Bucket="default", Key=key, UploadId=uid, MaxParts=50, PartNumberMarker=marker)
        parts += page["Parts"]
        if not page["IsTruncated"]:
            break
        marker = page["NextPartNumberMarker"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [
        (n, etags[n], b - a) for n, (a, b) in enumerate(bounds, 1)
    ]
    done = s3.complete_multipart_upload(
        Bucket="default",
        Key=key,
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
    )
    expected = multipart_etag([data[a:b] for a, b in bounds])
    assert done["ETag"] == expected, (done["ETag"], expected)
    head = s3.head_object(Bucket="default", Key=key)
    assert head["ContentLength"] == size and head["ETag"] == expected
    assert head["ContentType"] == "application/x-test" and head["Metadata"] == {"m": "1"}
    for a, b in [(0, 100), (8 * MiB - 10, 8 * MiB + 10), (size - 5000, size - 1), (size // 3, size // 3 + 3 * MiB)]:
        got = s3.get_object(Bucket="default", Key=key, Range=f"bytes={a}-{b}")["Body"].read()
        assert got == data[a : b + 1], (a, b)
    whole = hashlib.md5()
    body = s3.get_object(Bucket="default", Key=key)["Body"]
    for piece in iter(lambda: body.read(4 * MiB), b""):
        whole.update(piece)
    assert whole.hexdigest() == md5(data)
    # The same bytes on the mount.
    with open(os.path.join(MOUNT, key), "rb") as f:
        assert os.fstat(f.fileno()).st_size == size
        for a in [0, 8 * MiB - 10, size - 4096]:
            f.seek(a)
            assert f.read(4096) == data[a : a + 4096], a
    assert s3.list_multipart_uploads(Bucket="default").get("Uploads", []) == []
    assert error_code(s3.list_parts, Bucket="default", Key=key, UploadId=uid)[0] == "NoSuchUpload"
    s3.delete_object(Bucket="default", Key=key)


@check("multipart: copied parts, aborts and every refusal")
def _():
    source = os.urandom(6 * MiB)
    s3.put_object(Bucket="default", Key="mp/source", Body=source)
    key = "mp/copied"
    uid = s3.create_multipart_upload(Bucket="default", Key=key)["UploadId"]
    copy = dict(Bucket="default", Key=key, UploadId=uid, CopySource={"Bucket": "default", "Key": "mp/source"})
    first = s3.upload_part_copy(PartNumber=1, CopySourceRange=f"bytes=0-{5 * MiB - 1}", **copy)
    second = s3.upload_part_copy(PartNumber=2, **copy)
    tail = b"the last part may be short"
    third = s3.upload_part(Bucket="default", Key=key, UploadId=uid, PartNumber=3, Body=tail)
    assert first["CopyPartResult"]["ETag"] == f'"{md5(source[: 5 * MiB])}"'
    assert second["CopyPartResult"]["ETag"] == f'"{md5(source)}"'
    bad_range = s3.upload_part_copy
    assert error_code(bad_range, PartNumber=4, CopySourceRange=f"bytes=0-{6 * MiB}", **copy)[0] == "InvalidArgument"
    parts = [
        {"PartNumber": 1, "ETag": first["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]},
        {"PartNumber": 3, "ETag": third["ETag"]},
    ]
    complete = s3.complete_multipart_upload
    wrong_tag = [dict(parts[0], ETag='"00000000000000000000000000000000"')] + parts[1:]
    assert error_code(complete, Bucket="default", Key=key, UploadId=uid, MultipartUpload={"Parts": wrong_tag}) == (
        "InvalidPart",
        400,
    )
    backwards = [parts[1], parts[0], parts[2]]
    assert error_code(complete, Bucket="default", Key=key, UploadId=uid, MultipartUpload={"Parts": backwards})[0] == (
        "InvalidPartOrder"
    )
    short_first = [parts[2], dict(parts[2], PartNumber=4)]
    s3.upload_part(Bucket="default", Key=key, UploadId=uid, PartNumber=4, Body=tail)
    assert error_code(complete, Bucket="default", Key=key, UploadId=uid, MultipartUpload={"Parts": short_first})[0] == (
        "EntityTooSmall"
    )
    done = complete(Bucket="default", Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
    whole = source[: 5 * MiB] + source + tail
    assert done["ETag"] == multipart_etag([source[: 5 * MiB], source, tail])
    assert s3.get_object(Bucket="default", Key=key)["Body"].read() == whole
    with open(os.path.join(MOUNT, key), "rb") as f:
        assert f.read() == whole
    # The source is untouched, and stays readable after the copy is deleted.
    s3.delete_object(Bucket="default", Key=key)
    assert s3.get_object(Bucket="default", Key="mp/source")["Body"].read() == source

    # Aborted: nothing left, and the id is refused afterwards.
    uid = s3.create_multipart_upload(Bucket="default", Key="mp/aborted")["UploadId"]
    s3.upload_part(Bucket="default", Key="mp/aborted", UploadId=uid, PartNumber=1, Body=b"x" * 1000)
    s3.abort_multipart_upload(Bucket="default", Key="mp/aborted", UploadId=uid)
    ids = dict(Bucket="default", Key="mp/aborted", UploadId=uid)
    assert error_code(s3.upload_part, PartNumber=1, Body=b"y", **ids)[0] == "NoSuchUpload"
    assert error_code(s3.list_parts, **ids)[0] == "NoSuchUpload"
    assert error_code(s3.abort_multipart_upload, **ids)[0] == "NoSuchUpload"
    assert error_code(s3.head_object, Bucket="default", Key="mp/aborted")[1] == 404
    # Ids that are not ids, another key's id, part numbers out of range.
    uid = s3.create_multipart_upload(Bucket="default", Key="mp/other")["UploadId"]
    for bad in ["../../x", "nope", uid.upper()]:
        assert error_code(s3.list_parts, Bucket="default", Key="mp/other", UploadId=bad)[0] == "NoSuchUpload", bad
    assert error_code(s3.list_parts, Bucket="default", Key="mp/not-this-key", UploadId=uid)[0] == "NoSuchUpload"
    for n in [0, 10001]:
        code = error_code(s3.upload_part, Bucket="default", Key="mp/other", UploadId=uid, PartNumber=n, Body=b"z")
        assert code[0] == "InvalidArgument", (n, code)
    empty = {"Parts": []}
    code = error_code(complete, Bucket="default", Key="mp/other", UploadId=uid, MultipartUpload=empty)[0]
    assert code in ("MalformedXML", "InvalidRequest"), code
    s3.abort_multipart_upload(Bucket="default", Key="mp/other", UploadId=uid)
    s3.delete_object(Bucket="default", Key="mp/source")


@check("awscli: a multipart cp up and down")
def _():
    path = os.path.join(os.environ["STRATA_S3_WORK"], "large.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(40 * MiB + 123))
    aws = ["aws", "--endpoint-url", ENDPOINT, "--only-show-errors"]
    subprocess.run(aws + ["s3", "cp", path, "s3://default/awscli/large.bin"], check=True)
    head = s3.head_object(Bucket="default", Key="awscli/large.bin")
    assert head["ETag"].endswith('-6"'), head["ETag"]
    back = path + ".back"
    subprocess.run(aws + ["s3", "cp", "s3://default/awscli/large.bin", back], check=True)
    subprocess.run(["cmp", path, back], check=True)
    subprocess.run(["cmp", path, os.path.join(MOUNT, "awscli/large.bin")], check=True)
    subprocess.run(aws + ["s3", "rm", "s3://default/awscli/large.bin"], check=True)


def strata(*args):
    out = subprocess.run([os.environ["STRATA_BIN"], "--json", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout) if out.stdout.strip().startswith(("{", "[")) else out.stdout


@check("grants: another user's key is refused until allowed, per level, and again once revoked")
def _():
    alice_key, alice_secret = strata("user", "create", "alice")["access_keys"][0]
    bob_key, bob_secret = strata("user", "create", "bob")["access_keys"][0]
    alice, bob = client(alice_key, alice_secret), client(bob_key, bob_secret)
    alice.create_bucket(Bucket="alices")
    alice.put_object(Bucket="alices", Key="note", Body=b"from alice")
    assert "alices" not in [b["Name"] for b in bob.list_buckets()["Buckets"]]
    assert error_code(bob.get_object, Bucket="alices", Key="note")[:2] == ("AccessDenied", 403)
    assert error_code(bob.list_objects_v2, Bucket="alices")[0] == "AccessDenied"
    strata("bucket", "allow", bob_key, "alices", "--read")
    time.sleep(1.2)  # a refusal asks the master again once what the gateway knows is a second old
    assert bob.get_object(Bucket="alices", Key="note")["Body"].read() == b"from alice"
    assert [o["Key"] for o in bob.list_objects_v2(Bucket="alices")["Contents"]] == ["note"]
    assert "alices" in [b["Name"] for b in bob.list_buckets()["Buckets"]]
    assert error_code(bob.put_object, Bucket="alices", Key="bobs", Body=b"x")[0] == "AccessDenied"
    assert error_code(bob.create_multipart_upload, Bucket="alices", Key="bobs")[0] == "AccessDenied"
    strata("bucket", "allow", bob_key, "alices", "--write")
    time.sleep(1.2)
    bob.put_object(Bucket="alices", Key="bobs", Body=b"from bob")
    bob.delete_object(Bucket="alices", Key="bobs")
    assert error_code(bob.delete_bucket, Bucket="alices")[0] == "AccessDenied"
    grants = strata("bucket", "grants", "alices")
    assert grants["owner"] == "alice" and grants["grants"] == [[bob_key, "write"]], grants
    # The dev user (no grant) is refused too; unknown keys and buckets are errors.
    assert error_code(s3.get_object, Bucket="alices", Key="note")[0] == "AccessDenied"
    missing = subprocess.run([os.environ["STRATA_BIN"], "bucket", "allow", "AKNOSUCHKEY", "alices", "--read"],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "does not exist" in missing.stderr, missing.stderr
    strata("bucket", "revoke", bob_key, "alices")
    time.sleep(31)  # what a gateway knows of a bucket's grants lives 30 s
    assert error_code(bob.get_object, Bucket="alices", Key="note")[0] == "AccessDenied"
    alice.delete_object(Bucket="alices", Key="note")
    alice.delete_bucket(Bucket="alices")


def make_tree(root, files=24):
    """A small tree with nested directories, an empty file and an empty directory."""
    for i in range(files):
        d = os.path.join(root, f"d{i % 3}", f"e{i % 2}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
            f.write(os.urandom(777 * i))
    open(os.path.join(root, "empty"), "wb").close()
    os.makedirs(os.path.join(root, "d0", "void"))


@check("rclone: sync up and back with --checksum")
def _():
    work = os.environ["STRATA_S3_WORK"]
    src, back = os.path.join(work, "rclone-src"), os.path.join(work, "rclone-back")
    make_tree(src)
    env = dict(
        os.environ,
        RCLONE_CONFIG_STRATA_TYPE="s3",
        RCLONE_CONFIG_STRATA_PROVIDER="Other",
        RCLONE_CONFIG_STRATA_ENDPOINT=ENDPOINT,
        RCLONE_CONFIG_STRATA_ACCESS_KEY_ID=KEY,
        RCLONE_CONFIG_STRATA_SECRET_ACCESS_KEY=SECRET,
        RCLONE_CONFIG_STRATA_REGION="us-east-1",
        RCLONE_CONFIG_STRATA_FORCE_PATH_STYLE="true",
    )
    # rclone 1.60's AWS SDK cannot load a CA bundle for its own transport (and plain HTTP needs none).
    env.pop("AWS_CA_BUNDLE", None)
    rclone = ["rclone", "--config", "/dev/null", "--checksum", "--low-level-retries", "1", "--retries", "1"]
    subprocess.run(rclone + ["sync", src, "strata:default/rclone"], check=True, env=env)
    # A second sync finds nothing to send: the ETags are the files' MD5s.
    again = subprocess.run(rclone + ["sync", "-v", src, "strata:default/rclone"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "Copied" not in again.stderr, again.stderr
    subprocess.run(rclone + ["check", src, "strata:default/rclone"], check=True, env=env)
    subprocess.run(rclone + ["sync", "strata:default/rclone", back], check=True, env=env)
    # rclone keeps no empty directories on object stores: compare files only.
    subprocess.run(["diff", "-r", "-x", "void", src, back], check=True)
    subprocess.run(["diff", "-r", "-x", "void", src, os.path.join(MOUNT, "rclone")], check=True)
    subprocess.run(rclone + ["purge", "strata:default/rclone"], check=True, env=env)
    assert not os.path.exists(os.path.join(MOUNT, "rclone"))


@check("s3fs: mount the bucket, cp -a a tree in, diff -r")
def _():
    work = os.environ["STRATA_S3_WORK"]
    src, point = os.path.join(work, "s3fs-src"), os.path.join(work, "s3fs-mnt")
    make_tree(src)
    os.makedirs(point)
    passwd = os.path.join(work, "s3fs-passwd")
    with open(passwd, "w") as f:
        f.write(f"{KEY}:{SECRET}\n")
    os.chmod(passwd, 0o600)
    options = f"url={ENDPOINT},use_path_request_style,passwd_file={passwd},endpoint=us-east-1,sigv4,retries=1"
    subprocess.run(["s3fs", "default", point, "-o", options], check=True)
    try:
        deadline = time.time() + 30
        while not os.path.ismount(point):
            assert time.time() < deadline, "s3fs did not mount"
            time.sleep(0.2)
        subprocess.run(["cp", "-a", src, os.path.join(point, "s3fs-tree")], check=True)
        subprocess.run(["diff", "-r", src, os.path.join(point, "s3fs-tree")], check=True)
        # What s3fs wrote is the same tree on Strata's own mount.
        subprocess.run(["diff", "-r", src, os.path.join(MOUNT, "s3fs-tree")], check=True)
        subprocess.run(["rm", "-r", os.path.join(point, "s3fs-tree")], check=True)
    finally:
        subprocess.run(["fusermount", "-u", point])
    assert not os.path.exists(os.path.join(MOUNT, "s3fs-tree"))


@check("https: a second gateway with --tls-cert/--tls-key serves boto3; plain HTTP and unverified peers fail")
def _():
    import socket
    import ssl

    work = os.environ["STRATA_S3_WORK"]
    cert, key = os.path.join(work, "tls.crt"), os.path.join(work, "tls.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = subprocess.Popen(
        [os.environ["STRATA_BIN"], "s3", "--listen", f"127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = gateway.stdout.readline()
        assert line.startswith("s3 gateway listening on https://"), line
        secure = boto3.client(
            "s3", endpoint_url=f"https://127.0.0.1:{port}", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
            region_name="us-east-1", verify=cert, config=Config(s3={"addressing_style": "path"}),
        )
        secure.put_object(Bucket="default", Key="tls/hello", Body=b"over tls")
        assert secure.get_object(Bucket="default", Key="tls/hello")["Body"].read() == b"over tls"
        assert "default" in [b["Name"] for b in secure.list_buckets()["Buckets"]]
        # A client that does not trust the certificate refuses the gateway.
        untrusting = ssl.create_default_context()
        try:
            with socket.create_connection(("127.0.0.1", port)) as raw:
                untrusting.wrap_socket(raw, server_hostname="127.0.0.1")
            raise AssertionError("an unverified certificate was accepted")
        except ssl.SSLCertVerificationError:
            pass
        # Plain HTTP to the HTTPS port gets no S3 answer.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
            raise AssertionError("plain http was answered on the https port")
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException):
            pass
        secure.delete_object(Bucket="default", Key="tls/hello")
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)


print("all s3 client checks passed")
sys.exit(0)
