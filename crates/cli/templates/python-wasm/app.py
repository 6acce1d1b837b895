"""{{name}}: a Wisp function in Python, compiled to a WebAssembly component by componentize-py.

It exports `wasi:http/incoming-handler` (the world in wit/): the node calls `handle` for
every request on `GET /{{name}}`. What it prints goes to `wisp logs {{name}}`.
"""
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        print(f"{{name}}: handling {request.path_with_query() or '/'}")
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(200)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:  # the stream is dropped before the body is finished
            stream.blocking_write_and_flush(b"Hello from {{name}}! (Python on Wisp)\n")
        OutgoingBody.finish(body, None)
