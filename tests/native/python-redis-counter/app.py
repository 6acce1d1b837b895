"""Counts deliveries in Redis (127.0.0.1:6379), for at-least-once tests: SADD the event's
`n` to the set `key` (distinct events) and INCR `key:deliveries` (every delivery),
after sleeping `sleep_ms` if given.
Raw RESP over one socket per instance: no dependencies."""
import socket
import time

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
    if event.get("sleep_ms"):
        time.sleep(event["sleep_ms"] / 1000)  # slow enough that a kill lands mid-way
    key = event["key"]
    _sock.sendall(_command("SADD", key, event["n"]) + _command("INCR", key + ":deliveries"))
    data = b""
    while data.count(b"\r\n") < 2:  # two integer replies
        chunk = _sock.recv(256)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        data += chunk
    return {"ok": True}
