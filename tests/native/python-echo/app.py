"""Echoes the event and every context field; a module-level counter shows warm reuse.

Event knobs: sleep_ms (sleep first), fail (raise ValueError), alloc_mb (allocate and touch),
unserializable (return a set: Runtime.MarshalError), big_response_mb (a response that large).
"""
import logging
import os
import time

logger = logging.getLogger()
logger.setLevel(logging.INFO)  # as Lambda functions usually do: the root level is WARNING otherwise

COUNT = 0


def handler(event, context):
    global COUNT
    event = event if isinstance(event, dict) else {"value": event}
    if event.get("sleep_ms"):
        time.sleep(event["sleep_ms"] / 1000)
    if "fail" in event:
        raise ValueError(event["fail"])
    if event.get("alloc_mb"):
        block = bytearray(event["alloc_mb"] * 1024 * 1024)
        for i in range(0, len(block), 4096):  # touch every page so it is really resident
            block[i] = 1
    if event.get("unserializable"):
        return {"a set": {1, 2}}
    if event.get("big_response_mb"):
        return "x" * (event["big_response_mb"] * 1024 * 1024)
    COUNT += 1
    print(f"python-echo invocation {COUNT} on pid {os.getpid()}")
    logger.info("python-echo handled %s", context.aws_request_id)
    identity = context.identity
    client_context = context.client_context
    return {
        "event": event,
        "context": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "identity": {
                "cognito_identity_id": identity.cognito_identity_id,
                "cognito_identity_pool_id": identity.cognito_identity_pool_id,
            },
            "client_context": None if client_context is None else {
                "custom": client_context.custom,
                "env": client_context.env,
                "client": None if client_context.client is None else {
                    "installation_id": client_context.client.installation_id,
                    "app_title": client_context.client.app_title,
                },
            },
            "remaining_time_ms": context.get_remaining_time_in_millis(),
        },
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        "count": COUNT,
        "pid": os.getpid(),
    }
