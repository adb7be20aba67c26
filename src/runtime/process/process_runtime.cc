// The process runtime. Notes for readers:
//
// * Everything the child needs between fork() and execve() (argv, envp, the seccomp program,
//   the Landlock ruleset) is built in the parent: the node is multi-threaded, so the child may
//   only make plain system calls until it execs.
// * stdin and stdout of the process are one end of a socketpair rather than pipes, so that a
//   write to a dead process gives EPIPE from send(MSG_NOSIGNAL) instead of a SIGPIPE.
// * stderr is a pipe the node drains during calls into the function's log; its last bytes
//   explain a crash.

#include "runtime/process/process_runtime.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/quote.h"
#include "runtime/process/frame_codec.h"
#include "runtime/process/python_helper.h"
#include "wisp/units.h"

// Landlock ABI 3 (Linux 6.2); Debian 12's kernel headers predate it.
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif

namespace wisp {
namespace {

namespace fs = std::filesystem;
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using process::Frame;
using process::FrameType;
using process::Tag;

constexpr std::string_view kSearchPath = "/usr/local/bin:/usr/bin:/bin";
constexpr std::chrono::milliseconds kMinStartupTime{10000};
// How much of stderr is kept to explain a crash, and the longest log line forwarded.
constexpr std::size_t kStderrTail = 2048;
constexpr std::size_t kMaxLogLine = 8192;
constexpr std::size_t kMaxErrorMessage = 8192;

// Fail with EPERM: nothing a function needs, and each one reaches into the kernel or other
// processes (tracing, mounts, modules, keys, namespaces, clocks, raw I/O).
constexpr const char* kDeniedSyscalls[] = {"ptrace",
                                           "process_vm_readv",
                                           "process_vm_writev",
                                           "kcmp",
                                           "mount",
                                           "umount2",
                                           "pivot_root",
                                           "chroot",
                                           "move_mount",
                                           "open_tree",
                                           "fsopen",
                                           "fsconfig",
                                           "fsmount",
                                           "fspick",
                                           "mount_setattr",
                                           "setns",
                                           "unshare",
                                           "reboot",
                                           "kexec_load",
                                           "kexec_file_load",
                                           "init_module",
                                           "finit_module",
                                           "delete_module",
                                           "bpf",
                                           "perf_event_open",
                                           "keyctl",
                                           "add_key",
                                           "request_key",
                                           "swapon",
                                           "swapoff",
                                           "acct",
                                           "quotactl",
                                           "settimeofday",
                                           "clock_settime",
                                           "clock_adjtime",
                                           "adjtimex",
                                           "sethostname",
                                           "setdomainname",
                                           "iopl",
                                           "ioperm",
                                           "syslog",
                                           "userfaultfd",
                                           "open_by_handle_at",
                                           "name_to_handle_at",
                                           "lookup_dcookie",
                                           "fanotify_init",
                                           "vhangup",
                                           "io_uring_setup",
                                           "io_uring_enter",
                                           "io_uring_register",
                                           "personality"};

std::string Errno(int err) { return std::strerror(err); }

// The seccomp program as BPF, built once with libseccomp and installed by each child with a
// plain prctl (libseccomp allocates, which a forked child of a threaded process must not).
Result<std::vector<sock_filter>> BuildSeccompProgram() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return Internal("seccomp_init failed");
  std::unique_ptr<void, void (*)(void*)> guard(ctx, [](void* c) { seccomp_release(c); });
  // The child sets no_new_privs itself, before Landlock, which needs it too.
  seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
  for (const char* name : kDeniedSyscalls) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0); rc != 0) {
      return Internal(fmt::format("seccomp_rule_add({}): {}", name, Errno(-rc)));
    }
  }
  int fd = ::memfd_create("wisp-seccomp", MFD_CLOEXEC);
  if (fd < 0) return Internal("memfd_create: " + Errno(errno));
  std::string bytes;
  if (int rc = seccomp_export_bpf(ctx, fd); rc != 0) {
    ::close(fd);
    return Internal("seccomp_export_bpf: " + Errno(-rc));
  }
  ::lseek(fd, 0, SEEK_SET);
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) bytes.append(buf, n);
  ::close(fd);
  if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0) {
    return Internal("seccomp_export_bpf gave no program");
  }
  std::vector<sock_filter> program(bytes.size() / sizeof(sock_filter));
  std::memcpy(program.data(), bytes.data(), bytes.size());
  return program;
}

// A Landlock ruleset that lets the process write only below `writable_dir` (and to /dev/null),
// or -1 when the kernel has no Landlock (then file permissions alone confine writes).
int MakeLandlockRuleset(const std::string& writable_dir) {
  long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 1) return -1;
  std::uint64_t write_rights = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                               LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
                               LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
                               LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
                               LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;
  if (abi >= 2) write_rights |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) write_rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
  landlock_ruleset_attr attr{};
  attr.handled_access_fs = write_rights;
  int ruleset = static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0));
  if (ruleset < 0) return -1;
  auto allow = [&](const char* path, std::uint64_t rights) {
    int fd = ::open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return false;
    landlock_path_beneath_attr rule{};
    rule.allowed_access = rights;
    rule.parent_fd = fd;
    bool ok = ::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) == 0;
    ::close(fd);
    return ok;
  };
  std::uint64_t file_rights = LANDLOCK_ACCESS_FS_WRITE_FILE;
  if (abi >= 3) file_rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
  if (!allow(writable_dir.c_str(), write_rights)) {
    ::close(ruleset);
    return -1;
  }
  allow("/dev/null", file_rights);
  ::fcntl(ruleset, F_SETFD, FD_CLOEXEC);
  return ruleset;
}

// Hands out per-instance uids; shared by the runtime and its instances. A uid is also claimed
// with an flock on a file in /run/lock (or the temp dir), so that two wispd on one host never
// share one: the node kills every process of an instance's uid when the instance goes.
class UidPool {
 public:
  UidPool(std::uint32_t base, std::uint32_t count)
      : base_(base), used_(count, -1), next_(static_cast<std::size_t>(::getpid()) % count) {
    std::error_code ec;
    lock_dir_ = fs::is_directory("/run/lock", ec) ? "/run/lock/wisp-uids"
                                                  : (fs::temp_directory_path(ec) / "wisp-uids");
    ::mkdir(lock_dir_.c_str(), 0700);
  }

  // Round-robin, so a uid whose killed processes are still being reaped is not reused at once.
  std::optional<std::uint32_t> Acquire() {
    std::lock_guard lock(mu_);
    for (std::size_t i = 0; i < used_.size(); ++i) {
      std::size_t slot = (next_ + i) % used_.size();
      if (used_[slot] >= 0) continue;
      const std::uint32_t uid = base_ + static_cast<std::uint32_t>(slot);
      const std::string path = fmt::format("{}/{}", lock_dir_, uid);
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0) continue;
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {  // another node has it
        ::close(fd);
        continue;
      }
      used_[slot] = fd;
      next_ = slot + 1;
      return uid;
    }
    return std::nullopt;
  }
  void Release(std::uint32_t uid) {
    std::lock_guard lock(mu_);
    int& fd = used_[uid - base_];
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

 private:
  std::mutex mu_;
  std::uint32_t base_;
  std::vector<int> used_;  // the lock file's fd of a slot in use, else -1
  std::size_t next_;
  std::string lock_dir_;
};

// One pool per uid range for the whole node: every deploy makes its own Runtime, and two
// instances must never share a uid.
std::shared_ptr<UidPool> SharedUidPool(std::uint32_t base, std::uint32_t count) {
  static std::mutex mu;
  static std::map<std::pair<std::uint32_t, std::uint32_t>, std::shared_ptr<UidPool>> pools;
  std::lock_guard lock(mu);
  auto& pool = pools[{base, count}];
  if (!pool) pool = std::make_shared<UidPool>(base, count);
  return pool;
}

struct Shared {
  ProcessRuntimeOptions options;
  Result<std::vector<sock_filter>> seccomp = Internal("not built");
  std::shared_ptr<UidPool> uids;  // null: instances run as wispd's user
};

// Sends SIGKILL to every process of `uid` (all that a process with that uid may signal), from
// a short-lived child that takes the uid: this also reaches processes that left the group.
void KillEverythingOf(std::uint32_t uid) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresgid(uid, uid, uid) == 0 && ::setresuid(uid, uid, uid) == 0) ::kill(-1, SIGKILL);
    ::_exit(0);
  }
  if (pid > 0) {
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

std::string DescribeExit(int wait_status) {
  if (WIFEXITED(wait_status)) return fmt::format("exited with status {}", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    const char* name = ::sigabbrev_np(WTERMSIG(wait_status));
    return name ? fmt::format("was killed by signal SIG{}", name)
                : fmt::format("was killed by signal {}", WTERMSIG(wait_status));
  }
  return "stopped";
}

std::string ResolveCommand(const std::string& name, const std::string& code_dir) {
  if (name.find('/') != std::string::npos) {
    return name.front() == '/' ? name : (fs::path(code_dir) / name).lexically_normal().string();
  }
  std::string_view dirs = kSearchPath;
  while (!dirs.empty()) {
    std::size_t colon = dirs.find(':');
    std::string candidate = std::string(dirs.substr(0, colon)) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    dirs = colon == std::string_view::npos ? std::string_view() : dirs.substr(colon + 1);
  }
  return {};
}

// Copies the function directory (regular files and directories only) into `to`, readable by
// every user and writable by none but its owner.
Status CopyFunction(const fs::path& from, const fs::path& to, const std::string& executable) {
  std::error_code ec;
  fs::create_directory(to, ec);
  if (ec) return IoError(fmt::format("cannot make {}: {}", to.string(), ec.message()));
  fs::permissions(to, fs::perms(0755), ec);
  for (auto it = fs::recursive_directory_iterator(from, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::path relative = fs::relative(it->path(), from, ec);
    if (ec) break;
    const fs::path target = to / relative;
    if (it->is_symlink()) continue;
    if (it->is_directory()) {
      fs::create_directory(target, ec);
      if (!ec) fs::permissions(target, fs::perms(0755), ec);
    } else if (it->is_regular_file()) {
      fs::copy_file(it->path(), target, ec);
      if (!ec) {
        bool exec = relative.string() == executable;
        fs::permissions(target, fs::perms(exec ? 0755 : 0644), ec);
      }
    }
    if (ec) break;
  }
  if (ec)
    return IoError(fmt::format("cannot copy the function to {}: {}", to.string(), ec.message()));
  return Status::Ok();
}

// Instance directories live in $TMPDIR/wisp-node-<pid>/, one per node process. A node that
// exits without destroying its warm instances (their processes die with it, PDEATHSIG) leaves
// its directory behind; the next node removes those of nodes no longer running.
std::string NodeDirectory() {
  static const std::string dir = [] {
    std::error_code ec;
    fs::path temp = fs::temp_directory_path(ec);
    if (ec) temp = "/tmp";
    try {  // best effort: a directory that cannot be read or removed stays
      for (const auto& entry : fs::directory_iterator(temp, ec)) {
        const std::string name = entry.path().filename().string();
        if (!name.starts_with("wisp-node-")) continue;
        long pid = std::strtol(name.c_str() + 10, nullptr, 10);
        if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
          std::error_code ignored;
          fs::remove_all(entry.path(), ignored);
        }
      }
    } catch (const fs::filesystem_error&) {
    }
    const std::string mine = (temp / fmt::format("wisp-node-{}", ::getpid())).string();
    ::mkdir(mine.c_str(), 0711);
    ::chmod(mine.c_str(), 0711);
    return mine;
  }();
  return dir;
}

class ProcessInstance final : public Instance {
 public:
  ProcessInstance(std::shared_ptr<Shared> shared, FunctionSpecPtr spec)
      : shared_(std::move(shared)), spec_(std::move(spec)) {}

  ~ProcessInstance() override {
    *alive_ = false;  // handlers of waits cancelled below must not touch this
    Terminate();
    if (!root_.empty()) {
      std::error_code ec;
      fs::remove_all(root_, ec);
    }
    if (uid_) shared_->uids->Release(*uid_);
  }

  // Starts the process and waits (blocking) until it is ready.
  Status Start(const std::string& function_dir) {
    RETURN_IF_ERROR(Prepare(function_dir));
    const auto startup = StartupTime();
    return CheckReady(ReadFrame(Clock::now() + startup, nullptr), startup);
  }

  // Starts the process and waits on `io` for it to be ready; `done` gets the outcome (the
  // instance is terminated when it is not ok). Returns at once.
  void StartAsync(const std::string& function_dir, asio::io_context& io,
                  std::function<void(Status)> done) {
    if (Status prepared = Prepare(function_dir); !prepared.ok()) return done(prepared);
    start_done_ = std::move(done);
    BeginWait(io, WaitMode::kStart, Clock::now() + StartupTime(), nullptr);
  }

  // Makes the private directory and spawns the process; does not wait for it.
  Status Prepare(const std::string& function_dir) {
    if (shared_->uids) {
      uid_ = shared_->uids->Acquire();
      if (!uid_) return ResourceExhausted("no free uid for another process instance");
    }
    std::error_code ec;
    const std::string node_dir = NodeDirectory();
    std::string pattern = node_dir + "/" + spec_->name + "-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      return IoError(
          fmt::format("cannot make a private directory in {}: {}", node_dir, Errno(errno)));
    }
    root_ = pattern;
    ::chmod(root_.c_str(), 0711);
    const std::string code_dir = root_ + "/code";
    const std::string tmp_dir = root_ + "/tmp";

    // What to run.
    std::vector<std::string> argv;
    std::string executable;  // relative to the code dir, when it is the handler itself
    const std::string& handler = spec_->handler_file;
    if (!spec_->command.empty()) {
      argv = spec_->command;
    } else if (handler.size() > 3 && handler.ends_with(".py")) {
      const std::string helper = root_ + "/sdk/wisp_handler.py";
      fs::create_directory(root_ + "/sdk", ec);
      fs::permissions(root_ + "/sdk", fs::perms(0755), ec);
      if (FILE* f = std::fopen(helper.c_str(), "wbe")) {
        std::fwrite(kPythonHelper.data(), 1, kPythonHelper.size(), f);
        std::fclose(f);
      }
      ::chmod(helper.c_str(), 0644);
      argv = {"python3", helper, handler, spec_->handler_entry};
    } else {
      executable = handler;
      argv = {"./" + handler};
    }
    RETURN_IF_ERROR(CopyFunction(function_dir, code_dir, executable));
    if (::mkdir(tmp_dir.c_str(), 0700) != 0) return IoError("cannot make " + tmp_dir);
    if (uid_ && ::chown(tmp_dir.c_str(), *uid_, *uid_) != 0) {
      return IoError(fmt::format("cannot give {} to uid {}: {}", tmp_dir, *uid_, Errno(errno)));
    }
    const std::string path = ResolveCommand(argv[0], code_dir);
    if (path.empty() || ::access(path.c_str(), F_OK) != 0) {
      return InvalidArgument(
          fmt::format("command {} not found (looked in {} and the function "
                      "directory)",
                      QuoteUntrusted(argv[0]), kSearchPath));
    }

    std::vector<std::string> env = {"PATH=" + std::string(kSearchPath),
                                    "HOME=" + tmp_dir,
                                    "TMPDIR=" + tmp_dir,
                                    "LANG=C.UTF-8",
                                    "PYTHONDONTWRITEBYTECODE=1",
                                    "PYTHONUNBUFFERED=1",
                                    "WISP_FUNCTION=" + spec_->name};
    for (const auto& [name, value] : spec_->environment) env.push_back(name + "=" + value);
    return Spawn(path, argv, env, code_dir, tmp_dir);
  }

  Result<Reply> Invoke(const Event& event, HostApi& host) override {
    if (!reusable_) return FunctionError("function process is gone: " + gone_reason_);
    const auto deadline = Clock::now() + spec_->limits.timeout;
    // Bytes nobody asked for (e.g. from a child the handler forked) put the stream out of step.
    if (decoder_.buffered() > 0 || Readable(sock_)) {
      char byte;
      if (::recv(sock_, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0) return Crashed();  // died idle
      return Fail(FunctionError("function process wrote outside a call (instance replaced)"));
    }
    if (Status sent = Send(InvokeFrame(event)); !sent.ok()) return sent;

    while (true) {
      Result<Frame> frame = ReadFrame(deadline, &host);
      if (!frame.ok()) return frame.status();
      if (frame->type == FrameType::kCall) {
        Frame result = HostCall(*frame, host);
        if (Status sent = Send(result); !sent.ok()) return sent;
        continue;
      }
      return CallOutcome(*frame);
    }
  }

  // The asynchronous call: writes the request (a non-blocking send; it waits only when the
  // process stops reading), then reads frames on `io` until the reply, the timeout or a crash.
  void InvokeAsync(const Event& event, HostApi& host, asio::io_context& io,
                   InvokeDone done) override {
    if (!reusable_) return done(FunctionError("function process is gone: " + gone_reason_));
    if (decoder_.buffered() > 0 || Readable(sock_)) {
      char byte;
      if (::recv(sock_, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0) return done(Crashed());
      return done(Fail(FunctionError("function process wrote outside a call (instance replaced)")));
    }
    const auto deadline = Clock::now() + spec_->limits.timeout;
    if (Status sent = Send(InvokeFrame(event)); !sent.ok()) return done(sent);
    invoke_done_ = std::move(done);
    BeginWait(io, WaitMode::kInvoke, deadline, &host);
  }

  bool Reusable() const override { return reusable_; }

  std::uint64_t MemoryBytes() const override {
    if (pid_ <= 0) return 0;
    std::string path = fmt::format("/proc/{}/statm", pid_);
    FILE* f = std::fopen(path.c_str(), "re");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int n = std::fscanf(f, "%lu %lu", &size, &resident);
    std::fclose(f);
    return n == 2 ? static_cast<std::uint64_t>(resident) * ::sysconf(_SC_PAGESIZE) : 0;
  }

 private:
  Frame InvokeFrame(const Event& event) const {
    Frame request;
    request.type = FrameType::kInvoke;
    request.Add(Tag::kTrigger, TriggerKindName(event.trigger));
    request.Add(Tag::kId, fmt::format("{:x}", event.id));
    request.Add(
        Tag::kTimestamp,
        fmt::format("{:.3f}",
                    std::chrono::duration<double>(event.timestamp.time_since_epoch()).count()));
    if (!event.method.empty()) request.Add(Tag::kMethod, event.method);
    if (!event.path.empty()) request.Add(Tag::kPath, event.path);
    if (!event.query.empty()) request.Add(Tag::kQuery, event.query);
    if (!event.topic.empty()) request.Add(Tag::kTopic, event.topic);
    if (!event.content_type.empty()) request.Add(Tag::kContentType, event.content_type);
    for (const HeaderView& h : event.headers) {
      request.Add(Tag::kHeaderName, h.name);
      request.Add(Tag::kHeaderValue, h.value);
    }
    request.Add(Tag::kBody, event.body);
    return request;
  }

  // What a frame other than a host call means at the end of a call.
  Result<Reply> CallOutcome(const Frame& frame) {
    switch (frame.type) {
      case FrameType::kReply:
        return ToReply(frame);
      case FrameType::kError: {
        std::string message = Truncate(frame.Get(Tag::kMessage, "handler failed"));
        if (frame.Get(Tag::kKind) == "memory") {
          return Fail(
              ResourceExhausted(fmt::format("function exceeded its memory limit of {} ({})",
                                            FormatByteSize(spec_->limits.memory_bytes), message)));
        }
        return FunctionError(message);
      }
      default:
        return Fail(FunctionError(
            fmt::format("function process broke the protocol: frame type {} during a call",
                        static_cast<int>(frame.type))));
    }
  }

  std::chrono::milliseconds StartupTime() const {
    return std::max(spec_->limits.timeout, kMinStartupTime);
  }

  // The ready frame's verdict; the process is killed when it is not ready.
  Status CheckReady(Result<Frame> ready, std::chrono::milliseconds startup) {
    auto not_ready = [&](std::string why) {
      Terminate();
      return InvalidArgument(std::move(why));
    };
    if (!ready.ok()) {
      if (ready.status().code() == StatusCode::kDeadlineExceeded) {
        return not_ready(fmt::format("function process did not say it was ready within {}",
                                     FormatDuration(startup)));
      }
      return not_ready(ready.status().message());
    }
    if (ready->type == FrameType::kError) {
      return not_ready(Truncate(ready->Get(Tag::kMessage, "the handler did not load")));
    }
    if (ready->type != FrameType::kReady) {
      return not_ready("function process broke the protocol: its first frame is not 'ready'");
    }
    return Status::Ok();
  }

  // --- Asynchronous waits: one at a time (a start or a call), on the shard's io_context. Each
  // wait has a generation; handlers of an earlier wait (cancelled) see another and do nothing.
  enum class WaitMode { kNone, kStart, kInvoke };

  void BeginWait(asio::io_context& io, WaitMode mode, Clock::time_point deadline, HostApi* host) {
    if (!sock_desc_) sock_desc_.emplace(io, sock_);
    if (!err_desc_ && stderr_ >= 0) err_desc_.emplace(io, stderr_);
    if (!timer_) timer_.emplace(io);
    mode_ = mode;
    wait_host_ = host;
    const std::uint64_t generation = ++generation_;
    timer_->expires_at(deadline);
    timer_->async_wait([this, alive = alive_, generation](boost::system::error_code ec) {
      if (ec || !*alive || generation != generation_) return;
      WaitFailed(Fail(DeadlineExceeded(
          fmt::format("function exceeded its {} timeout", FormatDuration(spec_->limits.timeout)))));
    });
    ReadStderr(generation);
    DeliverFrames(generation);
  }

  // Ends the current wait: cancels its reads and timer. The completion is called after this.
  void EndWait() {
    ++generation_;
    mode_ = WaitMode::kNone;
    wait_host_ = nullptr;
    if (timer_) timer_->cancel();
    boost::system::error_code ignored;
    if (sock_desc_) sock_desc_->cancel(ignored);
    if (err_desc_) err_desc_->cancel(ignored);
  }

  void DeliverFrames(std::uint64_t generation) {
    // A completion may destroy this instance (the pool drops it): check before every step.
    const std::shared_ptr<bool> alive = alive_;
    while (*alive && generation == generation_) {
      Result<std::optional<Frame>> next = decoder_.Next();
      if (!next.ok()) {
        return WaitFailed(
            Fail(FunctionError("function process broke the protocol: " + next.status().message())));
      }
      if (!next->has_value()) return ReadSocket(generation);
      OnFrame(std::move(**next));
    }
  }

  void ReadSocket(std::uint64_t generation) {
    if (!sock_desc_) return WaitFailed(Crashed());
    sock_desc_->async_read_some(
        asio::buffer(read_buffer_),
        [this, alive = alive_, generation](boost::system::error_code ec, std::size_t n) {
          if (!*alive || generation != generation_ || ec == asio::error::operation_aborted) return;
          if (ec || n == 0) return WaitFailed(Crashed());
          decoder_.Feed(std::string_view(read_buffer_.data(), n));
          DeliverFrames(generation);
        });
  }

  void ReadStderr(std::uint64_t generation) {
    if (!err_desc_) return;
    err_desc_->async_read_some(
        asio::buffer(err_buffer_),
        [this, alive = alive_, generation](boost::system::error_code ec, std::size_t n) {
          if (!*alive || generation != generation_ || ec == asio::error::operation_aborted) return;
          if (ec || n == 0) {  // the process closed stderr (it is exiting)
            err_desc_->release();
            err_desc_.reset();
            ::close(stderr_);
            stderr_ = -1;
            return;
          }
          AppendStderr(std::string_view(err_buffer_.data(), n), wait_host_);
          ReadStderr(generation);
        });
  }

  void OnFrame(Frame frame) {
    if (mode_ == WaitMode::kStart) {
      return CompleteStart(CheckReady(std::move(frame), StartupTime()));
    }
    if (frame.type == FrameType::kCall) {
      Frame result = HostCall(frame, *wait_host_);
      if (Status sent = Send(result); !sent.ok()) return CompleteInvoke(sent);
      return;  // DeliverFrames goes on reading
    }
    CompleteInvoke(CallOutcome(frame));
  }

  void WaitFailed(Status status) {
    if (mode_ == WaitMode::kStart)
      return CompleteStart(CheckReady(std::move(status), StartupTime()));
    if (mode_ == WaitMode::kInvoke) return CompleteInvoke(std::move(status));
  }

  void CompleteStart(Status status) {
    auto done = std::move(start_done_);
    start_done_ = nullptr;
    EndWait();
    if (done) done(std::move(status));
  }

  void CompleteInvoke(Result<Reply> reply) {
    auto done = std::move(invoke_done_);
    invoke_done_ = nullptr;
    EndWait();
    if (done) done(std::move(reply));
  }

  Status Spawn(const std::string& path, const std::vector<std::string>& args,
               const std::vector<std::string>& env, const std::string& code_dir,
               const std::string& tmp_dir) {
    if (!shared_->seccomp.ok()) return shared_->seccomp.status();
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      return IoError("socketpair: " + Errno(errno));
    }
    int err_pipe[2];
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
      ::close(sv[0]), ::close(sv[1]);
      return IoError("pipe: " + Errno(errno));
    }
    sock_ = sv[0];
    stderr_ = err_pipe[0];
    ::fcntl(stderr_, F_SETFL, O_NONBLOCK);
    ::fcntl(sock_, F_SETFL, O_NONBLOCK);

    std::vector<char*> argv, envp;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    const std::vector<sock_filter>& filter = *shared_->seccomp;
    sock_fprog program{static_cast<unsigned short>(filter.size()),
                       const_cast<sock_filter*>(filter.data())};
    const int landlock = MakeLandlockRuleset(tmp_dir);
    const bool as_root = ::geteuid() == 0;
    const ProcessRuntimeOptions& o = shared_->options;
    const std::uint64_t memory = spec_->limits.memory_bytes;
    const pid_t parent = ::getpid();
    const int child_sock = sv[1];
    const int child_err = err_pipe[1];
    const std::optional<std::uint32_t> uid = uid_;

    pid_t pid = ::fork();
    if (pid == 0) {
      // The child: plain system calls only, until execve.
      auto die = [&](const char* what) {
        const char* e = std::strerror(errno);  // stderr is fd 2 by the time this can run
        (void)!::write(2, "wisp: cannot start the function: ", 34);
        (void)!::write(2, what, std::strlen(what));
        (void)!::write(2, ": ", 2);
        (void)!::write(2, e, std::strlen(e));
        (void)!::write(2, "\n", 1);
        ::_exit(127);
      };
      ::setsid();
      if (::dup2(child_sock, 0) < 0 || ::dup2(child_sock, 1) < 0 || ::dup2(child_err, 2) < 0) {
        ::_exit(127);
      }
      auto limit = [&](int resource, rlim_t soft, rlim_t hard, const char* what) {
        rlimit rl{soft, hard};
        if (::setrlimit(resource, &rl) != 0) die(what);
      };
      limit(RLIMIT_AS, memory, memory, "RLIMIT_AS");
      limit(RLIMIT_CPU, o.max_cpu_seconds, o.max_cpu_seconds + 5, "RLIMIT_CPU");
      limit(RLIMIT_NOFILE, o.max_open_files, o.max_open_files, "RLIMIT_NOFILE");
      limit(RLIMIT_CORE, 0, 0, "RLIMIT_CORE");
      if (uid) limit(RLIMIT_NPROC, o.max_processes, o.max_processes, "RLIMIT_NPROC");
      if (::chdir(code_dir.c_str()) != 0) die("chdir");
      if (uid) {
        if (as_root && ::setgroups(0, nullptr) != 0) die("setgroups");
        if (::setresgid(*uid, *uid, *uid) != 0) die("setresgid");
        if (::setresuid(*uid, *uid, *uid) != 0) die("setresuid");
      }
      // Set after the uid change, which clears it; then make sure wispd did not die before.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs");
      if (landlock >= 0 && ::syscall(SYS_landlock_restrict_self, landlock, 0) != 0) {
        die("landlock");
      }
      ::close_range(3, ~0U, 0);
      if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) die("seccomp");
      ::execve(path.c_str(), argv.data(), envp.data());
      die(path.c_str());
    }
    const int fork_errno = errno;
    ::close(child_sock);
    ::close(child_err);
    if (landlock >= 0) ::close(landlock);
    if (pid < 0) return IoError("fork: " + Errno(fork_errno));
    pid_ = pid;
    return Status::Ok();
  }

  static bool Readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP)) != 0;
  }

  static std::string Truncate(std::string_view text) {
    return std::string(text.substr(0, kMaxErrorMessage));
  }

  // Marks the instance gone (killing the process) and returns `status`.
  Status Fail(Status status) {
    gone_reason_ = status.ToString();
    Terminate();
    return status;
  }

  Status Send(const Frame& frame) {
    std::string bytes;
    RETURN_IF_ERROR(process::EncodeFrame(frame, &bytes));
    std::size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::send(sock_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // The process is not reading; wait, but never past the call's timeout.
        pollfd p{sock_, POLLOUT, 0};
        int ms = static_cast<int>(spec_->limits.timeout.count());
        if (::poll(&p, 1, ms) > 0) continue;
        return Fail(DeadlineExceeded(fmt::format("function exceeded its {} timeout",
                                                 FormatDuration(spec_->limits.timeout))));
      }
      return Crashed();
    }
    return Status::Ok();
  }

  // Drains stderr; complete lines go to `host`'s log when there is one.
  void DrainStderr(HostApi* host) {
    char buf[4096];
    while (true) {
      ssize_t n = ::read(stderr_, buf, sizeof buf);
      if (n <= 0) break;
      AppendStderr(std::string_view(buf, static_cast<std::size_t>(n)), host);
    }
  }

  void AppendStderr(std::string_view bytes, HostApi* host) {
    stderr_line_.append(bytes);
    tail_.append(bytes);
    if (tail_.size() > 2 * kStderrTail) tail_.erase(0, tail_.size() - kStderrTail);
    std::size_t nl;
    while ((nl = stderr_line_.find('\n')) != std::string::npos ||
           stderr_line_.size() > kMaxLogLine) {
      std::size_t end = nl == std::string::npos ? kMaxLogLine : nl;
      if (host) host->Log(LogLevel::kInfo, std::string_view(stderr_line_).substr(0, end));
      stderr_line_.erase(0, std::min(stderr_line_.size(), end + 1));
    }
  }

  std::string StderrTail() const {
    std::string_view t = tail_;
    if (t.size() > kStderrTail) t = t.substr(t.size() - kStderrTail);
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.remove_suffix(1);
    return std::string(t);
  }

  // The next frame from the process, or why there is none (timeout, crash, garbage).
  Result<Frame> ReadFrame(Clock::time_point deadline, HostApi* host) {
    while (true) {
      Result<std::optional<Frame>> next = decoder_.Next();
      if (!next.ok()) {
        return Fail(
            FunctionError("function process broke the protocol: " + next.status().message()));
      }
      if (next->has_value()) return std::move(**next);
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return Fail(DeadlineExceeded(fmt::format("function exceeded its {} timeout",
                                                 FormatDuration(spec_->limits.timeout))));
      }
      pollfd fds[2] = {{sock_, POLLIN, 0}, {stderr_, POLLIN, 0}};
      int n = ::poll(fds, stderr_ >= 0 ? 2 : 1, static_cast<int>(left.count()) + 1);
      if (n < 0 && errno != EINTR) return Fail(Internal("poll: " + Errno(errno)));
      if (n <= 0) continue;
      if (fds[1].revents != 0) {
        DrainStderr(host);
        if (fds[1].revents & (POLLHUP | POLLERR)) {
          if (err_desc_) err_desc_->release(), err_desc_.reset();  // it must not keep the fd
          ::close(stderr_);
          stderr_ = -1;
        }
      }
      if (fds[0].revents != 0) {
        char buf[65536];
        ssize_t got = ::recv(sock_, buf, sizeof buf, 0);
        if (got > 0) {
          decoder_.Feed(std::string_view(buf, got));
        } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
          return Crashed();
        }
      }
    }
  }

  // The process closed its end: find out how it ended and report it.
  Status Crashed() {
    int wait_status = 0;
    bool reaped = false;
    // It normally exits right after closing; give it a moment before killing it.
    for (int i = 0; i < 200 && !reaped; ++i) {
      pid_t r = ::waitpid(pid_, &wait_status, WNOHANG);
      if (r == pid_)
        reaped = true;
      else if (r < 0 && errno != EINTR)
        break;
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (reaped) pid_ = -1;
    if (stderr_ >= 0) DrainStderr(nullptr);
    std::string how = reaped ? DescribeExit(wait_status) : "closed its output";
    std::string tail = StderrTail();
    std::string message =
        fmt::format("function process {}{}{}", how, tail.empty() ? "" : ": ", Truncate(tail));
    if (reaped && WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGXCPU) {
      return Fail(ResourceExhausted(message + " (its CPU time limit)"));
    }
    if (reaped && WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL) {
      return Fail(ResourceExhausted(message + " (out of memory or CPU time)"));
    }
    return Fail(FunctionError(message));
  }

  Frame HostCall(const Frame& call, HostApi& host) {
    Frame result;
    result.type = FrameType::kResult;
    auto error = [&](const Status& s) {
      result.Add(Tag::kKind, s.kind());
      result.Add(Tag::kMessage, s.message());
      return result;
    };
    auto integer = [](std::string_view text, std::int64_t* out) {
      auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
      return ec == std::errc() && p == text.data() + text.size();
    };
    Ttl ttl;
    if (const std::string* t = call.Find(Tag::kTtlMs)) {
      std::int64_t ms = 0;
      if (!integer(*t, &ms) || ms <= 0) return error(InvalidArgument("ttl must be positive"));
      ttl = std::chrono::milliseconds(ms);
    }
    const std::string_view op = call.Get(Tag::kOp);
    const std::string_view key = call.Get(Tag::kKey);
    StateStore& state = host.State();
    if (op == "state.get") {
      auto value = state.Get(host.Namespace(), key);
      if (!value.ok()) return error(value.status());
      if (*value) result.Add(Tag::kValue, **value);
    } else if (op == "state.put") {
      if (Status s = state.Put(host.Namespace(), key, call.Get(Tag::kValue), ttl); !s.ok()) {
        return error(s);
      }
    } else if (op == "state.incr") {
      std::int64_t delta = 1;
      if (const std::string* d = call.Find(Tag::kDelta); d && !integer(*d, &delta)) {
        return error(InvalidArgument("delta must be an integer"));
      }
      auto value = state.Incr(host.Namespace(), key, delta, ttl);
      if (!value.ok()) return error(value.status());
      result.Add(Tag::kValue, std::to_string(*value));
    } else if (op == "state.delete") {
      auto removed = state.Delete(host.Namespace(), key);
      if (!removed.ok()) return error(removed.status());
      result.Add(Tag::kValue, *removed ? "1" : "0");
    } else if (op == "log") {
      const std::string_view level = call.Get(Tag::kLevel, "info");
      LogLevel l = level == "debug"   ? LogLevel::kDebug
                   : level == "warn"  ? LogLevel::kWarn
                   : level == "error" ? LogLevel::kError
                                      : LogLevel::kInfo;
      std::string_view message = call.Get(Tag::kMessage);
      host.Log(l, message.substr(0, kMaxLogLine));
    } else if (op == "emit") {
      EmitOptions options;
      std::int64_t qos = 0;
      if (const std::string* q = call.Find(Tag::kQos);
          q && (!integer(*q, &qos) || qos < 0 || qos > 2)) {
        return error(InvalidArgument("qos must be 0, 1 or 2"));
      }
      options.qos = static_cast<int>(qos);
      options.retain = call.Get(Tag::kRetain) == "1";
      if (Status s = host.Emit(call.Get(Tag::kTopic), call.Get(Tag::kBody), options); !s.ok()) {
        return error(s);
      }
    } else {
      return error(InvalidArgument(fmt::format("unknown host call {}", QuoteUntrusted(op))));
    }
    return result;
  }

  Result<Reply> ToReply(const Frame& frame) {
    Reply reply;
    std::string_view status = frame.Get(Tag::kStatus, "200");
    int code = 0;
    auto [p, ec] = std::from_chars(status.data(), status.data() + status.size(), code);
    if (ec != std::errc() || p != status.data() + status.size() || code < 200 || code > 599) {
      return FunctionError(
          fmt::format("handler returned invalid status {} (use 200-599)", QuoteUntrusted(status)));
    }
    reply.status = code;
    const std::string* name = nullptr;
    for (const auto& field : frame.fields) {
      if (field.tag == Tag::kHeaderName) {
        name = &field.value;
      } else if (field.tag == Tag::kHeaderValue && name) {
        if (!ValidHeader(*name, field.value)) {
          return FunctionError(
              fmt::format("handler returned an invalid header {}", QuoteUntrusted(*name)));
        }
        reply.headers.emplace_back(*name, field.value);
        name = nullptr;
      } else if (field.tag == Tag::kContentType) {
        if (!ValidHeader("content-type", field.value)) {
          return FunctionError("handler returned an invalid content type");
        }
        reply.content_type = field.value;
      } else if (field.tag == Tag::kBody) {
        reply.body = field.value;
      }
    }
    return reply;
  }

  static bool ValidHeader(std::string_view name, std::string_view value) {
    if (name.empty() || name.size() > 256 || value.size() > 8192) return false;
    for (unsigned char c : name) {
      if (!(std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c)) || c == 0) return false;
    }
    return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
  }

  // Kills the process and everything it started, and reaps it. Idempotent.
  void Terminate() {
    reusable_ = false;
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
    }
    if (uid_) KillEverythingOf(*uid_);
    if (pid_ > 0) {
      while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
      }
      pid_ = -1;
    }
    // The descriptors do not own the fds: release them (cancelling their reads) before closing.
    if (timer_) timer_->cancel();
    if (sock_desc_) sock_desc_->release(), sock_desc_.reset();
    if (err_desc_) err_desc_->release(), err_desc_.reset();
    if (sock_ >= 0) ::close(sock_), sock_ = -1;
    if (stderr_ >= 0) ::close(stderr_), stderr_ = -1;
  }

  std::shared_ptr<Shared> shared_;
  FunctionSpecPtr spec_;
  std::optional<std::uint32_t> uid_;
  std::string root_;
  pid_t pid_ = -1;
  int sock_ = -1;
  int stderr_ = -1;
  bool reusable_ = true;
  std::string gone_reason_;
  process::FrameDecoder decoder_;
  std::string stderr_line_;
  std::string tail_;
  // Asynchronous mode (StartAsync, InvokeAsync); made on first use.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::optional<asio::posix::stream_descriptor> sock_desc_;
  std::optional<asio::posix::stream_descriptor> err_desc_;
  std::optional<asio::steady_timer> timer_;
  std::uint64_t generation_ = 0;
  WaitMode mode_ = WaitMode::kNone;
  HostApi* wait_host_ = nullptr;
  std::function<void(Status)> start_done_;
  InvokeDone invoke_done_;
  std::array<char, 65536> read_buffer_;
  std::array<char, 4096> err_buffer_;
};

class ProcessRuntime final : public Runtime {
 public:
  explicit ProcessRuntime(const ProcessRuntimeOptions& options)
      : shared_(std::make_shared<Shared>()) {
    shared_->options = options;
    shared_->seccomp = BuildSeccompProgram();
    if (::geteuid() == 0 && options.uid_base != 0 && options.uid_count > 0) {
      shared_->uids = SharedUidPool(options.uid_base, options.uid_count);
    }
  }

  Result<InstancePtr> CreateInstance(const FunctionSpecPtr& spec,
                                     const std::string& function_dir) override {
    auto instance = std::make_unique<ProcessInstance>(shared_, spec);
    RETURN_IF_ERROR(instance->Start(function_dir));
    return InstancePtr(std::move(instance));
  }

  void CreateInstanceAsync(const FunctionSpecPtr& spec, const std::string& function_dir,
                           asio::io_context& io, CreateDone done) override {
    // The instance owns the wait that completes it; it is handed over (or deleted) then.
    auto* instance = new ProcessInstance(shared_, spec);
    instance->StartAsync(function_dir, io, [instance, done = std::move(done)](Status status) {
      InstancePtr owned(instance);
      if (!status.ok()) return done(status);
      done(std::move(owned));
    });
  }

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace

RuntimePtr MakeProcessRuntime(const ProcessRuntimeOptions& options) {
  return std::make_shared<ProcessRuntime>(options);
}

void RegisterProcessRuntime() {
  RuntimeRegistry::Get().Register("process", [] { return MakeProcessRuntime(); });
}

}  // namespace wisp
