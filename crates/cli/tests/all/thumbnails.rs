//! examples/thumbnails as its README runs it: a photo uploaded with boto3 gets resized
//! copies in the other bucket, made by a Python function with Pillow and boto3 that finds
//! the node's S3 API through the environment Wisp gives it.

use crate::events::{boto3_python, run_boto3};
use crate::harness::*;
use crate::native::with_host_runtimes;
use serde_json::Value;

/// Creates the buckets, uploads a 640x480 PNG (made with the standard library) and a
/// text file, waits (at most 2 minutes) for the thumbnails and checks each is a valid PNG
/// (signature, chunk CRCs, the IDAT inflating to exactly the size IHDR announces); prints
/// `{"keys": [...], "sizes": {key: [width, height]}}`.
const UPLOAD_AND_CHECK: &str = r#"
import boto3, json, os, struct, time, zlib

def png(w, h):
    rows = (b"\x00" + b"".join(bytes((x * 255 // w, y * 255 // h, 128)) for x in range(w))
            for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))

def check_png(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind}"
        chunks.append((kind, body))
        pos += 12 + n
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", [c[0] for c in chunks]
    w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    assert depth == 8 and interlace == 0, (depth, interlace)
    pixels = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    assert len(pixels) == h * (1 + w * channels), "IDAT does not match IHDR"
    return w, h

s3.create_bucket(Bucket="photos")
s3.create_bucket(Bucket="thumbnails")
s3.put_object(Bucket="photos", Key="cats/tom.png", Body=png(640, 480), ContentType="image/png")
s3.put_object(Bucket="photos", Key="cats/notes.txt", Body=b"not a photo")
# One more photo after notes.txt: its event is dispatched after any event of notes.txt.
s3.put_object(Bucket="photos", Key="cats/zoe.png", Body=png(320, 240), ContentType="image/png")
want = ["128/cats/tom.png", "128/cats/zoe.png", "512/cats/tom.png", "512/cats/zoe.png"]
deadline = time.time() + 120
while True:
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="thumbnails").get("Contents", []))
    if all(k in keys for k in want):
        break
    assert time.time() < deadline, f"no thumbnails after 2 minutes: {keys}"
    time.sleep(0.5)
sizes = {}
for k in ["128/cats/tom.png", "512/cats/tom.png"]:
    obj = s3.get_object(Bucket="thumbnails", Key=k)
    assert obj["ContentType"] == "image/png", obj["ContentType"]
    sizes[k] = check_png(obj["Body"].read())
print(json.dumps({"keys": keys, "sizes": sizes}))
"#;

#[test]
fn an_uploaded_photo_gets_smaller_thumbnails_in_the_other_bucket() {
    let Some(python) = boto3_python() else { return };
    let node = Node::start();
    // The example's manifest as it is, with its source made absolute and the host's
    // Python version.
    let example = repo_root().join("examples/thumbnails");
    let yaml = std::fs::read_to_string(example.join("wisp.yaml")).unwrap();
    assert!(yaml.contains("source: ./thumbnailer"), "{yaml}");
    let m = manifest(&with_host_runtimes(&yaml.replace(
        "source: ./thumbnailer",
        &format!("source: {}", example.join("thumbnailer").display()),
    )));
    node.wisp_ok(&["deploy", &arg(&m)]);
    let out = run_boto3(&node, &python, UPLOAD_AND_CHECK, &[]);
    assert!(
        out.status.success(),
        "{}\nnode:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.stderr()
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["keys"],
        serde_json::json!([
            "128/cats/tom.png",
            "128/cats/zoe.png",
            "512/cats/tom.png",
            "512/cats/zoe.png"
        ]),
        "one copy per size of each photo: {result}"
    );
    // notes.txt ran nothing: once nothing runs (an event of notes.txt would have been
    // dispatched before zoe.png's), the function ran exactly twice.
    wait_until(
        "the thumbnailer to be idle",
        std::time::Duration::from_secs(30),
        || (running(&node, "thumbnailer") == 0).then_some(()),
    );
    let m = crate::metrics::scrape(&node);
    assert_eq!(
        crate::metrics::value(&m, "wisp_invocations_total", &[("function", "thumbnailer")]),
        2.0,
        "one invocation per photo, none for notes.txt"
    );
    // Smaller, with the photo's 4:3 aspect ratio.
    assert_eq!(
        result["sizes"]["128/cats/tom.png"],
        serde_json::json!([128, 96])
    );
    assert_eq!(
        result["sizes"]["512/cats/tom.png"],
        serde_json::json!([512, 384])
    );
    let queues = node.wisp_ok(&["queue", "ls", "--json"]);
    assert!(
        queues.contains("thumbnail-failures"),
        "the deploy made the on_failure queue: {queues}"
    );
}
