// {{name}}: an AWS Lambda handler for Node.js, run by Wisp behind `GET /{{name}}`.
// HTTP requests arrive as API Gateway (payload 2.0) events; what it logs goes to
// `wisp logs {{name}}`.
exports.handler = async (event, context) => {
  console.log(`{{name}}: handling ${event.rawPath || "/"} (request ${context.awsRequestId})`);
  return {
    statusCode: 200,
    headers: { "content-type": "text/plain" },
    body: "Hello from {{name}}! (Node.js on Wisp)\n",
  };
};
