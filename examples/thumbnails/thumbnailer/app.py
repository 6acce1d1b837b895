"""Makes thumbnails of uploaded photos: one resized copy per size in THUMBNAIL_SIZES
(longest side, in pixels), stored in THUMBNAIL_BUCKET under `<size>/<key>`.

The event is AWS S3's notification (`Records[].s3.bucket.name`, `.s3.object.key`,
URL-encoded). boto3 finds the node's S3 API the way a Lambda function finds AWS: Wisp gives
functions with `network: true` `AWS_ENDPOINT_URL_S3`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY` and `AWS_REGION`, so the same code runs on Lambda unchanged.
"""
import io
import os
import urllib.parse

import boto3
from PIL import Image, ImageOps

s3 = boto3.client("s3")  # created once per instance, reused while it is warm
BUCKET = os.environ.get("THUMBNAIL_BUCKET", "thumbnails")
SIZES = [int(s) for s in os.environ.get("THUMBNAIL_SIZES", "128,512").split(",")]


def thumbnails(data, key):
    """(size, bytes, content type, (width, height)) for each size."""
    png = key.lower().endswith(".png")
    with Image.open(io.BytesIO(data)) as original:
        image = ImageOps.exif_transpose(original)  # phones store rotation in EXIF
        for size in SIZES:
            thumb = image.copy()
            thumb.thumbnail((size, size))  # keeps the aspect ratio, never enlarges
            out = io.BytesIO()
            if png:
                thumb.save(out, "PNG", optimize=True)
            else:
                thumb.convert("RGB").save(out, "JPEG", quality=85)
            yield size, out.getvalue(), "image/png" if png else "image/jpeg", thumb.size


def handler(event, context):
    made = []
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        for size, body, content_type, (w, h) in thumbnails(data, key):
            name = f"{size}/{key}"
            s3.put_object(Bucket=BUCKET, Key=name, Body=body, ContentType=content_type)
            print(f"{bucket}/{key} -> {BUCKET}/{name}: {w}x{h}, {len(body)} bytes")
            made.append(name)
    return {"thumbnails": made}
