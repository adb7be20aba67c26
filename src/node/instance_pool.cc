#include "node/instance_pool.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace wisp {

std::string_view InstanceStateName(InstanceState state) {
  switch (state) {
    case InstanceState::kStarting:
      return "starting";
    case InstanceState::kIdle:
      return "idle";
    case InstanceState::kBusy:
      return "busy";
    case InstanceState::kDraining:
      return "draining";
    case InstanceState::kGone:
      return "gone";
  }
  return "unknown";
}

bool IsLegalTransition(InstanceState from, InstanceState to) {
  using S = InstanceState;
  switch (from) {
    case S::kStarting:
      return to == S::kIdle || to == S::kGone || to == S::kDraining;
    case S::kIdle:
      return to == S::kBusy || to == S::kGone;
    case S::kBusy:
      return to == S::kIdle || to == S::kGone || to == S::kDraining;
    case S::kDraining:
      return to == S::kGone;
    case S::kGone:
      return false;
  }
  return false;
}

Status InstancePool::Move(InstanceId id, Slot& slot, InstanceState to) {
  if (!IsLegalTransition(slot.state, to)) {
    return Internal(fmt::format("instance {}: illegal lifecycle transition {} -> {}", id,
                                InstanceStateName(slot.state), InstanceStateName(to)));
  }
  --counts_[static_cast<std::size_t>(slot.state)];
  ++counts_[static_cast<std::size_t>(to)];  // kGone counts every instance gone so far
  slot.state = to;
  return Status::Ok();
}

int InstancePool::live() const {
  return count(InstanceState::kStarting) + count(InstanceState::kIdle) +
         count(InstanceState::kBusy);
}

InstanceState InstancePool::state(InstanceId id) const {
  auto it = instances_.find(id);
  return it == instances_.end() ? InstanceState::kGone : it->second.state;
}

InstancePool::InstanceId InstancePool::StartOne(Actions& actions) {
  const InstanceId id = next_id_++;
  instances_.emplace(id, Slot{});
  ++counts_[static_cast<std::size_t>(InstanceState::kStarting)];
  actions.start.push_back(id);
  return id;
}

void InstancePool::Forget(InstanceId id, Actions& actions) {
  instances_.erase(id);
  actions.destroy.push_back(id);
}

void InstancePool::Dispatch(Actions& actions) {
  while (!queue_.empty()) {
    // Busy instances with a free slot first: an idle one may then stay idle and be reclaimed.
    Slot* chosen = nullptr;
    InstanceId chosen_id = 0;
    for (auto& [id, slot] : instances_) {
      const bool usable =
          (slot.state == InstanceState::kIdle || slot.state == InstanceState::kBusy) &&
          slot.calls < limits_.max_concurrency;
      if (!usable) continue;
      if (chosen == nullptr ||
          (slot.state == InstanceState::kBusy && chosen->state == InstanceState::kIdle)) {
        chosen = &slot;
        chosen_id = id;
      }
    }
    if (chosen == nullptr) break;
    if (chosen->state == InstanceState::kIdle) (void)Move(chosen_id, *chosen, InstanceState::kBusy);
    ++chosen->calls;
    actions.resume.emplace_back(std::move(queue_.front()), chosen_id);
    queue_.pop_front();
  }
  if (drained_) return;
  // Start as many instances as the waiting calls need beyond those already starting.
  const std::size_t per_instance = static_cast<std::size_t>(std::max(1, limits_.max_concurrency));
  while (queue_.size() > static_cast<std::size_t>(count(InstanceState::kStarting)) * per_instance &&
         live() < limits_.max_instances) {
    StartOne(actions);
  }
}

Result<InstancePool::Actions> InstancePool::Admit(Waiter waiter) {
  if (drained_) return Unavailable("the function was redeployed or deleted");
  if (queue_.size() >= static_cast<std::size_t>(std::max(0, limits_.queue_capacity))) {
    // A full queue refuses only when the call could not run at once.
    Actions probe;
    queue_.push_back(std::move(waiter));
    const std::size_t before = queue_.size();
    Dispatch(probe);
    if (queue_.size() < before) return probe;
    queue_.pop_back();
    for (InstanceId id : probe.start) {  // undo starts made for a call that is refused
      instances_.erase(id);
      --counts_[static_cast<std::size_t>(InstanceState::kStarting)];
    }
    return ResourceExhausted(
        fmt::format("too many calls waiting ({} queued, at most {} instances of {} calls)",
                    queue_.size(), limits_.max_instances, limits_.max_concurrency));
  }
  Actions actions;
  queue_.push_back(std::move(waiter));
  Dispatch(actions);
  return actions;
}

std::optional<InstancePool::InstanceId> InstancePool::TryAcquire() {
  if (drained_ || !queue_.empty()) return std::nullopt;  // never ahead of waiting calls
  for (auto& [id, slot] : instances_) {
    if ((slot.state == InstanceState::kIdle || slot.state == InstanceState::kBusy) &&
        slot.calls < limits_.max_concurrency) {
      if (slot.state == InstanceState::kIdle) (void)Move(id, slot, InstanceState::kBusy);
      ++slot.calls;
      return id;
    }
  }
  return std::nullopt;
}

std::optional<InstancePool::InstanceId> InstancePool::Adopt(Actions& actions) {
  if (drained_ || live() >= limits_.max_instances) return std::nullopt;
  const InstanceId id = next_id_++;
  instances_.emplace(id, Slot{});
  ++counts_[static_cast<std::size_t>(InstanceState::kStarting)];
  (void)Move(id, instances_[id], InstanceState::kIdle);
  Dispatch(actions);
  return id;
}

InstancePool::Actions InstancePool::Prewarm() {
  Actions actions;
  while (!drained_ && live() < std::min(limits_.min_instances, limits_.max_instances)) {
    StartOne(actions);
  }
  return actions;
}

InstancePool::Actions InstancePool::ScaleTo(int desired) {
  Actions actions;
  if (drained_) return actions;
  desired = std::clamp(desired, std::min(limits_.min_instances, limits_.max_instances),
                       limits_.max_instances);
  while (live() < desired) StartOne(actions);
  if (live() > desired) {
    std::vector<InstanceId> idle;
    for (auto& [id, slot] : instances_) {
      if (slot.state == InstanceState::kIdle) idle.push_back(id);
    }
    // Oldest first (ids grow), so the most recently started instances stay.
    std::sort(idle.begin(), idle.end());
    for (InstanceId id : idle) {
      if (live() <= desired) break;
      (void)Move(id, instances_[id], InstanceState::kGone);
      Forget(id, actions);
    }
  }
  return actions;
}

Result<InstancePool::Actions> InstancePool::Started(InstanceId id, const Status& outcome) {
  auto it = instances_.find(id);
  if (it == instances_.end() || (it->second.state != InstanceState::kStarting &&
                                 it->second.state != InstanceState::kDraining)) {
    return Internal(fmt::format("instance {} was not starting", id));
  }
  Slot& slot = it->second;
  Actions actions;
  if (slot.state == InstanceState::kDraining || !outcome.ok()) {
    RETURN_IF_ERROR(Move(id, slot, InstanceState::kGone));
    Forget(id, actions);
    if (!outcome.ok() && live() == 0) {
      while (!queue_.empty()) {
        actions.resume.emplace_back(std::move(queue_.front()), outcome);
        queue_.pop_front();
      }
    }
  } else {
    RETURN_IF_ERROR(Move(id, slot, InstanceState::kIdle));
  }
  Dispatch(actions);
  return actions;
}

Result<InstancePool::Actions> InstancePool::Release(InstanceId id, bool reusable,
                                                    std::chrono::nanoseconds duration) {
  auto it = instances_.find(id);
  if (it == instances_.end() || it->second.calls == 0) {
    return Internal(fmt::format("instance {} has no call running", id));
  }
  Slot& slot = it->second;
  --slot.calls;
  const double seconds = std::chrono::duration<double>(duration).count();
  mean_call_seconds_ = have_duration_ ? 0.8 * mean_call_seconds_ + 0.2 * seconds : seconds;
  have_duration_ = true;
  Actions actions;
  if (!reusable && slot.state == InstanceState::kBusy) {
    // Calls still running on it finish; no new one is given to it.
    RETURN_IF_ERROR(Move(id, slot, InstanceState::kDraining));
  }
  if (slot.calls == 0) {
    if (slot.state == InstanceState::kDraining) {
      RETURN_IF_ERROR(Move(id, slot, InstanceState::kGone));
      Forget(id, actions);
    } else {
      RETURN_IF_ERROR(Move(id, slot, InstanceState::kIdle));
    }
  }
  Dispatch(actions);
  return actions;
}

InstancePool::Actions InstancePool::Drain(std::deque<Waiter>* waiting) {
  Actions actions;
  drained_ = true;
  std::vector<InstanceId> idle;
  for (auto& [id, slot] : instances_) {
    if (slot.state == InstanceState::kIdle) {
      (void)Move(id, slot, InstanceState::kGone);
      idle.push_back(id);
    } else if (slot.state == InstanceState::kBusy || slot.state == InstanceState::kStarting) {
      (void)Move(id, slot, InstanceState::kDraining);
    }
  }
  for (InstanceId id : idle) Forget(id, actions);
  if (waiting != nullptr) {
    for (auto& waiter : queue_) waiting->push_back(std::move(waiter));
  } else {
    for (auto& waiter : queue_) {
      actions.resume.emplace_back(std::move(waiter),
                                  Unavailable("the function was redeployed or deleted"));
    }
  }
  queue_.clear();
  return actions;
}

int InstancePool::RetryAfterSeconds() const {
  const double mean = have_duration_ ? mean_call_seconds_ : 1.0;
  const double slots = std::max(1, limits_.max_instances) * std::max(1, limits_.max_concurrency);
  const double seconds = std::ceil((static_cast<double>(queue_.size()) + 1.0) * mean / slots);
  return static_cast<int>(std::clamp(seconds, 1.0, 60.0));
}

}  // namespace wisp
