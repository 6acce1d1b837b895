// An API Gateway HTTP API (payload format 2.0) handler: echoes the request in a 201 response.
exports.handler = async (event) => {
  let body = event.body;
  if (body !== undefined && event.isBase64Encoded) body = Buffer.from(body, 'base64').toString('utf8');
  return {
    statusCode: 201,
    headers: { 'content-type': 'application/json', 'x-seen-path': event.rawPath },
    cookies: ['a=1'],
    body: JSON.stringify({
      method: event.requestContext.http.method,
      path: event.rawPath,
      query: event.rawQueryString,
      queryStringParameters: event.queryStringParameters,
      pathParameters: event.pathParameters,
      body,
    }),
  };
};
