"""boto3 and the aws CLI against a Wisp object store.

Run by tests/boto3.rs with WISP_S3_ENDPOINT, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY set; WISP_AWS_CLI names the `aws` program when there is one.
Exits non-zero on the first failed check.
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import boto3
import botocore
import botocore.httpchecksum
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["WISP_S3_ENDPOINT"]
CLI = os.environ.get("WISP_AWS_CLI", "")
MiB = 1024 * 1024


def client(**overrides):
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    kwargs = dict(endpoint_url=ENDPOINT, region_name="us-east-1", config=config)
    kwargs.update(overrides)
    return boto3.client("s3", **kwargs)


def error_code(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__} did not fail")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok - {what}")


s3 = client()
print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}")

s3.create_bucket(Bucket="boto")
check(error_code(s3.create_bucket, Bucket="boto") == "BucketAlreadyOwnedByYou", "create twice: 409")
check("boto" in [b["Name"] for b in s3.list_buckets()["Buckets"]], "list_buckets")
s3.head_bucket(Bucket="boto")

# Put / get / head, metadata and content type (botocore adds a CRC32 by default).
s3.put_object(Bucket="boto", Key="dir/hello world.txt", Body=b"hello, world",
              ContentType="text/plain", Metadata={"colour": "blue"})
got = s3.get_object(Bucket="boto", Key="dir/hello world.txt")
check(got["Body"].read() == b"hello, world", "get_object body")
check(got["ContentType"] == "text/plain", "content type")
check(got["Metadata"] == {"colour": "blue"}, "user metadata")
head = s3.head_object(Bucket="boto", Key="dir/hello world.txt")
check(head["ContentLength"] == 12, "head_object length")
check(head["ETag"] == '"%s"' % hashlib.md5(b"hello, world").hexdigest(), "etag is the md5")
part = s3.get_object(Bucket="boto", Key="dir/hello world.txt", Range="bytes=7-11")
check(part["Body"].read() == b"world" and part["ContentRange"] == "bytes 7-11/12", "range get")
check(error_code(s3.get_object, Bucket="boto", Key="missing") == "NoSuchKey", "missing key: NoSuchKey")
check(error_code(s3.get_object, Bucket="nobucket", Key="k") == "NoSuchBucket", "missing bucket")

# Checksums: sent by botocore, stored, returned and validated on GET.
for algorithm in ("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"):
    try:
        s3.put_object(Bucket="boto", Key=f"sum/{algorithm}", Body=b"checksummed " * 1000,
                      ChecksumAlgorithm=algorithm)
    except botocore.exceptions.MissingDependencyException:
        # CI installs awscrt: there the check must run.
        check(os.environ.get("CI") != "true", f"{algorithm} needs awscrt (pip install awscrt)")
        print(f"skip - {algorithm} needs awscrt")
        continue
    got = s3.get_object(Bucket="boto", Key=f"sum/{algorithm}", ChecksumMode="ENABLED")
    check(got["Body"].read() == b"checksummed " * 1000, f"{algorithm} object reads back")
    check(f"Checksum{algorithm}" in got, f"{algorithm} checksum returned")

# botocore's aws-chunked body with a checksum trailer (what it sends over HTTPS):
# make it believe the endpoint is HTTPS when choosing where the checksum goes.
real_urlparse = botocore.httpchecksum.urlparse


class _Https:
    scheme = "https"


botocore.httpchecksum.urlparse = lambda url: _Https()
try:
    trailer_client = client()
    seen = {}

    def capture(request, **_):
        seen["sha"] = request.headers.get("x-amz-content-sha256")
        seen["enc"] = request.headers.get("Content-Encoding")

    trailer_client.meta.events.register("before-send.s3.PutObject", capture)
    body = os.urandom(3 * MiB + 17)
    trailer_client.put_object(Bucket="boto", Key="trailer", Body=body)
    check(seen.get("sha", b"") in (b"STREAMING-UNSIGNED-PAYLOAD-TRAILER", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
          "botocore sent STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    got = s3.get_object(Bucket="boto", Key="trailer", ChecksumMode="ENABLED")
    check(got["Body"].read() == body, "aws-chunked trailer upload reads back")
    check("ChecksumCRC32" in got, "trailer checksum stored")
finally:
    botocore.httpchecksum.urlparse = real_urlparse

# Multipart via upload_file with a small threshold, then download_file.
with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "big.bin")
    data = os.urandom(12 * MiB + 1234)
    with open(src, "wb") as f:
        f.write(data)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    s3.upload_file(src, "boto", "big/file.bin", Config=config)
    head = s3.head_object(Bucket="boto", Key="big/file.bin")
    check(head["ETag"].endswith('-3"'), f"multipart etag {head['ETag']}")
    check(head["ContentLength"] == len(data), "multipart size")
    dst = os.path.join(tmp, "back.bin")
    s3.download_file("boto", "big/file.bin", dst, Config=config)
    with open(dst, "rb") as f:
        check(hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest(), "download_file round trip")

# ceph/s3-tests test_multipart_upload_small: "check extra client.complete_multipart_upload".
mpu = s3.create_multipart_upload(Bucket="boto", Key="twice")
etag = s3.upload_part(Bucket="boto", Key="twice", UploadId=mpu["UploadId"], PartNumber=1, Body=b"x")["ETag"]
parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
first = s3.complete_multipart_upload(Bucket="boto", Key="twice", UploadId=mpu["UploadId"], MultipartUpload=parts)
again = s3.complete_multipart_upload(Bucket="boto", Key="twice", UploadId=mpu["UploadId"], MultipartUpload=parts)
check(again["ETag"] == first["ETag"] and again["Location"] == first["Location"],
      "complete_multipart_upload again: the same answer")

# Listing with prefix, delimiter and pagination.
for i in range(7):
    s3.put_object(Bucket="boto", Key=f"list/{i}", Body=b"x")
s3.put_object(Bucket="boto", Key="list/sub/a", Body=b"x")
s3.put_object(Bucket="boto", Key="list/sp ace+plus", Body=b"x")
listed = s3.list_objects_v2(Bucket="boto", Prefix="list/", Delimiter="/")
check([o["Key"] for o in listed["Contents"]] == [f"list/{i}" for i in range(7)] + ["list/sp ace+plus"],
      "list_objects_v2 keys")
check([p["Prefix"] for p in listed["CommonPrefixes"]] == ["list/sub/"], "common prefixes")
pages = s3.get_paginator("list_objects_v2").paginate(Bucket="boto", Prefix="list/", PaginationConfig={"PageSize": 3})
keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
check(len(keys) == 9 and keys == sorted(keys), "paginated listing")
v1 = s3.get_paginator("list_objects").paginate(Bucket="boto", Prefix="list/", PaginationConfig={"PageSize": 4})
check(len([o for page in v1 for o in page.get("Contents", [])]) == 9, "list_objects v1 pagination")
# ceph/s3-tests test_bucket_list_prefix_basic, test_bucket_list_delimiter_empty and
# test_bucket_listv2_continuationtoken_empty.
listed = s3.list_objects(Bucket="boto", Prefix="list/sp ace", Delimiter="")
check(listed["Prefix"] == "list/sp ace", f"list_objects Prefix as given: {listed['Prefix']!r}")
check("Delimiter" not in listed, "an empty Delimiter is not echoed")
listed = s3.list_objects_v2(Bucket="boto", Prefix="list/", ContinuationToken="")
check(listed["ContinuationToken"] == "" and listed["KeyCount"] == 9, "an empty continuation token is none")

# Copy, delete, batch delete.
s3.copy_object(Bucket="boto", Key="copied.txt", CopySource={"Bucket": "boto", "Key": "dir/hello world.txt"})
check(s3.get_object(Bucket="boto", Key="copied.txt")["Body"].read() == b"hello, world", "copy_object")
s3.delete_object(Bucket="boto", Key="copied.txt")
check(error_code(s3.head_object, Bucket="boto", Key="copied.txt") == "404", "deleted")
s3.delete_object(Bucket="boto", Key="copied.txt")  # idempotent
res = s3.delete_objects(Bucket="boto", Delete={"Objects": [{"Key": f"list/{i}"} for i in range(7)]})
check(len(res["Deleted"]) == 7, "delete_objects")

# Presigned URL.
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "dir/hello world.txt"}, ExpiresIn=60)
try:
    with urllib.request.urlopen(url) as r:
        check(r.read() == b"hello, world", "presigned GET")
except urllib.error.HTTPError as e:
    raise AssertionError(f"presigned GET {url} failed: {e.read().decode()}")

# Presigned URLs that expire at once are refused as expired (403), as S3 does
# (ceph/s3-tests test_object_raw_get_x_amz_expires_out_range_zero); longer than a
# week is malformed (400).
v4 = client(config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
def presign_v4(expires_in):
    # botocore's own SigV4 query signer: with awscrt installed, generate_presigned_url
    # signs through the CRT, which refuses ExpiresIn=0 before any request is made.
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    req = AWSRequest(method="GET", url=v4.meta.endpoint_url + "/boto/dir/hello%20world.txt")
    creds = v4._request_signer._credentials.get_frozen_credentials()
    S3SigV4QueryAuth(creds, "s3", v4.meta.region_name, expires=expires_in).add_auth(req)
    return req.url


for expires_in, status in ((0, 403), (604801, 400)):
    url = presign_v4(expires_in)
    try:
        urllib.request.urlopen(url)
        raise AssertionError(f"presigned URL with ExpiresIn={expires_in} was accepted")
    except urllib.error.HTTPError as e:
        check(e.code == status, f"presigned ExpiresIn={expires_in}: {status}")
# A SigV2 URL for ten years is refused: no presigned URL lasts longer than a week.
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "dir/hello world.txt"},
                                ExpiresIn=10 * 365 * 24 * 3600)
try:
    urllib.request.urlopen(url)
    raise AssertionError("a ten-year presigned URL was accepted")
except urllib.error.HTTPError as e:
    check(e.code in (400, 403), f"ten-year presigned URL refused ({e.code})")

# Signed for another region: S3 refuses it naming the right region, and botocore
# re-signs for that one on its own (for HEAD too, from x-amz-bucket-region).
elsewhere = client(region_name="eu-west-1")
check(elsewhere.get_object(Bucket="boto", Key="dir/hello world.txt")["Body"].read() == b"hello, world",
      "client for another region is redirected to the store's")
elsewhere.head_object(Bucket="boto", Key="dir/hello world.txt")
refusals = []


def record_refusal(response, **_):
    if response is not None and response[0] is not None and response[0].status_code != 200:
        refusals.append((response[0].status_code, response[1].get("Error", {}).get("Code"),
                         response[1].get("Error", {}).get("Region")))


watched = client(region_name="ap-south-1")
watched.meta.events.register("needs-retry.s3.ListObjectsV2", record_refusal)
watched.list_objects_v2(Bucket="boto")
check(refusals == [(400, "AuthorizationHeaderMalformed", "us-east-1")],
      f"signed for ap-south-1: refused first, naming us-east-1 {refusals}")

# Wrong secret.
bad = client(aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="wrong")
check(error_code(bad.get_object, Bucket="boto", Key="dir/hello world.txt") == "SignatureDoesNotMatch",
      "wrong secret: SignatureDoesNotMatch")

# Multipart abort and listing.
mpu = s3.create_multipart_upload(Bucket="boto", Key="aborted")
check([u["UploadId"] for u in s3.list_multipart_uploads(Bucket="boto").get("Uploads", [])] == [mpu["UploadId"]],
      "list_multipart_uploads")
s3.abort_multipart_upload(Bucket="boto", Key="aborted", UploadId=mpu["UploadId"])
check(error_code(s3.list_parts, Bucket="boto", Key="aborted", UploadId=mpu["UploadId"]) == "NoSuchUpload",
      "aborted upload is gone")

# ListObjectVersions on an unversioned bucket: every object once, as version "null";
# boto3's resource API empties a bucket with it (versions, then DeleteObjects).
s3.create_bucket(Bucket="versions")
for i in range(5):
    s3.put_object(Bucket="versions", Key=f"v/{i} é", Body=b"x")
listed = s3.list_object_versions(Bucket="versions")
check([v["Key"] for v in listed["Versions"]] == [f"v/{i} é" for i in range(5)], "list_object_versions keys")
check(all(v["VersionId"] == "null" and v["IsLatest"] for v in listed["Versions"]), "versions are null and latest")
pages = s3.get_paginator("list_object_versions").paginate(Bucket="versions", PaginationConfig={"PageSize": 2})
check(len([v for page in pages for v in page.get("Versions", [])]) == 5, "list_object_versions pagination")
s3.delete_object(Bucket="versions", Key="v/0 é", VersionId="null")
check(error_code(s3.head_object, Bucket="versions", Key="v/0 é") == "404", "delete_object VersionId=null")
boto3.resource("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
               config=Config(s3={"addressing_style": "path"})).Bucket("versions").object_versions.delete()
check("Versions" not in s3.list_object_versions(Bucket="versions"), "object_versions.delete() empties the bucket")
s3.delete_bucket(Bucket="versions")

# Bucket CORS (ceph/s3-tests test_set_cors, test_cors_origin_response), and the
# preflight a browser sends before a cross-origin PUT.
check(error_code(s3.get_bucket_cors, Bucket="boto") == "NoSuchCORSConfiguration", "no CORS yet: 404")
rules = [{"ID": "uploads", "AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["GET", "PUT"],
          "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3000}]
s3.put_bucket_cors(Bucket="boto", CORSConfiguration={"CORSRules": rules})
check(s3.get_bucket_cors(Bucket="boto")["CORSRules"] == rules, "get_bucket_cors returns the rules")


def options(path, headers):
    req = urllib.request.Request(ENDPOINT + path, method="OPTIONS", headers=headers)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


status, headers = options("/boto/upload.bin", {"Origin": "https://app.example.com",
                                               "Access-Control-Request-Method": "PUT",
                                               "Access-Control-Request-Headers": "content-type"})
check(status == 200 and headers.get("Access-Control-Allow-Origin") == "https://app.example.com"
      and headers.get("Access-Control-Allow-Methods") == "GET, PUT"
      and headers.get("Access-Control-Max-Age") == "3000", f"preflight from an allowed origin: {status}")
status, _ = options("/boto/upload.bin", {"Origin": "https://evil.test", "Access-Control-Request-Method": "PUT"})
check(status == 403, "preflight from another origin: 403")
cors_client = client()
cors_client.meta.events.register("before-send.s3.GetObject",
                                 lambda request, **_: request.headers.__setitem__("Origin", "https://app.example.com"))
got = cors_client.get_object(Bucket="boto", Key="dir/hello world.txt")
check(got["ResponseMetadata"]["HTTPHeaders"].get("access-control-allow-origin") == "https://app.example.com"
      and got["ResponseMetadata"]["HTTPHeaders"].get("access-control-expose-headers") == "ETag",
      "a GET from an allowed origin carries Access-Control-Allow-Origin")
s3.delete_bucket_cors(Bucket="boto")
check(error_code(s3.get_bucket_cors, Bucket="boto") == "NoSuchCORSConfiguration", "delete_bucket_cors")

# Browser form uploads with generate_presigned_post (SigV4, and boto3's default SigV2),
# posted as a browser would (multipart/form-data, the file last). ceph/s3-tests
# test_post_object_authenticated_request, _set_success_code, _upload_size_limit_exceeded,
# _expired_policy, with boto3 making the policy.
def post_form(post, filename, data):
    boundary = "----boto3compat" + hashlib.md5(data).hexdigest()
    parts = []
    for name, value in post["fields"].items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    req = urllib.request.Request(post["url"], data=b"".join(parts), method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def xml_code(body):
    return body.decode().split("<Code>")[1].split("</Code>")[0] if b"<Code>" in body else ""


for signer, post_client in (("SigV4", v4), ("SigV2", s3)):
    post = post_client.generate_presigned_post(
        "boto", "forms/${filename}",
        Fields={"Content-Type": "text/plain", "success_action_status": "201"},
        Conditions=[{"Content-Type": "text/plain"}, {"success_action_status": "201"},
                    ["content-length-range", 1, 1024]],
        ExpiresIn=300)
    status, body = post_form(post, f"{signer}.txt", b"posted by a browser")
    check(status == 201 and f"<Key>forms/{signer}.txt</Key>".encode() in body, f"{signer} form upload: 201 ({status})")
    got = s3.get_object(Bucket="boto", Key=f"forms/{signer}.txt")
    check(got["Body"].read() == b"posted by a browser" and got["ContentType"] == "text/plain",
          f"{signer} form upload stored")
    status, body = post_form(post, "big.txt", b"x" * 1025)
    check((status, xml_code(body)) == (400, "EntityTooLarge"), f"{signer} too large: {status} {xml_code(body)}")
    wrong_key = dict(post, fields=dict(post["fields"], key="elsewhere/${filename}"))
    status, body = post_form(wrong_key, "x.txt", b"x")
    check((status, xml_code(body)) == (403, "AccessDenied"), f"{signer} wrong key prefix: {status} {xml_code(body)}")
expired = v4.generate_presigned_post("boto", "forms/late.txt", ExpiresIn=-60)
status, body = post_form(expired, "late.txt", b"x")
check((status, xml_code(body)) == (403, "AccessDenied") and b"Policy expired" in body, "expired policy: 403")
check(error_code(s3.head_object, Bucket="boto", Key="forms/late.txt") == "404", "nothing stored by refused forms")

if CLI:
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    version = subprocess.run([CLI, "--version"], capture_output=True, text=True, env=env)
    print((version.stdout or version.stderr).strip())

    def aws(*args, input=None):
        r = subprocess.run([CLI, "--endpoint-url", ENDPOINT, *args], capture_output=True, env=env, input=input)
        if r.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed: {r.stderr.decode()}")
        return r.stdout

    with tempfile.TemporaryDirectory() as tmp:
        small = os.path.join(tmp, "small.txt")
        with open(small, "wb") as f:
            f.write(b"from the cli\n")
        big = os.path.join(tmp, "big.bin")
        big_data = os.urandom(20 * MiB + 5)
        with open(big, "wb") as f:
            f.write(big_data)
        aws("s3", "cp", small, "s3://boto/cli/small.txt")
        aws("s3", "cp", big, "s3://boto/cli/big.bin")
        listing = aws("s3", "ls", "s3://boto/cli/").decode()
        check("small.txt" in listing and "big.bin" in listing, "aws s3 ls")
        versions = aws("s3api", "list-object-versions", "--bucket", "boto", "--prefix", "cli/").decode()
        check('"Key": "cli/small.txt"' in versions and '"VersionId": "null"' in versions,
              "aws s3api list-object-versions")
        head = aws("s3api", "head-object", "--bucket", "boto", "--key", "cli/big.bin").decode()
        check('"ContentLength": %d' % len(big_data) in head, "aws s3api head-object")
        check(aws("s3", "cp", "s3://boto/cli/small.txt", "-") == b"from the cli\n", "aws s3 cp to stdout")
        back = os.path.join(tmp, "back.bin")
        aws("s3", "cp", "s3://boto/cli/big.bin", back)
        with open(back, "rb") as f:
            check(f.read() == big_data, "aws s3 cp multipart round trip")
        aws("s3", "rm", "s3://boto/cli/", "--recursive")
        left = aws("s3api", "list-objects-v2", "--bucket", "boto", "--prefix", "cli/").decode()
        check('"Key"' not in left, "aws s3 rm --recursive")
else:
    print("skip - aws CLI not found")

print("boto3 compatibility: all checks passed")
