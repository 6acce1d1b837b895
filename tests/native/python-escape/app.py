"""Tries to break out of the sandbox; every attempt reports {"ok": bool, "error": str|None} and
none may crash the function.

Event: {"try": "all" | name | [names], "path": "...", "host": "...", "port": n, "max_forks": n}
  read_shadow  read /etc/shadow                        (should fail)
  read_path    read the file or list the dir at "path" (another function's code, the data dir)
  write_task   write $LAMBDA_TASK_ROOT/x               (should fail: read-only)
  write_usr    write /usr/x                            (should fail)
  write_tmp    write and read back /tmp/x              (should work)
  connect      TCP connect to host:port                (should fail where networking is denied)
  fork         fork until it fails (at most max_forks, default 2000), then kill the children;
               "count" says how many forks succeeded
Files that could be written are removed again.
"""
import os
import signal
import socket
import time

TASK_ROOT = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")


def _write(path):
    with open(path, "w") as f:
        f.write("wisp escape test\n")
    os.remove(path)


def read_shadow(event):
    with open("/etc/shadow") as f:
        return {"bytes": len(f.read())}


def read_path(event):
    p = event["path"]
    if os.path.isdir(p):
        return {"entries": sorted(os.listdir(p))[:50]}
    with open(p, "rb") as f:
        return {"bytes": len(f.read())}


def write_task(event):
    _write(os.path.join(TASK_ROOT, "x"))


def write_usr(event):
    _write("/usr/x")


def write_tmp(event):
    with open("/tmp/x", "w") as f:
        f.write("ok")
    with open("/tmp/x") as f:
        return {"read_back": f.read()}


def connect(event):
    with socket.create_connection((event["host"], int(event["port"])), timeout=2):
        return {}


def fork(event):
    limit = int(event.get("max_forks", 2000))
    children, error = [], None
    try:
        while len(children) < limit:
            pid = os.fork()
            if pid == 0:  # child: wait to be killed, never return into the runtime
                try:
                    time.sleep(60)
                finally:
                    os._exit(0)
            children.append(pid)
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
    # "ok" means fork was stopped before the limit: the sandbox held.
    return {"ok": error is not None, "count": len(children), "error": error}


ATTEMPTS = {f.__name__: f for f in (read_shadow, read_path, write_task, write_usr, write_tmp, connect, fork)}


def handler(event, context):
    names = event.get("try", "all")
    if names == "all":
        names = [n for n in ATTEMPTS if n != "fork"
                 and (n != "read_path" or "path" in event) and (n != "connect" or "host" in event)]
    elif isinstance(names, str):
        names = [names]
    results = {}
    for name in names:
        attempt = ATTEMPTS.get(name)
        if attempt is None:
            results[name] = {"ok": False, "error": "unknown attempt"}
            continue
        try:
            out = attempt(event) or {}
            results[name] = {"ok": True, "error": None, **out}
        except BaseException as e:  # noqa: BLE001 - an escape attempt must never crash the function
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return results
