"""An AWS Lambda handler, as it would run on Lambda behind an API Gateway HTTP API."""
import json

CALLS = 0  # module state lives as long as the instance: warm calls see it grow


def handler(event, context):
    global CALLS
    CALLS += 1
    # HTTP requests arrive as API Gateway payload 2.0 events; `wisp invoke` sends any JSON.
    params = event.get("queryStringParameters") or {}
    name = params.get("name") or event.get("name") or "world"
    print(f"greeting {name} (call {CALLS} of this instance)")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({
            "message": f"Hello, {name}!",
            "request_id": context.aws_request_id,
            "calls_on_this_instance": CALLS,
        }),
    }
