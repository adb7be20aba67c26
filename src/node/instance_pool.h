// InstancePool: the lifecycle of one function's instances on one shard, and its wait queue.
//
// Bookkeeping only: the pool never creates, runs or destroys an instance itself. Every call
// returns the Actions the owner must carry out (start these instances, destroy those, resume
// these waiting calls), which keeps the state machine small and testable without a runtime.
//
// States and the only legal transitions (docs/lifecycle.md):
//   starting -> idle        the instance said it is ready
//   starting -> gone        it failed to start
//   starting -> draining    the function was redeployed or deleted while it started
//   idle     -> busy        a call was given to it
//   idle     -> gone        drained (redeploy/delete) while idle
//   busy     -> idle        its last call ended and it can be reused
//   busy     -> gone        a call left it unusable (crash, timeout, out of memory)
//   busy     -> draining    redeploy/delete while calls run: they finish first
//   draining -> gone        its last call ended (or it finished starting)
// An instance takes up to `max_concurrency` calls at once; it counts as busy while it has one.
//
// Queue: a call that finds no instance with a free slot waits in a FIFO of `queue_capacity`;
// one more instance is started for it when fewer are starting than the queue needs and the
// pool is below `max_instances`. A call that finds the queue full is refused with
// ResourceExhausted (the node answers 429 with Retry-After = RetryAfterSeconds()).
//
// Threads: a pool belongs to its shard's thread; nothing here is thread-safe.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "wisp/status.h"

namespace wisp {

enum class InstanceState : std::uint8_t { kStarting, kIdle, kBusy, kDraining, kGone };
inline constexpr std::size_t kInstanceStateCount = 5;
std::string_view InstanceStateName(InstanceState state);
// True when the lifecycle allows going from `from` to `to` (see the table above).
bool IsLegalTransition(InstanceState from, InstanceState to);

struct PoolLimits {
  int min_instances = 0;
  int max_instances = 1;
  int max_concurrency = 1;  // calls at once per instance
  int queue_capacity = 100;
};

class InstancePool {
 public:
  using InstanceId = std::uint64_t;
  // A call waiting for an instance: resumed once, with the instance it may now run on (already
  // counted busy for it) or with the reason it cannot run.
  using Waiter = std::function<void(Result<InstanceId>)>;

  struct Actions {
    std::vector<std::pair<Waiter, Result<InstanceId>>> resume;
    std::vector<InstanceId> start;    // begin creating these (they are in state starting)
    std::vector<InstanceId> destroy;  // gone now: destroy their instance objects
  };

  explicit InstancePool(PoolLimits limits) : limits_(limits) {}

  const PoolLimits& limits() const { return limits_; }

  // A new call. Runs at once on an instance with a free slot (in resume), else waits in the
  // queue (and may start an instance), else ResourceExhausted when the queue is full. After
  // Drain(): Unavailable.
  Result<Actions> Admit(Waiter waiter);

  // For a caller that cannot wait (a synchronous path): an instance with a free slot, counted
  // busy for the call, or nullopt when none is free now. Never queues, never starts.
  std::optional<InstanceId> TryAcquire();

  // Takes in an instance the caller made itself (idle, ready): its id, and waiting calls may
  // run on it. Nullopt when the pool is at max_instances or drained: destroy it instead.
  std::optional<InstanceId> Adopt(Actions& actions);

  // Starts instances until min_instances are starting or live.
  Actions Prewarm();

  // The autoscaler's recommendation: starts instances until `desired` are live (pre-warm), or
  // retires idle ones (idle -> gone) while more than `desired` are live. Never retires a busy,
  // starting or draining instance, never goes below min_instances nor above max_instances.
  // Nothing after Drain().
  Actions ScaleTo(int desired);

  // The instance `id` finished starting: `outcome` ok (now idle and given to waiting calls)
  // or why it failed (gone; when nothing else is starting or live the waiting calls fail with
  // it, since nothing would ever serve them). Internal for an id that is not starting/draining.
  Result<Actions> Started(InstanceId id, const Status& outcome);

  // A call on `id` ended; `reusable` false when the instance must go. `duration` feeds the
  // Retry-After estimate. Internal for an id with no call running.
  Result<Actions> Release(InstanceId id, bool reusable, std::chrono::nanoseconds duration);

  // Redeploy or delete: idle instances go now, busy and starting ones drain. New calls are
  // refused afterwards; the waiting ones are handed back to be re-admitted elsewhere.
  Actions Drain(std::deque<Waiter>* waiting);
  bool drained() const { return drained_; }
  // True once drained and every instance is gone: the pool may be dropped.
  bool finished() const { return drained_ && instances_.empty(); }

  // Seconds a refused caller should wait: the time the queue ahead needs at the mean call
  // duration seen so far, spread over all slots, rounded up, 1-60 (docs/lifecycle.md).
  int RetryAfterSeconds() const;

  int count(InstanceState state) const { return counts_[static_cast<std::size_t>(state)]; }
  std::size_t queue_depth() const { return queue_.size(); }
  // Instances starting, idle or busy: those that count toward max_instances.
  int live() const;
  InstanceState state(InstanceId id) const;  // kGone for an unknown id

 private:
  struct Slot {
    InstanceState state = InstanceState::kStarting;
    int calls = 0;
  };
  Status Move(InstanceId id, Slot& slot, InstanceState to);
  InstanceId StartOne(Actions& actions);
  // Gives free slots to waiting calls, oldest first, and starts instances the queue needs.
  void Dispatch(Actions& actions);
  void Forget(InstanceId id, Actions& actions);

  PoolLimits limits_;
  std::unordered_map<InstanceId, Slot> instances_;
  std::deque<Waiter> queue_;
  std::array<int, kInstanceStateCount> counts_{};
  InstanceId next_id_ = 1;
  bool drained_ = false;
  double mean_call_seconds_ = 0;  // exponentially weighted
  bool have_duration_ = false;
};

}  // namespace wisp
