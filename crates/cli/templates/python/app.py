"""{{name}}: an AWS Lambda handler for Python, run by Wisp behind `GET /{{name}}`.

HTTP requests arrive as API Gateway (payload 2.0) events; what it prints goes to
`wisp logs {{name}}`.
"""


def handler(event, context):
    path = event.get("rawPath", "/")
    print(f"{{name}}: handling {path} (request {context.aws_request_id})")
    return {
        "statusCode": 200,
        "headers": {"content-type": "text/plain"},
        "body": "Hello from {{name}}! (Python on Wisp)\n",
    }
