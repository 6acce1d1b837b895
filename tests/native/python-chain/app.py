"""A link in a chain of functions: calls NEXT_URL (through the gateway), forwarding the
X-Ray trace header Lambda handlers forward, so the next invocation joins the same trace.

Env: NEXT_URL (optional), NEXT_MODE=event for an asynchronous call
(X-Amz-Invocation-Type: Event). Event knobs (the HTTP body, or the event itself):
burn_ms (spin on the CPU), sleep_ms.
"""
import json
import os
import time
import urllib.request


def handler(event, context):
    if isinstance(event, dict) and "requestContext" in event:
        body = json.loads(event.get("body") or "{}")
    else:
        body = event if isinstance(event, dict) else {}
    if body.get("burn_ms"):
        end = time.process_time() + body["burn_ms"] / 1000
        n = 0
        while time.process_time() < end:
            n += 1
    if body.get("sleep_ms"):
        time.sleep(body["sleep_ms"] / 1000)
    result = {"function": context.function_name, "trace": os.environ.get("_X_AMZN_TRACE_ID")}
    nxt = os.environ.get("NEXT_URL")
    if nxt:
        req = urllib.request.Request(
            nxt,
            data=json.dumps({"from": context.function_name}).encode(),
            method="POST",
            headers={
                "content-type": "application/json",
                "X-Amzn-Trace-Id": os.environ["_X_AMZN_TRACE_ID"],
            },
        )
        if os.environ.get("NEXT_MODE") == "event":
            req.add_header("X-Amz-Invocation-Type", "Event")
        with urllib.request.urlopen(req, timeout=20) as r:
            result["next_status"] = r.status
            result["next"] = json.loads(r.read() or b"null")
    return result
