"""Runs a wisp process function written in Python (standard library only).

wispd starts `python3 wisp_handler.py HANDLER_FILE ENTRY` in the function's directory and
speaks the framed protocol of docs/process-protocol.md over stdin/stdout. A handler is:

    def handle(event, context):
        n = context.state.incr("calls")
        context.emit("demo/calls", {"n": n})
        return {"statusCode": 200, "body": {"n": n, "you_sent": event.json()}}

event: body (bytes), text(), json(), headers (lower-case names), method, path, query, topic,
       trigger ("http" | "mqtt" | "timer"), id (hex), timestamp (seconds), content_type.
context: state.get(key) -> str or None, state.put(key, value, ttl=None),
         state.incr(key, delta=1, ttl=None) -> int, state.delete(key) -> bool,
         log(msg) / warn(msg) / error(msg), emit(topic, payload, qos=0, retain=False),
         env(name, default=None), now().
A handler returns a dict {statusCode|status, headers, body}, a str, bytes, None (empty 200) or
any other JSON value. A failed host call raises WispError(kind, message).
Anything the handler prints goes to the function's log (stdout is the protocol channel).
"""

import importlib.util
import json
import os
import struct
import sys
import time
import traceback

READY, INVOKE, REPLY, ERROR, CALL, RESULT = 1, 2, 3, 4, 5, 6
(METHOD, PATH, QUERY, HEADER_NAME, HEADER_VALUE, CONTENT_TYPE, BODY, TRIGGER, TOPIC, ID,
 TIMESTAMP, STATUS, KIND, MESSAGE, OP, KEY, VALUE, TTL_MS, DELTA, LEVEL, QOS, RETAIN) = range(1, 23)


class WispError(Exception):
    """A host call the node refused: kind is a wisp error kind, e.g. "InvalidArgument"."""

    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def _bytes(value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return json.dumps(value, separators=(",", ":")).encode()


class _Channel:
    def __init__(self, in_fd, out_fd):
        self._in, self._out, self._buf = in_fd, out_fd, b""

    def _read_exact(self, n):
        while len(self._buf) < n:
            chunk = os.read(self._in, max(65536, n - len(self._buf)))
            if not chunk:
                raise EOFError
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read(self):
        (size,) = struct.unpack(">I", self._read_exact(4))
        body = self._read_exact(size)
        fields, pos = [], 1
        while pos < size:
            tag, length = struct.unpack_from(">BI", body, pos)
            pos += 5
            fields.append((tag, body[pos:pos + length]))
            pos += length
        return body[0], fields

    def write(self, frame_type, fields=()):
        parts = [bytes([frame_type])]
        for tag, value in fields:
            value = _bytes(value)
            parts.append(struct.pack(">BI", tag, len(value)))
            parts.append(value)
        body = b"".join(parts)
        data = memoryview(struct.pack(">I", len(body)) + body)
        while data:
            data = data[os.write(self._out, data):]


class Event:
    def __init__(self, fields):
        self.headers = {}
        values = {}
        name = None
        for tag, value in fields:
            if tag == HEADER_NAME:
                name = value.decode("utf-8", "replace").lower()
            elif tag == HEADER_VALUE and name is not None:
                self.headers[name] = value.decode("utf-8", "replace")
            else:
                values[tag] = value
        text = lambda tag: values.get(tag, b"").decode("utf-8", "replace")
        self.body = values.get(BODY, b"")
        self.method, self.path, self.query = text(METHOD), text(PATH), text(QUERY)
        self.topic, self.trigger, self.id = text(TOPIC), text(TRIGGER), text(ID)
        self.content_type = text(CONTENT_TYPE)
        self.timestamp = float(text(TIMESTAMP) or 0)

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body) if self.body else None


class _State:
    def __init__(self, call):
        self._call = call

    def get(self, key):
        value = self._call("state.get", [(KEY, key)])
        return None if value is None else value.decode("utf-8", "surrogateescape")

    def put(self, key, value, ttl=None):
        fields = [(KEY, key), (VALUE, value)]
        if ttl is not None:
            fields.append((TTL_MS, str(int(ttl * 1000))))
        self._call("state.put", fields)

    def incr(self, key, delta=1, ttl=None):
        fields = [(KEY, key), (DELTA, str(int(delta)))]
        if ttl is not None:
            fields.append((TTL_MS, str(int(ttl * 1000))))
        return int(self._call("state.incr", fields))

    def delete(self, key):
        return self._call("state.delete", [(KEY, key)]) == b"1"


class Context:
    def __init__(self, channel):
        self._channel = channel
        self.state = _State(self._call)

    def _call(self, op, fields):
        self._channel.write(CALL, [(OP, op)] + fields)
        frame_type, reply = self._channel.read()
        values = dict(reply)
        if frame_type != RESULT:
            raise EOFError
        if KIND in values:
            raise WispError(values[KIND].decode(), values.get(MESSAGE, b"").decode("utf-8", "replace"))
        return values.get(VALUE)

    def _log(self, level, parts):
        self._call("log", [(LEVEL, level), (MESSAGE, " ".join(str(p) for p in parts))])

    def log(self, *parts):
        self._log("info", parts)

    def warn(self, *parts):
        self._log("warn", parts)

    def error(self, *parts):
        self._log("error", parts)

    def emit(self, topic, payload, qos=0, retain=False):
        self._call("emit", [(TOPIC, topic), (BODY, payload), (QOS, str(int(qos))),
                            (RETAIN, "1" if retain else "0")])

    @staticmethod
    def env(name, default=None):
        return os.environ.get(name, default)

    @staticmethod
    def now():
        return time.time()


def _reply_fields(result):
    status, headers, body = 200, {}, result
    if isinstance(result, dict) and ("statusCode" in result or "status" in result or
                                     "body" in result or "headers" in result):
        status = result.get("statusCode", result.get("status", 200))
        headers = result.get("headers") or {}
        body = result.get("body")
    fields = [(STATUS, str(int(status)))]
    for name, value in headers.items():
        fields += [(HEADER_NAME, str(name)), (HEADER_VALUE, str(value))]
    if body is None:
        return fields
    if isinstance(body, (bytes, bytearray)):
        content_type = "application/octet-stream"
    elif isinstance(body, str):
        content_type = "text/plain"
    else:
        content_type = "application/json"
    fields += [(CONTENT_TYPE, content_type), (BODY, bytes(body) if isinstance(body, bytearray) else body)]
    return fields


def _load(path, entry):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, entry, None)
    if not callable(handler):
        raise AttributeError(f"{path} defines no function '{entry}'")
    return handler


def _error_text(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}: " if frames else ""
    return f"{where}{type(exc).__name__}: {exc}"[:8192]


def serve(handler, in_fd=None, out_fd=None):
    """Answers invoke frames with `handler` until the node closes the channel."""
    if in_fd is None:
        in_fd, out_fd = _take_stdio()
    channel = _Channel(in_fd, out_fd)
    channel.write(READY)
    context = Context(channel)
    while True:
        try:
            frame_type, fields = channel.read()
        except EOFError:
            return
        if frame_type != INVOKE:
            continue
        try:
            channel.write(REPLY, _reply_fields(handler(Event(fields), context)))
        except EOFError:
            return
        except MemoryError:
            channel.write(ERROR, [(KIND, "memory"), (MESSAGE, "MemoryError")])
        except Exception as exc:  # the handler's failure goes to the caller, not the log
            channel.write(ERROR, [(KIND, "function"), (MESSAGE, _error_text(exc))])


def _take_stdio():
    # The protocol keeps its own copies of fds 0 and 1; print() then goes to stderr (the log).
    in_fd, out_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return in_fd, out_fd


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: wisp_handler.py HANDLER_FILE ENTRY\n")
        return 2
    in_fd, out_fd = _take_stdio()
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[1])))
    try:
        handler = _load(argv[1], argv[2])
    except BaseException as exc:  # a load failure (SyntaxError too) is the deploy's error
        _Channel(in_fd, out_fd).write(ERROR, [(KIND, "load"), (MESSAGE, _error_text(exc))])
        return 1
    serve(handler, in_fd, out_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
