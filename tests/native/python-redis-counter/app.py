"""Counts deliveries in Redis (127.0.0.1:6379), for at-least-once tests:
- an event `{"key", "n", "sleep_ms"}`: SADD `n` to the set `key` (distinct events) and INCR
  `key:deliveries` (every delivery), after sleeping `sleep_ms` if given;
- an S3 notification (`Records`): for each record, SADD the object's key (URL-decoded) to
  the set `wisp-test-s3:<bucket>` and INCR `wisp-test-s3:<bucket>:deliveries`.
Raw RESP over one socket per instance: no dependencies."""
import socket
import time
import urllib.parse

_sock = None


def _command(*args):
    out = [f"*{len(args)}\r\n"]
    for a in args:
        a = str(a)
        out.append(f"${len(a.encode())}\r\n{a}\r\n")
    return "".join(out).encode()


def _count(key, member):
    global _sock
    if _sock is None:
        _sock = socket.create_connection(("127.0.0.1", 6379), timeout=5)
    _sock.sendall(_command("SADD", key, member) + _command("INCR", key + ":deliveries"))
    data = b""
    while data.count(b"\r\n") < 2:  # two integer replies
        chunk = _sock.recv(256)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        data += chunk


def handler(event, context):
    if "Records" in event:
        for record in event["Records"]:
            bucket = record["s3"]["bucket"]["name"]
            key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
            _count(f"wisp-test-s3:{bucket}", key)
        return {"ok": True}
    if event.get("sleep_ms"):
        time.sleep(event["sleep_ms"] / 1000)  # slow enough that a kill lands mid-way
    _count(event["key"], event["n"])
    return {"ok": True}
