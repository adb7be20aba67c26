// The "process" runtime: a function is any executable, started by wispd and kept warm, that
// speaks the framed protocol of docs/process-protocol.md (frame_codec.h) over its stdin/stdout.
//
// What runs: the manifest's `command:` when given (argv[0] a name looked up in
// /usr/local/bin:/usr/bin:/bin, or a path relative to the function directory); else for a
// `handler: ./main.py[:entry]` the bundled Python helper (sdk/python/wisp_handler.py, compiled
// into wispd) as `python3 wisp_handler.py main.py entry`; else the handler file itself, made
// executable (e.g. a binary built with sdk/cpp/wisp_handler.h).
//
// Isolation, per instance (details and the reasons in docs/process-protocol.md, "Isolation"):
// a private directory under the temp dir holding a copy of the function (read-only to it) and
// a tmp dir (HOME, TMPDIR, the only place it may write; Landlock where the kernel has it); its
// own session and process group; RLIMIT_AS = limits.memory, RLIMIT_CPU, RLIMIT_NOFILE,
// RLIMIT_NPROC, no core files; PR_SET_NO_NEW_PRIVS; a seccomp filter that fails dangerous
// system calls with EPERM; a clean environment (PATH, HOME, TMPDIR, LANG, the manifest's
// environment). When wispd runs as root, each instance also runs as its own unprivileged uid
// (ProcessRuntimeOptions::uid_base + slot), which makes RLIMIT_NPROC a per-instance limit and
// lets the node kill everything the instance started, wherever it went.
//
// Failures: CreateInstance gives InvalidArgument when the command is not found, the process
// exits or reports a load error before it says it is ready (with its message or stderr), or it
// is not ready within max(limits.timeout, 10s); IoError when the private directory cannot be
// made. Invoke gives FunctionError when the handler raised (its message), returned an invalid
// reply, crashed ("function process was killed by signal SIGABRT: <stderr tail>") or broke the
// protocol; DeadlineExceeded ("function exceeded its 2s timeout") after the node killed it for
// running past limits.timeout; ResourceExhausted when it ran out of memory or CPU time.
// After a crash, a timeout, a memory or protocol failure the instance is gone: Reusable() is
// false and further calls fail at once; after a handler error it stays usable.
//
// Threads: the Runtime is thread-safe (CreateInstance may run on any shard). An Instance is
// used by the shard thread that made it, one call at a time; Invoke blocks that thread for the
// call's duration (poll on the process's socket), like the Lua runtime.
#pragma once

#include <cstdint>

#include "wisp/runtime.h"

namespace wisp {

struct ProcessRuntimeOptions {
  // When wispd runs as root, instance i runs as uid (and gid) uid_base + slot, slots in
  // [0, uid_count). 0 turns this off: instances then run as wispd's own user.
  std::uint32_t uid_base = 1900000000;
  std::uint32_t uid_count = 65536;
  // RLIMIT_NPROC per instance (with its own uid), RLIMIT_NOFILE and RLIMIT_CPU (seconds over
  // the whole life of a warm process: past it the process dies and is replaced).
  std::uint64_t max_processes = 64;
  std::uint64_t max_open_files = 256;
  std::uint64_t max_cpu_seconds = 3600;
};

// A new "process" runtime. Never null. Building its seccomp filter cannot fail on a supported
// kernel; if it does, CreateInstance reports Internal.
RuntimePtr MakeProcessRuntime(const ProcessRuntimeOptions& options = {});

// Registers MakeProcessRuntime() under "process" in RuntimeRegistry::Get(). Call before the node
// starts (registration is not thread-safe); calling it again is harmless.
void RegisterProcessRuntime();

}  // namespace wisp
