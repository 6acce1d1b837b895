// {{name}}: a Wisp function in JavaScript, compiled to a WebAssembly component by
// componentize-js. It exports `wasi:http/incoming-handler` (the world in wit/): the node
// calls `handle` for every request on `GET /{{name}}`. What it logs goes to
// `wisp logs {{name}}`.
import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

const encoder = new TextEncoder();

export const incomingHandler = {
  handle(request, responseOut) {
    console.log(`{{name}}: handling ${request.pathWithQuery() ?? "/"}`);
    const response = new OutgoingResponse(
      Fields.fromList([["content-type", encoder.encode("text/plain")]]),
    );
    response.setStatusCode(200);
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: "ok", val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(encoder.encode("Hello from {{name}}! (JavaScript on Wisp)\n"));
    stream[Symbol.dispose](); // the stream is dropped before the body is finished
    OutgoingBody.finish(body, undefined);
  },
};
