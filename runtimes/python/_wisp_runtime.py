"""Wisp's Python runtime: runs an unmodified AWS Lambda handler against the Lambda Runtime API.

Started through bootstrap.py (`python3 -S bootstrap.py`, cwd = LAMBDA_TASK_ROOT). It mirrors
awslambdaric's behaviour (init errors, context object, error shapes, log format) but imports as
little as possible: a raw-socket HTTP/1.1 keep-alive client instead of http.client, the C `_json`
codec instead of the `json` package, and Lambda's logging setup installed only when the
function imports `logging` itself (that import alone costs ~20 ms under -S).
"""
import sys
import os
import time
import _socket

RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))

# -S dropped site-packages; like Lambda, the function's own directory (where `pip install -t`
# put its dependencies) comes first, then PYTHONPATH. The runtime's own directory goes, so a
# function module can never be shadowed by the runtime's files.
TASK_ROOT = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
_extra = [TASK_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
sys.path[:] = _extra + [p for p in sys.path if p not in _extra and os.path.abspath(p or ".") != RUNTIME_DIR]
del _extra

# site normally provides exit()/quit(); handlers written for Lambda may call them.
import builtins, _sitebuiltins  # noqa: E401  (frozen modules: ~free)

builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")

# ---------------------------------------------------------------------------------------------
# JSON via the C accelerator; falls back to the json package when unavailable or on errors
# (so malformed input gets the standard JSONDecodeError message).


def _std_json():
    import json

    return json


def _default(o):
    # boto3/DynamoDB hand out Decimal; awslambdaric serializes them as numbers.
    dec = sys.modules.get("decimal")
    if dec is not None and isinstance(o, dec.Decimal):
        return int(o) if o.is_finite() and o == o.to_integral_value() else float(o)
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


class _ScanContext:  # the attributes _json.make_scanner reads from a JSONDecoder
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


try:
    import _json

    _scan = _json.make_scanner(_ScanContext)

    def dumps(obj):
        # A new encoder per call: its circular-reference markers are left dirty by a failure.
        enc = _json.make_encoder({}, _default, _json.encode_basestring, None, ": ", ", ", False, False, True)
        return "".join(enc(obj, 0))

    def loads(s):
        if not isinstance(s, str):
            s = bytes(s).decode("utf-8")
        t = s.strip(" \t\n\r")
        try:
            obj, end = _scan(t, 0)
            if end == len(t):
                return obj
        except Exception:
            pass
        return _std_json().loads(s)  # raises the proper error

    if dumps({"a": [1, 2.5, None, "\u00e9"]}) != '{"a": [1, 2.5, null, "\u00e9"]}' or loads(' {"a":[1]} ') != {"a": [1]}:
        raise ImportError("unexpected _json behaviour")
except Exception:  # another Python version's _json: use the package
    def dumps(obj):
        return _std_json().dumps(obj, default=_default, ensure_ascii=False)

    def loads(s):
        return _std_json().loads(s)


# ---------------------------------------------------------------------------------------------
# Runtime API client: HTTP/1.1 over one kept-alive TCP connection.

_API_PREFIX = "/2018-06-01/runtime/"


class RuntimeAPI:
    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.host_header = address
        self.addr = (host.strip("[]") or "127.0.0.1", int(port))
        self.sock = None
        self.buf = bytearray()

    def _connect(self):
        family = _socket.AF_INET6 if ":" in self.addr[0] else _socket.AF_INET
        s = _socket.socket(family, _socket.SOCK_STREAM)
        try:
            s.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            s.connect(self.addr)
        except BaseException:
            s.close()
            raise
        self.sock, self.buf = s, bytearray()

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def request(self, method, path, body=b"", headers=()):
        head = "".join(f"{k}: {_header_safe(v)}\r\n" for k, v in headers)
        data = (f"{method} {_API_PREFIX}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                f"Content-Length: {len(body)}\r\n{head}\r\n").encode("latin-1")
        if len(body) < 65536:
            data, body = data + body, b""
        while True:
            reused = self.sock is not None
            if not reused:
                self._connect()
            try:
                self.sock.sendall(data)
                if body:
                    self.sock.sendall(body)
                return self._read_response()
            except OSError:
                self.close()
                if not reused:  # a kept-alive connection may have gone stale: retry once, fresh
                    raise

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionResetError("Runtime API closed the connection")
            self.buf += chunk

    def _read_until(self, sep):
        start = 0
        while (i := self.buf.find(sep, start)) < 0:
            start = max(0, len(self.buf) - len(sep))
            self._fill(len(self.buf) + 1)
        line = bytes(self.buf[:i])
        del self.buf[: i + len(sep)]
        return line

    def _take(self, n):
        self._fill(n)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _read_response(self):
        lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int(self._read_until(b"\r\n").split(b";")[0], 16):
                parts.append(self._take(size))
                self._take(2)
            while self._read_until(b"\r\n"):  # trailers
                pass
            body = b"".join(parts)
        else:  # delimited by close
            try:
                while True:
                    self._fill(len(self.buf) + 1)
            except ConnectionResetError:
                pass
            body, self.buf = bytes(self.buf), bytearray()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


def _header_safe(value):
    # Header values must be printable ASCII; an exception class name may not be.
    s = str(value)
    return s if s.isascii() and s.isprintable() else s.encode("ascii", "replace").decode().replace("\n", " ")


def _quote(s):
    return "".join(c if c.isascii() and (c.isalnum() or c in "-._~") else "".join(f"%{b:02X}" for b in c.encode()) for c in s)


# ---------------------------------------------------------------------------------------------
# Errors, formatted as awslambdaric does.


class FaultException(Exception):
    def __init__(self, error_type, msg, trace=None):
        super().__init__(msg)
        self.error_type, self.msg, self.trace = error_type, msg, trace


def make_error(message, error_type, stack_trace, request_id=None):
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id or "",
        "stackTrace": stack_trace or [],
    }


def error_from_exception(exc, request_id=None):
    import traceback  # only on the error path (~8 ms)

    frames = traceback.extract_tb(exc.__traceback__)
    for i, frame in enumerate(frames):  # drop the runtime's own frames, keep the function's
        if not frame.filename.startswith(RUNTIME_DIR + "/"):
            frames = frames[i:]
            break
    return make_error(str(exc), type(exc).__name__, traceback.format_list(frames), request_id)


def log_error(err):
    # awslambdaric's text format: one record, lines joined by \r, indentation as U+00A0.
    desc = "[ERROR]"
    if err.get("errorType"):
        desc += " " + err["errorType"] + (":" if err.get("errorMessage") else "")
    if err.get("errorMessage"):
        desc += " " + err["errorMessage"]
    lines = [desc, "Traceback (most recent call last):"]
    for element in err.get("stackTrace") or []:
        for line in element.splitlines() or [""]:
            stripped = line.lstrip(" ")
            lines.append("\u00a0" * (len(line) - len(stripped)) + stripped)
    text = "\r".join(lines) + "\n"
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:  # lone surrogates in a message
        sys.stdout.write(text.encode("utf-8", "backslashreplace").decode("utf-8"))
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Logging: Lambda's root handler and format, configured when (if) `logging` is first imported.

_request_id = None


def _setup_logging(logging):
    logging.Formatter.converter = time.gmtime

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            try:
                sys.stdout.write(self.format(record))
            except Exception:
                self.handleError(record)

    def add_request_id(record):
        record.aws_request_id = _request_id or ""
        return True

    handler = LambdaLoggerHandler()
    handler.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n", "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(add_request_id)
    root = logging.getLogger()
    # Like Lambda, the root level is only set when AWS_LAMBDA_LOG_LEVEL is (otherwise WARNING).
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    level = {"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "CRITICAL"}.get(level, level)
    if level in logging._nameToLevel:
        root.setLevel(level)
    root.addHandler(handler)


class _LoggingImportHook:
    """A meta-path finder that wraps the loading of `logging` to configure it right after."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "logging":
            return None
        sys.meta_path.remove(cls)
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                exec_module = spec.loader.exec_module

                def exec_and_setup(module):
                    exec_module(module)
                    _setup_logging(module)

                spec.loader.exec_module = exec_and_setup
                return spec
        return None


# ---------------------------------------------------------------------------------------------
# The context object handed to handlers (same attributes as awslambdaric's LambdaContext).


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]


class Client:
    __slots__ = ["installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"]


class ClientContext:
    __slots__ = ["custom", "env", "client"]


def _obj_from_dict(cls, d):
    if d is None:
        return None
    obj = cls()
    for field in cls.__slots__:
        setattr(obj, field, d.get(field) if isinstance(d, dict) else None)
    return obj


class LambdaContext:
    def __init__(self, request_id, client_context, identity, deadline_ms, invoked_function_arn, tenant_id=None):
        env = os.environ
        self.aws_request_id = request_id
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")  # a str, as in awslambdaric
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self.identity = _obj_from_dict(CognitoIdentity, {})
        if isinstance(identity, dict):
            self.identity.cognito_identity_id = identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = identity.get("cognitoIdentityPoolId")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        fields = ("aws_request_id", "log_group_name", "log_stream_name", "function_name",
                  "memory_limit_in_mb", "function_version", "invoked_function_arn", "client_context", "identity")
        return "LambdaContext([" + ",".join(f"{f}={getattr(self, f)}" for f in fields) + "])"


# ---------------------------------------------------------------------------------------------


def load_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException("Runtime.MalformedHandlerName", f"Bad handler '{handler}': {e}")
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultException("Runtime.BuiltInModuleConflict",
                                 f"Cannot use built-in module {modname} as a handler module")
        name = modname.replace("/", ".")
        __import__(name)
        module = sys.modules[name]
    except ImportError as e:
        raise FaultException("Runtime.ImportModuleError", f"Unable to import module '{modname}': {e}")
    except SyntaxError as e:
        trace = [f'  File "{e.filename}" Line {e.lineno}\n    {e.text}']
        raise FaultException("Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {e}", trace)
    try:
        return getattr(module, fname)
    except AttributeError:
        raise FaultException("Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'")


def _parse_json_header(value, name):
    try:
        return loads(value)
    except Exception as e:
        raise FaultException("Runtime.LambdaContextUnmarshalError", f"Unable to parse {name} JSON: {e}")


def handle(api, handler, headers, body):
    global _request_id
    request_id = headers.get("lambda-runtime-aws-request-id", "")
    _request_id = request_id
    trace_id = headers.get("lambda-runtime-trace-id")
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    error = None
    try:
        cc, ci = headers.get("lambda-runtime-client-context"), headers.get("lambda-runtime-cognito-identity")
        context = LambdaContext(
            request_id,
            _parse_json_header(cc, "Client Context") if cc else None,
            _parse_json_header(ci, "Cognito Identity") if ci else None,
            int(headers.get("lambda-runtime-deadline-ms") or 0),
            headers.get("lambda-runtime-invoked-function-arn"),
            headers.get("lambda-runtime-aws-tenant-id"),
        )
        content_type = headers.get("content-type", "application/json").split(";")[0].strip()
        if content_type == "application/json":
            try:
                event = loads(body)
            except Exception as e:
                raise FaultException("Runtime.UnmarshalError", f"Unable to unmarshal input: {e}")
        else:
            event = body
        response = handler(event, context)
        if isinstance(response, bytes):
            result, result_type = response, "application/unknown"
        else:
            try:
                result, result_type = dumps(response).encode("utf-8"), "application/json"
            except Exception as e:
                raise FaultException("Runtime.MarshalError", f"Unable to marshal response: {e}")
    except FaultException as e:
        error = make_error(e.msg, e.error_type, e.trace, request_id)
    except Exception as e:
        try:
            error = error_from_exception(e, request_id)
        except Exception:  # e.g. an exception whose __str__ raises
            error = make_error("<exception str() failed>", type(e).__name__, [], request_id)
    sys.stdout.flush()
    sys.stderr.flush()
    path = f"invocation/{_quote(request_id)}/"
    if error is None:
        status, _, _ = api.request("POST", path + "response", result, [("Content-Type", result_type)])
        if status != 413:
            return _check(status, "response")
        error = make_error(f"Response payload size ({len(result)} bytes) exceeded maximum allowed payload size "
                           f"(6291556 bytes).", "Function.ResponseSizeTooLarge", [], request_id)
    log_error(error)
    status, _, _ = api.request("POST", path + "error", dumps(error).encode("utf-8", "backslashreplace"), [
        ("Content-Type", "application/json"), ("Lambda-Runtime-Function-Error-Type", error["errorType"])])
    _check(status, "error")


def _check(status, what):
    # The invocation may have been abandoned (timed out) by the platform: report, keep serving.
    if status // 100 != 2:
        sys.stderr.write(f"wisp-runtime: Runtime API answered {status} to the invocation {what}\n")


def main():
    # Line-buffered so each invocation's prints reach the log as they happen, not at exit.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    api = RuntimeAPI(os.environ["AWS_LAMBDA_RUNTIME_API"])
    if "logging" in sys.modules:
        _setup_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, _LoggingImportHook)
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except Exception as e:
        err = (make_error(e.msg, e.error_type, e.trace) if isinstance(e, FaultException)
               else error_from_exception(e))
        log_error(err)
        api.request("POST", "init/error", dumps(err).encode("utf-8"),
                    [("Content-Type", "application/json"), ("Lambda-Runtime-Function-Error-Type", err["errorType"])])
        sys.exit(1)
    while True:
        status, headers, body = api.request("GET", "invocation/next")
        if status != 200:
            sys.stderr.write(f"wisp-runtime: Runtime API answered {status} to /invocation/next: {body[:200]!r}\n")
            sys.exit(1)
        handle(api, handler, headers, body)
