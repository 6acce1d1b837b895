// An async handler: echoes the event and context; a module counter shows warm reuse.
// Event knobs: fail (throw), sleep_ms, reject_later (an unhandled rejection: error posted, process
// exits), big_response_mb (a response that large), circular (a result JSON can't serialize),
// throw_after_ms (answers, then a timer throws while the runtime waits for the next event: the
// error is posted against this invocation and the process exits 129).
let count = 0;

exports.handler = async (event, context) => {
  if (event && event.sleep_ms) await new Promise((r) => setTimeout(r, event.sleep_ms));
  if (event && event.fail) throw new Error(event.fail);
  if (event && event.reject_later) {
    setTimeout(() => Promise.reject(new Error('rejected later')), 10);
    return new Promise(() => {}); // never settles; the rejection ends the invocation
  }
  if (event && event.big_response_mb) return 'x'.repeat(event.big_response_mb * 1024 * 1024);
  if (event && event.circular) {
    const o = {};
    o.self = o;
    return o;
  }
  if (event && event.throw_after_ms) setTimeout(() => { throw new Error('thrown after the response'); }, event.throw_after_ms);
  count += 1;
  console.log('node-async invocation', count, 'on pid', process.pid);
  return {
    event,
    context: {
      awsRequestId: context.awsRequestId,
      functionName: context.functionName,
      functionVersion: context.functionVersion,
      invokedFunctionArn: context.invokedFunctionArn,
      memoryLimitInMB: context.memoryLimitInMB,
      logGroupName: context.logGroupName,
      logStreamName: context.logStreamName,
      identity: context.identity,
      clientContext: context.clientContext,
      callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
      remainingTimeMs: context.getRemainingTimeInMillis(),
    },
    traceId: process.env._X_AMZN_TRACE_ID,
    count,
    pid: process.pid,
  };
};
