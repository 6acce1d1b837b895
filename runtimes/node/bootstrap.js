'use strict';
// Wisp's Node.js runtime: runs an unmodified AWS Lambda handler against the Lambda Runtime API.
//
// Started as `node bootstrap.js` with cwd = LAMBDA_TASK_ROOT. It follows aws-lambda-ric's
// behaviour (handler loading, callback/async/context.succeed models, the beforeExit-driven
// callbackWaitsForEmptyEventLoop, console format, error shapes and exit codes) without its
// native HTTP client: a small HTTP/1.1 client over one kept-alive `net` socket.

const net = require('net');
const path = require('path');
const fs = require('fs');
const util = require('util');

const TASK_ROOT = process.env.LAMBDA_TASK_ROOT || process.cwd();
const API_PREFIX = '/2018-06-01/runtime/';
const API_ADDR = process.env.AWS_LAMBDA_RUNTIME_API || '127.0.0.1:9001';
const API_HOST = API_ADDR.slice(0, API_ADDR.lastIndexOf(':')).replace(/^\[|\]$/g, '');
const API_PORT = parseInt(API_ADDR.slice(API_ADDR.lastIndexOf(':') + 1), 10);

// ---------------------------------------------------------------------------------------------
// Errors (names as aws-lambda-ric's).

// Named through the prototype (as aws-lambda-ric does), so `name` is not an own enumerable
// property and the logged JSON keeps AWS's shape.
const errorClasses = {};
function runtimeError(name, message, prefix = 'Runtime') {
  const full = `${prefix}.${name}`;
  if (!errorClasses[full]) {
    errorClasses[full] = class extends Error {};
    errorClasses[full].prototype.name = full;
  }
  return new errorClasses[full](message);
}

function isError(e) {
  return util.types.isNativeError(e) ||
    (e && typeof e.name === 'string' && typeof e.message === 'string' && typeof e.stack === 'string');
}

function toRapidResponse(error) {
  try {
    if (isError(error)) {
      return { errorType: error.name, errorMessage: error.message, trace: String(error.stack).split('\n') };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch (_) {
    return {
      errorType: 'handled',
      errorMessage: 'callback called with Error argument, but there was a problem while retrieving ' +
        'one or more of its message, name, and stack',
    };
  }
}

// The JSON written after "Invoke Error" and friends: name/message/stack made enumerable.
function toFormatted(error) {
  const withProps = (_k, v) => {
    if (!(v instanceof Error)) return v;
    const ret = Object.assign({ errorType: v.name, errorMessage: v.message, code: v.code }, v);
    if (typeof v.stack === 'string') ret.stack = v.stack.split('\n');
    return ret;
  };
  try {
    return '\t' + JSON.stringify(error, withProps);
  } catch (_) {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

// ---------------------------------------------------------------------------------------------
// console: `<ISO time>\t<request id>\t<LEVEL>\t<message>` on stdout, newlines folded to \r so a
// record stays one line (Lambda's text format). Pipes are synchronous on Linux, so lines are
// out before the response is posted.

const REQUEST_ID = Symbol.for('aws.lambda.runtime.requestId');

function patchConsole() {
  const levels = ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL'];
  const min = Math.max(0, levels.indexOf((process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()));
  const logger = (level) => {
    if (levels.indexOf(level) < min) return () => {};
    return (message, ...params) => {
      const line = `${new Date().toISOString()}\t${global[REQUEST_ID]}\t${level}\t${util.format(message, ...params)}`;
      process.stdout.write(line.replace(/\n/g, '\r') + '\n');
    };
  };
  console.trace = logger('TRACE');
  console.debug = logger('DEBUG');
  console.info = console.log = logger('INFO');
  console.warn = logger('WARN');
  console.error = logger('ERROR');
  console.fatal = logger('FATAL');
}

function logError(what, err) {
  console.error(what, toFormatted(err instanceof Error ? err : new Error(err)));
}

// ---------------------------------------------------------------------------------------------
// Runtime API client: HTTP/1.1 over one kept-alive `net` socket (5 ms less cold start than the
// http module: less to load and compile before the first request), one request at a time. The
// socket is unref'd between requests so it never keeps the event loop alive, which
// callbackWaitsForEmptyEventLoop depends on.

class Connection {
  constructor(oneShot = false) {
    this.oneShot = oneShot;
    this.sock = null;
    this.req = null; // in flight: {args, retried, reused, got, chunks, size, status, headers, ...}
  }

  request(method, p, body, headers, done, retried = false) {
    const payload = Buffer.from(body, 'utf8');
    let head = `${method} ${API_PREFIX}${p} HTTP/1.1\r\nHost: ${API_ADDR}\r\nContent-Length: ${payload.length}\r\n`;
    for (const k of Object.keys(headers)) head += `${k}: ${headers[k]}\r\n`;
    this.req = { args: [method, p, body, headers, done], retried, reused: this.sock !== null, got: false, chunks: [], size: 0 };
    if (!this.sock) this.connect();
    this.sock.ref();
    this.sock.write(Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), payload]));
  }

  connect() {
    const s = net.connect(API_PORT, API_HOST);
    s.setNoDelay(true);
    s.on('data', (chunk) => s === this.sock && this.onData(chunk));
    s.on('error', (e) => s === this.sock && this.onClosed(e));
    s.on('close', () => s === this.sock && this.onClosed(null));
    this.sock = s;
  }

  onClosed(err) {
    this.sock = null;
    const req = this.req;
    if (!req) return; // closed while idle: the next request reconnects
    if (req.headers && !req.chunked && req.length === undefined) return this.finish(); // body delimited by close
    // A kept-alive connection the server dropped before answering: retry once on a fresh one.
    if (req.reused && !req.got && !req.retried) return this.request(...req.args, true);
    process.stderr.write(`wisp-runtime: Runtime API request ${req.args[0]} ${req.args[1]} failed: ${err ? err.message : 'connection closed'}\n`);
    process.exit(1);
  }

  onData(chunk) {
    const req = this.req;
    if (!req) return;
    req.got = true;
    req.chunks.push(chunk);
    req.size += chunk.length;
    if (!req.headers) {
      const buf = Buffer.concat(req.chunks);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return (req.chunks = [buf]);
      const lines = buf.toString('latin1', 0, end).split('\r\n');
      req.status = parseInt(lines[0].split(' ')[1], 10);
      req.headers = {};
      for (let i = 1; i < lines.length; i++) {
        const c = lines[i].indexOf(':');
        if (c > 0) req.headers[lines[i].slice(0, c).trim().toLowerCase()] = lines[i].slice(c + 1).trim();
      }
      const rest = buf.subarray(end + 4);
      req.chunks = [rest];
      req.size = rest.length;
      req.chunked = /chunked/i.test(req.headers['transfer-encoding'] || '');
      if (req.headers['content-length'] !== undefined) req.length = parseInt(req.headers['content-length'], 10);
    }
    if (req.length !== undefined && req.size >= req.length) {
      return this.finish(Buffer.concat(req.chunks).subarray(0, req.length));
    }
    if (req.chunked && chunk.includes('\r\n\r\n')) { // possibly complete: try to decode
      const body = dechunk(Buffer.concat(req.chunks));
      if (body) this.finish(body);
    }
  }

  finish(body = Buffer.concat(this.req.chunks)) {
    const req = this.req;
    this.req = null;
    if (this.sock && (this.oneShot || /close/i.test(req.headers.connection || ''))) {
      this.sock.destroy();
      this.sock = null;
    } else if (this.sock) {
      this.sock.unref();
    }
    req.args[4](req.status, req.headers, body.toString('utf8'));
  }
}

function dechunk(buf) {
  const parts = [];
  let i = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', i);
    if (eol < 0) return null;
    const size = parseInt(buf.toString('latin1', i, eol).split(';')[0], 16);
    if (size === 0) return buf.indexOf('\r\n\r\n', eol - 2) >= 0 ? Buffer.concat(parts) : null;
    if (buf.length < eol + 2 + size + 2) return null;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    i = eol + 2 + size + 2;
  }
}

const api = new Connection();

function call(method, p, body, headers, done) {
  // The connection is busy only when an error escapes while /next long-polls (a stray timer
  // throwing after the response): that post gets a connection of its own.
  (api.req ? new Connection(true) : api).request(method, p, body, headers, done);
}

const headerSafe = (s) => String(s).replace(/[^\x20-\x7e]/g, '?');

function checkStatus(status, what) {
  // The platform may have abandoned the invocation (timeout): report it and keep serving.
  if (status >= 300) process.stderr.write(`wisp-runtime: Runtime API answered ${status} to the invocation ${what}\n`);
}

function postError(p, error, done) {
  const response = toRapidResponse(error);
  call('POST', p, JSON.stringify(response), {
    'Content-Type': 'application/json',
    'Lambda-Runtime-Function-Error-Type': headerSafe(response.errorType),
  }, (status) => { checkStatus(status, 'error'); done(); });
}

function postInitError(error, done) { postError('init/error', error, done); }

function postInvocationError(error, id, done) {
  postError(`invocation/${encodeURIComponent(id)}/error`, error, done);
}

function postInvocationResponse(result, id, done) {
  let body;
  try {
    body = JSON.stringify(result === undefined ? null : result);
    if (body === undefined) body = 'null'; // a function or symbol result
  } catch (_) {
    const e = new Error('Unable to stringify response body');
    logError('Invoke Error', e);
    return postInvocationError(e, id, done);
  }
  call('POST', `invocation/${encodeURIComponent(id)}/response`, body, { 'Content-Type': 'application/json' },
    (status) => {
      if (status !== 413) {
        checkStatus(status, 'response');
        return done();
      }
      const e = runtimeError('ResponseSizeTooLarge', `Response payload size (${Buffer.byteLength(body)} bytes) ` +
        'exceeded maximum allowed payload size (6291556 bytes).', 'Function');
      e.stack = `${e.name}: ${e.message}`;
      logError('Invoke Error', e);
      postInvocationError(e, id, done);
    });
}

// ---------------------------------------------------------------------------------------------
// Loading the handler: `_HANDLER` = [dir/]module.export[.nested], as aws-lambda-ric resolves it.

function typeModule(dir) { // nearest package.json says "type": "module"?
  for (;;) {
    if (dir.endsWith('/node_modules')) return false;
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try { return JSON.parse(fs.readFileSync(pj, 'utf8')).type === 'module'; } catch (_) { return false; }
    }
    const up = path.dirname(dir);
    if (up === dir) return false;
    dir = up;
  }
}

async function loadModule(file) {
  const tryRequire = (f) => (fs.existsSync(f) ? require(f) : undefined);
  const tryImport = async (f) => (fs.existsSync(f) ? import(require('url').pathToFileURL(f).href) : undefined);
  const esm = typeModule(path.dirname(file));
  return tryRequire(file) ||
    (!esm && tryRequire(file + '.js')) ||
    (esm && await tryImport(file + '.js')) ||
    await tryImport(file + '.mjs') ||
    tryRequire(file + '.cjs') ||
    require(require.resolve(path.basename(file), { paths: [TASK_ROOT, path.dirname(file)] }));
}

// Node keeps the location of an ES module's syntax error out of its stack; `node --check`
// (parse only, nothing runs) prints it. Only on this failure path.
function syntaxErrorLocation(e, file) {
  const first = String(e.stack).split('\n')[0];
  if (/:\d+$/.test(first)) return first.replace(/^file:\/\//, '');
  for (const ext of ['', '.js', '.mjs', '.cjs']) {
    if (!fs.existsSync(file + ext) || fs.statSync(file + ext).isDirectory()) continue;
    const r = require('child_process').spawnSync(process.execPath, ['--check', file + ext], { encoding: 'utf8' });
    const m = /^(.*:\d+)$/m.exec(r.stderr || '');
    return m ? m[1].replace(/^file:\/\//, '') : null;
  }
  return null;
}

async function loadHandler(handlerString) {
  if (handlerString.includes('..')) {
    throw runtimeError('MalformedHandlerName', `'${handlerString}' is not a valid handler name. ` +
      'Use absolute paths when specifying root directories in handler names.');
  }
  const base = path.basename(handlerString);
  const moduleRoot = handlerString.slice(0, handlerString.length - base.length);
  const m = /^([^.]*)\.(.*)$/.exec(base);
  if (!m) throw runtimeError('MalformedHandlerName', 'Bad handler');
  const file = path.resolve(TASK_ROOT, moduleRoot, m[1]);
  let mod;
  try {
    mod = await loadModule(file);
  } catch (e) {
    if (e instanceof SyntaxError) {
      const loc = syntaxErrorLocation(e, file);
      const rel = loc && loc.startsWith(TASK_ROOT + '/') ? loc.slice(TASK_ROOT.length + 1) : loc;
      const err = runtimeError('UserCodeSyntaxError', `${e}${rel ? ` (${rel})` : ''}`);
      err.stack = `${err.name}: ${err.message}\n${e.stack}`;
      throw err;
    }
    if (e && (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND')) {
      const err = runtimeError('ImportModuleError', String(e));
      err.stack = `${err.name}: ${err.message}\n${e.stack}`;
      throw err;
    }
    throw e;
  }
  const fn = m[2].split('.').reduce((o, k) => o && o[k], mod);
  if (!fn) throw runtimeError('HandlerNotFound', `${handlerString} is undefined or not exported`);
  if (typeof fn !== 'function') throw runtimeError('HandlerNotFound', `${handlerString} is not a function`);
  return fn;
}

// ---------------------------------------------------------------------------------------------
// The invoke loop.

const NOOP = () => {};
let beforeExit = NOOP; // what to do when the event loop drains during an invocation
const errorCallbacks = {
  uncaughtException: (e) => postInitError(e, () => process.exit(129)),
  unhandledRejection: (e) => postInitError(e, () => process.exit(128)),
};

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (e) {
    throw new Error(`Cannot parse ${name} as json: ${e}`);
  }
}

function scheduleNext(handler, isAsync) {
  setImmediate(() => call('GET', 'invocation/next', '', {}, (status, headers, body) => {
    if (status !== 200) {
      process.stderr.write(`wisp-runtime: Runtime API answered ${status} to /invocation/next: ${body.slice(0, 200)}\n`);
      process.exit(1);
    }
    invoke(handler, isAsync, headers, body);
  }));
}

function invoke(handler, isAsync, headers, body) {
  const id = headers['lambda-runtime-aws-request-id'];
  const next = () => scheduleNext(handler, isAsync);
  global[REQUEST_ID] = id;
  if (headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = headers['lambda-runtime-trace-id'];
  else delete process.env._X_AMZN_TRACE_ID;

  // Callback machinery as aws-lambda-ric's CallbackContext: the first of callback/succeed/fail/
  // done wins. With callbackWaitsForEmptyEventLoop (default true) a callback's result is posted
  // only once the event loop has drained; succeed/fail/done and async handlers post right away.
  let completed = false;
  let finished = false;
  let waitForEmptyEventLoop = true;
  const fail = (err) => {
    logError('Invoke Error', err);
    postInvocationError(err, id, next);
  };
  const complete = (result) => {
    if (completed) {
      console.error('Invocation has already been reported as done. Cannot call complete more than once per invocation.');
      return;
    }
    completed = true;
    postInvocationResponse(result, id, next);
  };
  const callback = (err, result) => {
    beforeExit = NOOP;
    if (err !== undefined && err !== null) fail(err);
    else if (!waitForEmptyEventLoop) complete(result);
    else beforeExit = () => setImmediate(() => complete(result));
  };
  const done = (err, result) => {
    beforeExit = NOOP;
    if (err !== undefined && err !== null) fail(err);
    else complete(result);
  };
  const once = (f) => function () {
    if (!finished) {
      f.apply(null, arguments);
      finished = true;
    }
  };

  errorCallbacks.uncaughtException = (e) => postInvocationError(e, id, () => process.exit(129));
  errorCallbacks.unhandledRejection = (e) => postInvocationError(e, id, () => process.exit(128));
  // Nothing left to run and no result: an async handler's promise can never settle (an error,
  // Runtime.NodeJsExit); a callback handler that never called back succeeds with null.
  beforeExit = () => {
    completed = true;
    if (isAsync) {
      const e = runtimeError('NodeJsExit', 'The event loop emptied before the handler\'s promise settled');
      logError('Invoke Error', e);
      postInvocationError(e, id, next);
    } else {
      postInvocationResponse(null, id, next);
    }
  };

  const cb = once(callback);
  try {
    const deadline = parseInt(headers['lambda-runtime-deadline-ms'], 10) || 0;
    const context = {
      get callbackWaitsForEmptyEventLoop() { return waitForEmptyEventLoop; },
      set callbackWaitsForEmptyEventLoop(v) { waitForEmptyEventLoop = v; },
      succeed: once((result) => done(null, result)),
      fail: once((err) => done(err === undefined || err === null ? 'handled' : err, null)),
      done: once(done),
      functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
      functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
      memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE, // a string, as on AWS
      logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
      logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
      clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
      identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
      invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
      awsRequestId: id,
      tenantId: headers['lambda-runtime-aws-tenant-id'],
      getRemainingTimeInMillis: () => deadline - Date.now(),
    };
    const result = handler(JSON.parse(body), context, cb);
    if (result && typeof result.then === 'function') {
      result.then(context.succeed, context.fail).catch(context.fail);
    }
  } catch (err) {
    cb(err);
  }
}

async function main() {
  patchConsole();
  process.on('uncaughtException', (e) => {
    logError('Uncaught Exception', e);
    errorCallbacks.uncaughtException(e);
  });
  process.on('unhandledRejection', (reason) => {
    let text;
    try { text = String(reason); } catch (_) { text = util.inspect(reason); }
    const e = runtimeError('UnhandledPromiseRejection', text);
    e.reason = reason;
    logError('Unhandled Promise Rejection', e);
    errorCallbacks.unhandledRejection(e);
  });
  process.on('beforeExit', () => beforeExit());

  let handler;
  try {
    handler = await loadHandler(process.env._HANDLER || '');
  } catch (e) {
    logError('Uncaught Exception', e);
    return postInitError(e, () => process.exit(129));
  }
  const isAsync = handler.constructor && handler.constructor.name === 'AsyncFunction';
  scheduleNext(handler, isAsync);
}

main();
