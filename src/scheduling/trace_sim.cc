#include "scheduling/trace_sim.h"

#include <algorithm>
#include <cmath>
#include <queue>
#include <tuple>

#include <fmt/format.h>

namespace wisp {
namespace {

// Order of events at the same instant: an invocation that ends frees its instance before an
// arrival looks for it, a pre-warm lands before an arrival, and an arrival at the very end of a
// keep-alive window is still warm.
enum class EventKind : int { kEnd = 0, kPrewarm = 1, kArrival = 2, kExpire = 3 };

struct Event {
  PolicyTimeMs at;
  EventKind kind;
  PolicyAppId app;
  uint64_t generation;      // kPrewarm / kExpire: void when the app's generation moved on
  PolicyTimeMs keep_alive;  // kPrewarm: how long to stay loaded
  size_t index;             // kArrival: which invocation

  bool operator>(const Event& other) const {
    return std::tie(at, kind, app) > std::tie(other.at, other.kind, other.app);
  }
};

struct AppRun {
  const SimApp* app = nullptr;
  std::vector<SimInvocation> busy_periods;
  bool loaded = false;
  bool busy = false;
  uint64_t generation = 0;
  PolicyTimeMs idle_loaded_since = -1;  // set while loaded and not busy
  PolicyTimeMs last_used = 0;
};

class Simulation {
 public:
  Simulation(const std::vector<SimApp>& apps, KeepAlivePolicy& policy, const SimOptions& options)
      : policy_(policy), options_(options), runs_(apps.size()) {
    result_.apps.resize(apps.size());
    for (size_t i = 0; i < apps.size(); ++i) {
      runs_[i].app = &apps[i];
      runs_[i].busy_periods = MergeOverlapping(apps[i].invocations);
      policy_.OnAppMemory(static_cast<PolicyAppId>(i), apps[i].memory_mb);
      for (const SimInvocation& inv : apps[i].invocations) result_.apps[i].invocations += inv.count;
      if (!runs_[i].busy_periods.empty()) {
        queue_.push({runs_[i].busy_periods[0].arrival_ms, EventKind::kArrival,
                     static_cast<PolicyAppId>(i), 0, 0, 0});
      }
    }
  }

  SimResult Run() {
    while (!queue_.empty()) {
      const Event event = queue_.top();
      queue_.pop();
      switch (event.kind) {
        case EventKind::kArrival:
          Arrive(event);
          break;
        case EventKind::kEnd:
          End(event);
          break;
        case EventKind::kPrewarm:
          Prewarm(event);
          break;
        case EventKind::kExpire:
          Expire(event);
          break;
      }
    }
    for (const SimAppResult& app : result_.apps) {
      result_.wasted_mb_minutes += app.wasted_mb_minutes;
      result_.invocations += app.invocations;
      result_.cold_starts += app.cold_starts;
      result_.dropped += app.dropped;
    }
    return std::move(result_);
  }

 private:
  void Arrive(const Event& event) {
    AppRun& run = runs_[event.app];
    const SimInvocation& inv = run.busy_periods[event.index];
    if (event.index + 1 < run.busy_periods.size()) {
      queue_.push({run.busy_periods[event.index + 1].arrival_ms, EventKind::kArrival, event.app, 0,
                   0, event.index + 1});
    }
    ++run.generation;  // cancels a pending pre-warm or expiry
    policy_.OnArrival(event.app, event.at);
    run.last_used = event.at;
    SimAppResult& stats = result_.apps[event.app];
    if (run.loaded) {
      StopIdle(run, event.app, event.at);
    } else if (MakeRoom(run.app->memory_mb, event.at)) {
      Load(run, event.app);
      stats.cold_starts += 1;
      if (event.index == 0) stats.first_cold = true;
    } else {
      stats.dropped += inv.count;
      ApplyWindow(run, event.app, event.at);
      return;
    }
    run.busy = true;
    queue_.push({event.at + inv.duration_ms, EventKind::kEnd, event.app, 0, 0, 0});
  }

  void End(const Event& event) {
    AppRun& run = runs_[event.app];
    run.busy = false;
    run.last_used = event.at;
    run.idle_loaded_since = event.at;
    ApplyWindow(run, event.app, event.at);
  }

  // The app just became idle (or its invocation was dropped): ask the policy what to do.
  void ApplyWindow(AppRun& run, PolicyAppId app, PolicyTimeMs now) {
    const WarmWindow window = policy_.OnIdle(app, now);
    ++run.generation;
    if (window.prewarm_delay_ms > 0) {
      if (run.loaded) Unload(run, app, now);
      queue_.push({now + window.prewarm_delay_ms, EventKind::kPrewarm, app, run.generation,
                   window.keep_alive_ms, 0});
    } else if (window.keep_alive_ms > 0) {
      if (run.loaded) {
        queue_.push({now + window.keep_alive_ms, EventKind::kExpire, app, run.generation, 0, 0});
      }
    } else if (run.loaded) {
      Unload(run, app, now);
    }
  }

  void Prewarm(const Event& event) {
    AppRun& run = runs_[event.app];
    if (event.generation != run.generation || run.loaded) return;
    if (!MakeRoom(run.app->memory_mb, event.at)) return;
    Load(run, event.app);
    run.idle_loaded_since = event.at;
    ++result_.prewarms;
    queue_.push({event.at + event.keep_alive, EventKind::kExpire, event.app, run.generation, 0, 0});
  }

  void Expire(const Event& event) {
    AppRun& run = runs_[event.app];
    if (event.generation != run.generation || !run.loaded || run.busy) return;
    Unload(run, event.app, event.at);
  }

  void Load(AppRun& run, PolicyAppId app) {
    run.loaded = true;
    used_mb_ += run.app->memory_mb;
  }

  void Unload(AppRun& run, PolicyAppId app, PolicyTimeMs now) {
    StopIdle(run, app, now);
    run.loaded = false;
    used_mb_ -= run.app->memory_mb;
  }

  // Ends an idle loaded stretch: its memory-time is wasted (up to the horizon).
  void StopIdle(AppRun& run, PolicyAppId app, PolicyTimeMs now) {
    if (run.idle_loaded_since < 0) return;
    PolicyTimeMs end = now;
    if (options_.horizon_ms > 0) end = std::min(end, options_.horizon_ms);
    if (end > run.idle_loaded_since) {
      result_.apps[app].wasted_mb_minutes += static_cast<double>(run.app->memory_mb) *
                                             static_cast<double>(end - run.idle_loaded_since) /
                                             static_cast<double>(kMsPerMinute);
    }
    run.idle_loaded_since = -1;
  }

  // Unloads idle instances (the policy's highest eviction priority first, then least recently
  // used) until `memory_mb` more fits under the cap. False when it cannot fit.
  bool MakeRoom(int64_t memory_mb, PolicyTimeMs now) {
    if (options_.memory_cap_mb <= 0) return true;
    if (memory_mb > options_.memory_cap_mb) return false;
    while (used_mb_ + memory_mb > options_.memory_cap_mb) {
      int victim = -1;
      double victim_priority = 0;
      for (size_t i = 0; i < runs_.size(); ++i) {
        const AppRun& run = runs_[i];
        if (!run.loaded || run.busy) continue;
        const double priority =
            policy_.EvictionPriority(static_cast<PolicyAppId>(i), now, run.app->memory_mb);
        if (victim < 0 || priority > victim_priority ||
            (priority == victim_priority && run.last_used < runs_[victim].last_used)) {
          victim = static_cast<int>(i);
          victim_priority = priority;
        }
      }
      if (victim < 0) return false;
      AppRun& run = runs_[victim];
      Unload(run, static_cast<PolicyAppId>(victim), now);
      ++run.generation;
      ++result_.evictions;
    }
    return true;
  }

  KeepAlivePolicy& policy_;
  SimOptions options_;
  std::vector<AppRun> runs_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> queue_;
  int64_t used_mb_ = 0;
  SimResult result_;
};

}  // namespace

std::vector<SimInvocation> MergeOverlapping(const std::vector<SimInvocation>& invocations) {
  std::vector<SimInvocation> merged;
  PolicyTimeMs busy_until = 0;
  for (const SimInvocation& inv : invocations) {
    if (!merged.empty() && inv.arrival_ms < busy_until) {
      busy_until = std::max(busy_until, inv.arrival_ms + inv.duration_ms);
      merged.back().duration_ms = busy_until - merged.back().arrival_ms;
      merged.back().count += inv.count;
      continue;
    }
    merged.push_back(inv);
    busy_until = inv.arrival_ms + inv.duration_ms;
  }
  return merged;
}

Result<SimResult> SimulatePolicy(const std::vector<SimApp>& apps, KeepAlivePolicy& policy,
                                 const SimOptions& options) {
  for (size_t i = 0; i < apps.size(); ++i) {
    PolicyTimeMs previous = 0;
    for (const SimInvocation& inv : apps[i].invocations) {
      if (inv.arrival_ms < previous || inv.duration_ms < 0 || inv.count < 1) {
        return InvalidArgument(fmt::format(
            "app {}: invocations must be sorted by arrival, with duration >= 0 and count >= 1 "
            "(arrival {} ms, duration {} ms, count {})",
            i, inv.arrival_ms, inv.duration_ms, inv.count));
      }
      previous = inv.arrival_ms;
    }
    if (apps[i].memory_mb < 0) return InvalidArgument(fmt::format("app {}: memory < 0", i));
  }
  return Simulation(apps, policy, options).Run();
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const size_t index = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return values[std::min(index, values.size() - 1)];
}

}  // namespace wisp
