// The "lua" runtime: runs a function's Lua handler in-process on LuaJIT, in a sandbox.
//
// A function directory holds the handler file (spec->handler_file, e.g. "handler.lua"). The file
// either returns a module table holding the entry function (spec->handler_entry, e.g. "handle")
// or defines a global function of that name. It is called as handler(event, ctx):
//   event: body, json (decoded body, JSON null -> nil), headers (lower-case names), method, path,
//          query, content_type, trigger ("http"|"mqtt"|"timer"), topic, id (hex), timestamp
//          (seconds since the epoch); each filled in when first read.
//   ctx:   env(name), log(...)/warn(...)/error(...), now(), emit(topic, payload[, {qos, retain}]),
//          state:get(k) / :put(k, v[, ttl_s]) / :delete(k) / :incr(k[, delta][, ttl_s]).
// It returns a string (text/plain), nil (empty 200), a reply table {status|statusCode (200-599),
// headers, body} (a table body becomes JSON), or any other value, sent as JSON.
//
// Isolation: every Instance has its own lua_State with its own allocator, capped at
// spec->limits.memory_bytes, and an instruction-count hook that stops the call once
// spec->limits.timeout has passed. Work done inside C functions is held to the same limits:
// string.find/match/gmatch/gsub are our own step-counting matcher (LuaJIT's runs where the hook
// cannot stop it), and JSON text (reply bodies, ctx.emit payloads, ctx.state:put values), which
// lives outside the Lua heap, may take only the memory the instance has left and stops at the
// deadline. Only the base, table, string, math and bit libraries are open; nothing reaches
// files, processes, FFI or bytecode, and `require` loads only Lua source files from the
// function's own directory. The JIT compiler is off in these states (its traces would not run
// the hook, so a loop could escape the timeout).
//
// Failures: CreateInstance returns InvalidArgument (with Lua's message, e.g.
// "handler.lua:3: '=' expected near 'x'") when the file is missing, does not compile, fails
// while loading, or has no entry function; DeadlineExceeded / ResourceExhausted when loading
// passes the limits. Invoke returns FunctionError when the handler raises ("handler.lua:3:
// boom") or returns something that is not a valid reply (the function's fault, not the
// caller's: "handler returned invalid status 42 (use 200-599)", an invalid header, a body with
// no JSON form), DeadlineExceeded ("function exceeded its 2s timeout") or ResourceExhausted
// ("function exceeded its memory limit of 32Mi").
// After a timeout or memory exhaustion the instance is unusable (Reusable() is false, further
// calls fail the same way); after any other error it stays usable.
//
// Ownership and threads: the Runtime is stateless and thread-safe. An Instance keeps a reference
// to the FunctionSpec and belongs to the thread that calls it, one call at a time (LuaJIT states
// are single-threaded). Instances of one runtime share nothing and may run on different threads.
#pragma once

#include "wisp/runtime.h"

namespace wisp {

// A new "lua" runtime. Never null.
RuntimePtr MakeLuaRuntime();

// Registers MakeLuaRuntime under the name "lua" in RuntimeRegistry::Get(). Call before the node
// starts (registration is not thread-safe); calling it again is harmless.
void RegisterLuaRuntime();

}  // namespace wisp
