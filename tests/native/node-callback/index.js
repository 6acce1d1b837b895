// A callback-style handler (event, context, callback).
// Event knobs:
//   fail             callback(new Error("boom")) after the timeout
//   use              "succeed" | "done" | "fail": answer through context.succeed/done/fail instead
//   pending_timer_ms leave a timer running after calling back: the result is posted only once the
//                    event loop is empty, unless no_wait sets callbackWaitsForEmptyEventLoop = false
//   throw_later      throw from a timer (an uncaught exception: error posted, process exits)
let count = 0;

exports.handler = (event, context, callback) => {
  if (event.no_wait) context.callbackWaitsForEmptyEventLoop = false;
  if (event.throw_later) {
    setTimeout(() => { throw new TypeError('thrown later'); }, 10);
    return;
  }
  setTimeout(() => {
    count += 1;
    const result = { ok: true, count, pid: process.pid, calledBackAt: Date.now() };
    if (event.pending_timer_ms) setTimeout(() => {}, event.pending_timer_ms);
    if (event.use === 'succeed') return context.succeed(result);
    if (event.use === 'done') return context.done(null, result);
    if (event.use === 'fail') return context.fail(new RangeError('failed via context'));
    if (event.fail) return callback(new Error('boom'));
    callback(null, result);
  }, event.delay_ms || 20);
};
