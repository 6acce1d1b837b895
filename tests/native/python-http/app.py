"""An API Gateway HTTP API (payload format 2.0) handler: echoes the request in a 201 response."""
import base64
import json


def handler(event, context):
    http = event["requestContext"]["http"]
    body = event.get("body")
    if body is not None and event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    return {
        "statusCode": 201,
        "headers": {"content-type": "text/plain", "x-seen-path": event["rawPath"]},
        "cookies": ["a=1"],
        "body": json.dumps({
            "method": http["method"],
            "path": event["rawPath"],
            "query": event.get("rawQueryString", ""),
            "queryStringParameters": event.get("queryStringParameters"),
            "pathParameters": event.get("pathParameters"),
            "body": body,
        }),
    }
