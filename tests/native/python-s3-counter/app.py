"""Counts S3 notifications in Redis (127.0.0.1:6379), for at-least-once tests of upload
triggers: for each record, SADD the object's key (URL-decoded) to the set
`wisp-test-s3:<bucket>` and INCR `wisp-test-s3:<bucket>:deliveries`.
Raw RESP over one socket per instance: no dependencies."""
import socket
import urllib.parse

_sock = None


def _command(*args):
    out = [f"*{len(args)}\r\n"]
    for a in args:
        a = str(a)
        out.append(f"${len(a.encode())}\r\n{a}\r\n")
    return "".join(out).encode()


def handler(event, context):
    global _sock
    if _sock is None:
        _sock = socket.create_connection(("127.0.0.1", 6379), timeout=5)
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        prefix = f"wisp-test-s3:{bucket}"
        _sock.sendall(_command("SADD", prefix, key) + _command("INCR", prefix + ":deliveries"))
        data = b""
        while data.count(b"\r\n") < 2:  # two integer replies
            chunk = _sock.recv(256)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            data += chunk
    return {"ok": True}
