// The instance lifecycle state machine and its wait queue (src/node/instance_pool.h).
#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <optional>
#include <vector>

#include "node/instance_pool.h"

namespace wisp {
namespace {

using Id = InstancePool::InstanceId;
using S = InstanceState;
constexpr std::chrono::nanoseconds kOneSecond = std::chrono::seconds(1);

// A waiting call that records what it was resumed with.
struct Call {
  std::optional<Result<Id>> outcome;
  InstancePool::Waiter waiter() {
    return [this](Result<Id> r) { outcome = std::move(r); };
  }
};

void Resume(InstancePool::Actions& actions) {
  for (auto& [waiter, result] : actions.resume) waiter(std::move(result));
  actions.resume.clear();
}

TEST(InstanceLifecycleTest, LegalTransitionsAreExactlyTheDocumentedOnes) {
  const S all[] = {S::kStarting, S::kIdle, S::kBusy, S::kDraining, S::kGone};
  int legal = 0;
  for (S from : all) {
    for (S to : all) legal += IsLegalTransition(from, to) ? 1 : 0;
  }
  EXPECT_EQ(legal, 9);
  EXPECT_TRUE(IsLegalTransition(S::kStarting, S::kIdle));
  EXPECT_TRUE(IsLegalTransition(S::kBusy, S::kDraining));
  EXPECT_TRUE(IsLegalTransition(S::kDraining, S::kGone));
  EXPECT_FALSE(IsLegalTransition(S::kStarting, S::kBusy));  // must be ready first
  EXPECT_FALSE(IsLegalTransition(S::kIdle, S::kDraining));  // an idle one goes at once
  EXPECT_FALSE(IsLegalTransition(S::kDraining, S::kIdle));  // never comes back
  EXPECT_FALSE(IsLegalTransition(S::kGone, S::kStarting));
}

TEST(InstanceLifecycleTest, ColdStartWaitsInQueueThenRunsAndGoesIdle) {
  InstancePool pool({.min_instances = 0, .max_instances = 2, .max_concurrency = 1});
  Call a;
  auto admitted = pool.Admit(a.waiter());
  ASSERT_TRUE(admitted.ok());
  ASSERT_EQ(admitted->start.size(), 1u);  // nothing warm: one instance starts
  EXPECT_TRUE(admitted->resume.empty());
  EXPECT_EQ(pool.queue_depth(), 1u);
  const Id id = admitted->start[0];
  EXPECT_EQ(pool.state(id), S::kStarting);

  auto started = pool.Started(id, Status::Ok());
  ASSERT_TRUE(started.ok());
  Resume(*started);
  ASSERT_TRUE(a.outcome && a.outcome->ok());
  EXPECT_EQ(**a.outcome, id);
  EXPECT_EQ(pool.state(id), S::kBusy);
  EXPECT_EQ(pool.queue_depth(), 0u);

  auto released = pool.Release(id, true, kOneSecond);
  ASSERT_TRUE(released.ok());
  EXPECT_EQ(pool.state(id), S::kIdle);
  EXPECT_EQ(pool.count(S::kIdle), 1);

  Call b;  // warm now: runs at once, nothing started
  auto warm = pool.Admit(b.waiter());
  ASSERT_TRUE(warm.ok());
  EXPECT_TRUE(warm->start.empty());
  Resume(*warm);
  ASSERT_TRUE(b.outcome && b.outcome->ok());
  EXPECT_EQ(**b.outcome, id);
}

TEST(InstanceLifecycleTest, IllegalUsesAreRefused) {
  InstancePool pool({.min_instances = 1, .max_instances = 1});
  auto warm = pool.Prewarm();
  ASSERT_EQ(warm.start.size(), 1u);
  const Id id = warm.start[0];
  EXPECT_FALSE(pool.Release(id, true, kOneSecond).ok());  // starting: no call to release
  ASSERT_TRUE(pool.Started(id, Status::Ok()).ok());
  EXPECT_FALSE(pool.Started(id, Status::Ok()).ok());       // idle: not starting any more
  EXPECT_FALSE(pool.Release(id, true, kOneSecond).ok());   // idle: no call to release
  EXPECT_FALSE(pool.Release(999, true, kOneSecond).ok());  // unknown
  EXPECT_EQ(pool.state(id), S::kIdle);
}

TEST(InstanceLifecycleTest, StartsNoMoreThanMaxAndNoMoreThanTheQueueNeeds) {
  InstancePool pool(
      {.min_instances = 0, .max_instances = 3, .max_concurrency = 2, .queue_capacity = 100});
  std::vector<Call> calls(10);
  std::vector<Id> started;
  for (Call& c : calls) {
    auto admitted = pool.Admit(c.waiter());
    ASSERT_TRUE(admitted.ok());
    for (Id id : admitted->start) started.push_back(id);
    // Two calls per instance: the k-th call starts an instance only when the ones starting
    // cannot take it.
  }
  EXPECT_EQ(started.size(), 3u);
  EXPECT_EQ(pool.count(S::kStarting), 3);
  EXPECT_EQ(pool.queue_depth(), 10u);
  auto ready = pool.Started(started[0], Status::Ok());
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(ready->resume.size(), 2u);  // max_concurrency calls share one instance
  Resume(*ready);
  EXPECT_EQ(pool.queue_depth(), 8u);
  EXPECT_EQ(pool.state(started[0]), S::kBusy);
  EXPECT_TRUE(calls[0].outcome && calls[1].outcome);  // FIFO: the oldest first
  EXPECT_FALSE(calls[2].outcome);
}

TEST(InstanceLifecycleTest, FullQueueIsRefusedWithResourceExhausted) {
  InstancePool pool(
      {.min_instances = 0, .max_instances = 1, .max_concurrency = 1, .queue_capacity = 3});
  std::vector<Call> calls(5);
  int refused = 0;
  for (Call& c : calls) {
    auto admitted = pool.Admit(c.waiter());
    if (!admitted.ok()) {
      EXPECT_EQ(admitted.status().code(), StatusCode::kResourceExhausted);
      ++refused;
    }
  }
  EXPECT_EQ(refused, 2);
  EXPECT_EQ(pool.queue_depth(), 3u);
  EXPECT_EQ(pool.count(S::kStarting), 1);
  EXPECT_GE(pool.RetryAfterSeconds(), 1);
}

TEST(InstanceLifecycleTest, RetryAfterFollowsTheQueueAndCallDuration) {
  InstancePool pool(
      {.min_instances = 1, .max_instances = 1, .max_concurrency = 1, .queue_capacity = 10});
  const Id id = pool.Prewarm().start.at(0);
  ASSERT_TRUE(pool.Started(id, Status::Ok()).ok());
  Call first;
  auto run = pool.Admit(first.waiter());
  ASSERT_TRUE(run.ok());
  ASSERT_TRUE(pool.Release(id, true, std::chrono::seconds(4)).ok());  // mean: 4 s
  std::vector<Call> calls(6);
  for (Call& c : calls) ASSERT_TRUE(pool.Admit(c.waiter()).ok());
  // The first runs; five wait. (5 + 1) calls ahead x 4 s over 1 slot = 24 s.
  EXPECT_EQ(pool.queue_depth(), 5u);
  EXPECT_EQ(pool.RetryAfterSeconds(), 24);
}

TEST(InstanceLifecycleTest, DrainLetsBusyInstancesFinishThenGo) {
  InstancePool pool({.min_instances = 2, .max_instances = 2, .max_concurrency = 1});
  auto warm = pool.Prewarm();
  ASSERT_EQ(warm.start.size(), 2u);
  for (Id id : warm.start) ASSERT_TRUE(pool.Started(id, Status::Ok()).ok());
  Call running;
  auto admitted = pool.Admit(running.waiter());
  ASSERT_TRUE(admitted.ok());
  Resume(*admitted);
  ASSERT_TRUE(running.outcome && running.outcome->ok());
  const Id busy = **running.outcome;
  const Id idle = warm.start[0] == busy ? warm.start[1] : warm.start[0];
  Call other;
  ASSERT_TRUE(pool.Admit(other.waiter()).ok());       // takes the idle one
  auto ended = pool.Release(idle, true, kOneSecond);  // and ends: idle again
  ASSERT_TRUE(ended.ok());
  EXPECT_EQ(pool.state(idle), S::kIdle);

  std::deque<InstancePool::Waiter> waiting;
  auto drained = pool.Drain(&waiting);
  EXPECT_EQ(drained.destroy, std::vector<Id>{idle});  // idle: gone now
  EXPECT_EQ(pool.state(busy), S::kDraining);          // busy: finishes first
  EXPECT_FALSE(pool.finished());
  Call late;
  auto refused = pool.Admit(late.waiter());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);

  auto done = pool.Release(busy, true, kOneSecond);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->destroy, std::vector<Id>{busy});
  EXPECT_TRUE(done->start.empty());
  EXPECT_TRUE(pool.finished());
}

TEST(InstanceLifecycleTest, DrainHandsBackWaitingCallsAndStopsStartingOnes) {
  InstancePool pool({.min_instances = 0, .max_instances = 1, .max_concurrency = 1});
  Call waiting_call;
  auto admitted = pool.Admit(waiting_call.waiter());
  ASSERT_TRUE(admitted.ok());
  const Id starting = admitted->start.at(0);
  std::deque<InstancePool::Waiter> waiting;
  auto drained = pool.Drain(&waiting);
  EXPECT_TRUE(drained.destroy.empty());
  EXPECT_EQ(waiting.size(), 1u);
  EXPECT_EQ(pool.state(starting), S::kDraining);
  auto started = pool.Started(starting, Status::Ok());  // came up too late: goes at once
  ASSERT_TRUE(started.ok());
  EXPECT_EQ(started->destroy, std::vector<Id>{starting});
  EXPECT_TRUE(pool.finished());
  EXPECT_FALSE(waiting_call.outcome);  // handed back, not failed
}

TEST(InstanceLifecycleTest, UnusableInstanceIsReplacedForWaitingCalls) {
  InstancePool pool({.min_instances = 0, .max_instances = 1, .max_concurrency = 1});
  Call a, b;
  auto first = pool.Admit(a.waiter());
  const Id id = first->start.at(0);
  ASSERT_TRUE(pool.Admit(b.waiter()).ok());
  auto ready = pool.Started(id, Status::Ok());
  Resume(*ready);
  ASSERT_TRUE(a.outcome && a.outcome->ok());
  EXPECT_FALSE(b.outcome);
  auto crashed = pool.Release(id, /*reusable=*/false, kOneSecond);
  ASSERT_TRUE(crashed.ok());
  EXPECT_EQ(crashed->destroy, std::vector<Id>{id});
  ASSERT_EQ(crashed->start.size(), 1u);  // b still waits: a fresh instance starts for it
  EXPECT_EQ(pool.count(S::kGone), 1);
}

TEST(InstanceLifecycleTest, FailedStartFailsTheWaitingCallsWhenNothingElseCanServeThem) {
  InstancePool pool({.min_instances = 0, .max_instances = 1, .max_concurrency = 1});
  Call a, b;
  const Id id = pool.Admit(a.waiter())->start.at(0);
  ASSERT_TRUE(pool.Admit(b.waiter()).ok());
  auto failed = pool.Started(id, InvalidArgument("handler did not load"));
  ASSERT_TRUE(failed.ok());
  EXPECT_TRUE(failed->start.empty());
  Resume(*failed);
  ASSERT_TRUE(a.outcome && b.outcome);
  EXPECT_EQ(a.outcome->status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(b.outcome->status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.queue_depth(), 0u);
  EXPECT_EQ(pool.live(), 0);
}

}  // namespace
}  // namespace wisp

namespace wisp {
namespace {

TEST(InstancePoolScaleToTest, StartsUpToTheRecommendationAndRetiresOnlyIdleOnes) {
  InstancePool pool({.min_instances = 1, .max_instances = 3, .max_concurrency = 1});
  InstancePool::Actions up = pool.ScaleTo(5);  // pre-warm, capped at max_instances
  ASSERT_EQ(up.start.size(), 3u);
  for (InstancePool::InstanceId id : up.start) ASSERT_TRUE(pool.Started(id, Status::Ok()).ok());
  EXPECT_EQ(pool.count(InstanceState::kIdle), 3);

  const std::optional<InstancePool::InstanceId> busy = pool.TryAcquire();
  ASSERT_TRUE(busy.has_value());
  InstancePool::Actions down = pool.ScaleTo(0);  // never below min_instances (1)
  // Two idle instances could go, but one must stay for scale.min: the busy one counts.
  EXPECT_EQ(down.destroy.size(), 2u);
  EXPECT_TRUE(down.start.empty());
  EXPECT_EQ(pool.state(*busy), InstanceState::kBusy);
  EXPECT_EQ(pool.live(), 1);
  EXPECT_EQ(pool.count(InstanceState::kIdle), 0);
  for (InstancePool::InstanceId id : down.destroy) EXPECT_EQ(pool.state(id), InstanceState::kGone);
}

TEST(InstancePoolScaleToTest, NeverRetiresBusyInstancesAndDoesNothingOnceDrained) {
  InstancePool pool({.min_instances = 0, .max_instances = 2, .max_concurrency = 1});
  InstancePool::Actions up = pool.ScaleTo(2);
  ASSERT_EQ(up.start.size(), 2u);
  for (InstancePool::InstanceId id : up.start) ASSERT_TRUE(pool.Started(id, Status::Ok()).ok());
  ASSERT_TRUE(pool.TryAcquire().has_value());
  ASSERT_TRUE(pool.TryAcquire().has_value());
  InstancePool::Actions down = pool.ScaleTo(0);
  EXPECT_TRUE(down.destroy.empty());  // both busy: they finish first
  EXPECT_EQ(pool.count(InstanceState::kBusy), 2);

  (void)pool.Drain(nullptr);
  InstancePool::Actions after = pool.ScaleTo(2);
  EXPECT_TRUE(after.start.empty());
  EXPECT_TRUE(after.destroy.empty());
}

}  // namespace
}  // namespace wisp
