"""The smallest useful function: what a Python cold start costs without any imports."""


def handler(event, context):
    return {"hello": "world"}
