// An AWS Lambda handler for Node.js, unchanged: an async handler behind an HTTP route.
let orders = 0; // module state lives as long as the instance

exports.handler = async (event, context) => {
  const order = event.body ? JSON.parse(event.body) : event;
  orders += 1;
  console.log(`order ${orders} of this instance:`, JSON.stringify(order));
  return {
    statusCode: 201,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ accepted: order, id: context.awsRequestId }),
  };
};
