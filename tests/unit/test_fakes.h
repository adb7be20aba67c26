// Fakes at the runtime's seams, for unit tests: an in-memory StateStore and a HostApi that
// records what a handler logged and emitted.
//
// Thread safety: none; a test uses them from one thread.
#pragma once

#include <charconv>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "wisp/runtime.h"
#include "wisp/state_store.h"
#include "wisp/status.h"

namespace wisp::testing {

// Keeps values in a map. TTLs are recorded (for assertions), not enforced: tests must not
// depend on the clock.
class FakeStateStore : public StateStore {
 public:
  struct Entry {
    std::string value;
    Ttl ttl;
  };

  // Every later call fails with `status` until ClearFailure().
  void FailWith(Status status) { failure_ = std::move(status); }
  void ClearFailure() { failure_ = Status::Ok(); }

  // The entry or null.
  const Entry* Find(std::string_view ns, std::string_view key) const {
    auto it = entries_.find({std::string(ns), std::string(key)});
    return it == entries_.end() ? nullptr : &it->second;
  }
  std::size_t size() const { return entries_.size(); }

  Result<std::optional<std::string>> Get(std::string_view ns, std::string_view key) override {
    if (!failure_.ok()) return failure_;
    const Entry* entry = Find(ns, key);
    if (entry == nullptr) return std::optional<std::string>();
    return std::optional<std::string>(entry->value);
  }

  Status Put(std::string_view ns, std::string_view key, std::string_view value,
             Ttl ttl = std::nullopt) override {
    if (!failure_.ok()) return failure_;
    entries_[{std::string(ns), std::string(key)}] = Entry{std::string(value), ttl};
    return Status::Ok();
  }

  Result<bool> Delete(std::string_view ns, std::string_view key) override {
    if (!failure_.ok()) return failure_;
    return entries_.erase({std::string(ns), std::string(key)}) > 0;
  }

  Result<std::int64_t> Incr(std::string_view ns, std::string_view key, std::int64_t delta = 1,
                            Ttl ttl = std::nullopt) override {
    if (!failure_.ok()) return failure_;
    Entry& entry = entries_[{std::string(ns), std::string(key)}];
    std::int64_t value = 0;
    if (!entry.value.empty()) {
      const char* end = entry.value.data() + entry.value.size();
      auto [ptr, ec] = std::from_chars(entry.value.data(), end, value);
      if (ec != std::errc() || ptr != end) {
        return InvalidArgument("value of '" + std::string(key) + "' is not an integer");
      }
    }
    value += delta;
    entry.value = std::to_string(value);
    entry.ttl = ttl;
    return value;
  }

  Status DropNamespace(std::string_view ns) override {
    if (!failure_.ok()) return failure_;
    for (auto it = entries_.begin(); it != entries_.end();) {
      it = it->first.first == ns ? entries_.erase(it) : std::next(it);
    }
    return Status::Ok();
  }

 private:
  std::map<std::pair<std::string, std::string>, Entry> entries_;
  Status failure_;
};

// A HostApi that records logs and emitted messages. Now() is fixed (settable) so tests never
// read the clock.
class RecordingHost : public HostApi {
 public:
  struct LogLine {
    LogLevel level;
    std::string message;
  };
  struct Emitted {
    std::string topic;
    std::string payload;
    EmitOptions options;
  };

  explicit RecordingHost(StateStore* store, std::string ns = "fn")
      : store_(store), namespace_(std::move(ns)) {}

  StateStore& State() override { return *store_; }
  std::string_view Namespace() const override { return namespace_; }
  void Log(LogLevel level, std::string_view message) override {
    logs.push_back({level, std::string(message)});
  }
  Status Emit(std::string_view topic, std::string_view payload,
              const EmitOptions& options) override {
    if (topic.empty() || topic.find_first_of("+#") != std::string_view::npos) {
      return InvalidArgument("invalid topic '" + std::string(topic) + "'");
    }
    emitted.push_back({std::string(topic), std::string(payload), options});
    return Status::Ok();
  }
  std::chrono::system_clock::time_point Now() const override { return now; }
  struct Posted {
    std::string url, body, content_type;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  // Allows URLs under http://allowed/; `post_result` stands for a full queue and the like.
  Status HttpPost(std::string_view url, std::string_view body,
                  const HttpPostOptions& options) override {
    if (!url.starts_with("http://allowed/")) {
      return PermissionDenied("'" + std::string(url) + "' is not allowed");
    }
    if (!post_result.ok()) return post_result;
    posted.push_back(
        {std::string(url), std::string(body), std::string(options.content_type), options.headers});
    return Status::Ok();
  }

  std::vector<LogLine> logs;
  std::vector<Posted> posted;
  Status post_result;
  std::vector<Emitted> emitted;
  std::chrono::system_clock::time_point now{};

 private:
  StateStore* store_;
  std::string namespace_;
};

}  // namespace wisp::testing
