#include "gateway/filter_chain.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace wisp {
namespace {

using std::chrono::milliseconds;

std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> parts;
  if (path.empty()) return parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = path.find('.', start);
    parts.emplace_back(path.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

// The value at `path` inside `root`, or null when a part is missing or not an object.
nlohmann::json* FindPath(nlohmann::json& root, const std::vector<std::string>& path) {
  nlohmann::json* node = &root;
  for (const std::string& part : path) {
    if (!node->is_object()) return nullptr;
    auto it = node->find(part);
    if (it == node->end()) return nullptr;
    node = &*it;
  }
  return node;
}

// Floor division, so that times before a window's alignment point still land in a window.
std::int64_t FloorDiv(std::int64_t a, std::int64_t b) {
  const std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

std::int64_t EpochMillis(FilterTime t) {
  return std::chrono::floor<milliseconds>(t.time_since_epoch()).count();
}

FilterTime FromEpochMillis(std::int64_t ms) {
  return FilterTime(std::chrono::duration_cast<FilterTime::duration>(milliseconds(ms)));
}

}  // namespace

enum class StageKind {
  kRange,
  kDeadband,
  kEwma,
  kDownsample,
  kRateLimit,
  kCountWindow,
  kTimeWindow
};

struct FilterChain::Stage {
  StageKind kind;
  std::vector<std::string> field;  // numeric stages; empty: the payload itself
  FilterSpec spec;
  FilterStageCounters* counters;
};

struct FilterChain::StageState {
  // deadband: last passed value; ewma: the smoothed value. `has_value` false until the first.
  double value = 0;
  bool has_value = false;
  std::int64_t seen = 0;  // downsample every: events of the key so far
  // downsample interval: last passed; rate limit: last refill; time window: newest event.
  FilterTime last_time;
  double tokens = 0;  // rate limit
  // Windows: the events held, oldest first.
  struct Held {
    nlohmann::json value;
    FilterTime time;
  };
  std::vector<Held> held;
  std::string last_topic;   // of the newest held event
  FilterTime window_end;    // time window: end of the oldest window not yet closed
  FilterTime closed_until;  // time window: end of the last window closed
  FilterTime scheduled;     // time window: the deadline entered in deadlines_
  bool is_scheduled = false;
};

struct FilterChain::KeyState {
  const std::string* key = nullptr;  // the map's own copy
  std::list<KeyState*>::iterator recent;
  std::vector<StageState> stages;
};

nlohmann::json PlainPayloadValue(std::string_view payload) {
  std::string_view text = payload;
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  double number = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (!text.empty() && ec == std::errc() && ptr == text.data() + text.size() &&
      std::isfinite(number)) {
    return number;
  }
  return std::string(payload);
}

std::vector<FilterMetrics::Stage> FilterStagesOf(const FunctionSpec& spec) {
  std::vector<FilterMetrics::Stage> stages;
  for (std::size_t t = 0; t < spec.mqtt_triggers.size(); ++t) {
    const auto& filters = spec.mqtt_triggers[t].filters;
    for (std::size_t i = 0; i < filters.size(); ++i) {
      stages.push_back({t, fmt::format("{}:{}", i, FilterName(filters[i]))});
    }
  }
  return stages;
}

Result<std::unique_ptr<FilterChain>> FilterChain::Create(const MqttTriggerSpec& trigger,
                                                         FilterChainCounters counters) {
  if (counters.stages.size() != trigger.filters.size() || counters.keys_evicted == nullptr) {
    return InvalidArgument(fmt::format("filter chain of {}: {} filters but {} counter slots",
                                       trigger.topic, trigger.filters.size(),
                                       counters.stages.size()));
  }
  if (trigger.max_keys == 0) return InvalidArgument("filters: max_keys must be >= 1");
  for (const FilterSpec& filter : trigger.filters) {
    Status problem;
    if (const auto* w = std::get_if<WindowFilterSpec>(&filter)) {
      const bool by_count = w->count > 0;
      const bool by_time = w->duration.count() > 0;
      if (by_count == by_time) {
        problem = InvalidArgument("window: give either count or duration");
      } else if (by_count && (w->count_slide < 1 || w->count_slide > w->count)) {
        problem = InvalidArgument("window: slide must be >= 1 and <= count");
      } else if (by_time && (w->slide.count() < 1 || w->slide > w->duration ||
                             w->duration % w->slide != milliseconds(0) ||
                             w->duration / w->slide > kMaxSlidesPerWindow)) {
        problem = InvalidArgument(fmt::format(
            "window: duration must be a whole number of slides, at most {}", kMaxSlidesPerWindow));
      }
    } else if (const auto* d = std::get_if<DownsampleFilterSpec>(&filter)) {
      if ((d->every > 0) == (d->interval.count() > 0) || d->every < 0) {
        problem = InvalidArgument("downsample: give either every or interval");
      }
    } else if (const auto* r = std::get_if<RateLimitFilterSpec>(&filter)) {
      if (!(r->per_second > 0) || !(r->burst >= 1)) {
        problem = InvalidArgument("rate_limit: rate must be > 0 and burst >= 1");
      }
    } else if (const auto* e = std::get_if<EwmaFilterSpec>(&filter)) {
      if (!(e->alpha > 0 && e->alpha <= 1))
        problem = InvalidArgument("ewma: alpha must be in (0, 1]");
    } else if (const auto* b = std::get_if<DeadbandFilterSpec>(&filter)) {
      if (!(b->delta > 0)) problem = InvalidArgument("deadband: delta must be > 0");
    }
    if (!problem.ok()) return problem;
  }
  return std::unique_ptr<FilterChain>(new FilterChain(trigger, counters));
}

FilterChain::FilterChain(const MqttTriggerSpec& trigger, FilterChainCounters counters)
    : key_field_(SplitPath(trigger.key)), max_keys_(trigger.max_keys), counters_(counters) {
  for (std::size_t i = 0; i < trigger.filters.size(); ++i) {
    const FilterSpec& spec = trigger.filters[i];
    Stage stage{StageKind::kRange, {}, spec, &counters_.stages[i]};
    if (const auto* r = std::get_if<RangeFilterSpec>(&spec)) {
      stage.field = SplitPath(r->field);
    } else if (const auto* d = std::get_if<DeadbandFilterSpec>(&spec)) {
      stage.kind = StageKind::kDeadband;
      stage.field = SplitPath(d->field);
    } else if (const auto* e = std::get_if<EwmaFilterSpec>(&spec)) {
      stage.kind = StageKind::kEwma;
      stage.field = SplitPath(e->field);
    } else if (std::holds_alternative<DownsampleFilterSpec>(spec)) {
      stage.kind = StageKind::kDownsample;
    } else if (std::holds_alternative<RateLimitFilterSpec>(spec)) {
      stage.kind = StageKind::kRateLimit;
    } else {
      stage.kind = std::get<WindowFilterSpec>(spec).count > 0 ? StageKind::kCountWindow
                                                              : StageKind::kTimeWindow;
    }
    stages_.push_back(std::move(stage));
  }
}

FilterChain::~FilterChain() = default;

FilterChain::KeyState& FilterChain::Touch(std::string_view key) {
  if (auto it = keys_.find(key); it != keys_.end()) {
    KeyState& state = *it->second;
    recent_.splice(recent_.begin(), recent_, state.recent);
    return state;
  }
  if (keys_.size() >= max_keys_) {
    Evict(*recent_.back());
    counters_.keys_evicted->Add();
  }
  auto [it, inserted] = keys_.emplace(std::string(key), std::make_unique<KeyState>());
  KeyState& state = *it->second;
  state.key = &it->first;
  state.stages.resize(stages_.size());
  recent_.push_front(&state);
  state.recent = recent_.begin();
  return state;
}

void FilterChain::Evict(KeyState& key) {
  for (std::size_t i = 0; i < key.stages.size(); ++i) {
    StageState& s = key.stages[i];
    if (s.is_scheduled) deadlines_.erase({s.scheduled, &key, i});
    buffered_ -= s.held.size();
  }
  recent_.erase(key.recent);
  keys_.erase(keys_.find(*key.key));  // destroys `key`
}

void FilterChain::Push(std::string_view topic, nlohmann::json payload, FilterTime time,
                       std::vector<FilterOutput>& out) {
  // The key: the topic, or the payload field `key:` names (short text as it is, a number as
  // its JSON text); a message without such a field is kept under its topic.
  std::string_view key = topic;
  if (!key_field_.empty()) {
    if (const nlohmann::json* field = FindPath(payload, key_field_); field != nullptr) {
      if (field->is_string() && field->get_ref<const std::string&>().size() <= kMaxKeyLength) {
        key = field->get_ref<const std::string&>();
      } else if (field->is_number()) {
        key_scratch_ = field->dump();
        key = key_scratch_;
      }
    }
  }
  KeyState& state = Touch(key);
  FilterOutput event;
  event.value = std::move(payload);
  event.time = time;
  event.topic = topic;
  Run(0, state, std::move(event), out);
}

void FilterChain::Run(std::size_t first, KeyState& key, FilterOutput event,
                      std::vector<FilterOutput>& out) {
  for (std::size_t i = first; i < stages_.size(); ++i) {
    const Stage& stage = stages_[i];
    StageState& state = key.stages[i];
    stage.counters->in.Add();
    switch (stage.kind) {
      case StageKind::kRange:
      case StageKind::kDeadband:
      case StageKind::kEwma: {
        nlohmann::json* field = FindPath(event.value, stage.field);
        if (field == nullptr || !field->is_number()) {
          stage.counters->without_field.Add();
          break;
        }
        const double v = field->get<double>();
        if (stage.kind == StageKind::kRange) {
          const auto& range = std::get<RangeFilterSpec>(stage.spec);
          if (std::isnan(v)) return;  // in no range, and there is nothing to clamp it to
          const bool low = range.min && v < *range.min;
          const bool high = range.max && v > *range.max;
          if (!low && !high) break;
          if (!range.clamp) return;
          *field = low ? *range.min : *range.max;
          event.modified = true;
        } else if (stage.kind == StageKind::kDeadband) {
          if (!std::isfinite(v)) return;  // would freeze the band for good
          const double delta = std::get<DeadbandFilterSpec>(stage.spec).delta;
          if (state.has_value && std::fabs(v - state.value) < delta) return;
          state.value = v;
          state.has_value = true;
        } else {
          if (!std::isfinite(v)) return;  // would poison the average for good
          const double alpha = std::get<EwmaFilterSpec>(stage.spec).alpha;
          state.value = state.has_value ? alpha * v + (1 - alpha) * state.value : v;
          state.has_value = true;
          *field = state.value;
          event.modified = true;
        }
        break;
      }
      case StageKind::kDownsample: {
        const auto& spec = std::get<DownsampleFilterSpec>(stage.spec);
        if (spec.every > 0) {
          const bool pass = state.seen % spec.every == 0;
          state.seen = (state.seen + 1) % spec.every;
          if (!pass) return;
        } else {
          if (state.has_value && event.time - state.last_time < spec.interval) return;
          state.last_time = event.time;
          state.has_value = true;
        }
        break;
      }
      case StageKind::kRateLimit: {
        const auto& spec = std::get<RateLimitFilterSpec>(stage.spec);
        if (!state.has_value) {
          state.tokens = spec.burst;
          state.has_value = true;
          state.last_time = event.time;
        } else if (event.time > state.last_time) {  // a clock stepped back refills nothing
          const double elapsed =
              std::chrono::duration<double>(event.time - state.last_time).count();
          state.tokens = std::min(spec.burst, state.tokens + elapsed * spec.per_second);
          state.last_time = event.time;
        }
        if (state.tokens < 1) return;
        state.tokens -= 1;
        break;
      }
      case StageKind::kCountWindow: {
        if (buffered_ >= kMaxBufferedEvents) {
          stage.counters->overflow.Add();
          return;
        }
        const auto& spec = std::get<WindowFilterSpec>(stage.spec);
        state.held.push_back({std::move(event.value), event.time});
        state.last_topic.assign(event.Topic());
        ++buffered_;
        if (static_cast<std::int64_t>(state.held.size()) < spec.count) return;
        const bool tumbling = spec.count_slide == spec.count;
        FilterOutput batch = MakeBatch(key, i, 0, state.held.size(), state.held.front().time,
                                       state.held.back().time, tumbling);
        const auto drop = static_cast<std::size_t>(spec.count_slide);
        state.held.erase(state.held.begin(), state.held.begin() + drop);
        buffered_ -= drop;
        stage.counters->out.Add();
        Run(i + 1, key, std::move(batch), out);
        return;
      }
      case StageKind::kTimeWindow: {
        CloseTimeWindows(i, key, event.time, out);
        if (buffered_ >= kMaxBufferedEvents) {
          stage.counters->overflow.Add();
          return;
        }
        const auto& spec = std::get<WindowFilterSpec>(stage.spec);
        // Per key time only moves forward, and never into a window already closed: a message
        // received just before the timer closed its window, or a clock stepped back, goes into
        // the next window.
        const FilterTime t = std::max({event.time, state.last_time, state.closed_until});
        state.last_time = t;
        if (state.held.empty()) {
          // The earliest window holding t: windows start at multiples of slide.
          const std::int64_t d = spec.duration.count(), s = spec.slide.count();
          const std::int64_t start = (FloorDiv(EpochMillis(t) - d, s) + 1) * s;
          state.window_end = FromEpochMillis(start + d);
        }
        state.held.push_back({std::move(event.value), t});
        state.last_topic.assign(event.Topic());
        ++buffered_;
        Reschedule(i, key);
        return;
      }
    }
    stage.counters->out.Add();
  }
  out.push_back(std::move(event));
}

FilterOutput FilterChain::MakeBatch(KeyState& key, std::size_t stage, std::size_t begin,
                                    std::size_t end, FilterTime start, FilterTime finish,
                                    bool move) {
  StageState& state = key.stages[stage];
  nlohmann::json values = nlohmann::json::array();
  values.get_ref<nlohmann::json::array_t&>().reserve(end - begin);
  for (std::size_t j = begin; j < end; ++j) {
    if (move) {
      values.push_back(std::move(state.held[j].value));
    } else {
      values.push_back(state.held[j].value);
    }
  }
  FilterOutput batch;
  batch.value = nlohmann::json::object();
  batch.value["key"] = *key.key;
  batch.value["count"] = end - begin;
  batch.value["start"] = EpochMillis(start);
  batch.value["end"] = EpochMillis(finish);
  batch.value["values"] = std::move(values);
  batch.time = finish;
  batch.modified = true;
  batch.batch = true;
  batch.batch_topic = state.last_topic;
  return batch;
}

void FilterChain::CloseTimeWindows(std::size_t stage, KeyState& key, FilterTime now,
                                   std::vector<FilterOutput>& out) {
  StageState& state = key.stages[stage];
  const auto& spec = std::get<WindowFilterSpec>(stages_[stage].spec);
  const bool tumbling = spec.slide == spec.duration;
  while (!state.held.empty() && state.window_end <= now) {
    const FilterTime start = state.window_end - spec.duration;
    // Held events are in time order and none is before `start` (older ones were let go when
    // the window before closed), so the window is a prefix.
    std::size_t end = 0;
    while (end < state.held.size() && state.held[end].time < state.window_end) ++end;
    const FilterTime window_end = state.window_end;
    const FilterTime next_start = start + spec.slide;
    state.closed_until = window_end;
    std::size_t keep_from = 0;
    while (keep_from < state.held.size() && state.held[keep_from].time < next_start) ++keep_from;
    state.window_end += spec.slide;
    if (end > 0) {
      FilterOutput batch = MakeBatch(key, stage, 0, end, start, window_end, tumbling);
      state.held.erase(state.held.begin(), state.held.begin() + keep_from);
      buffered_ -= keep_from;
      stages_[stage].counters->out.Add();
      Run(stage + 1, key, std::move(batch), out);
    } else {
      state.held.erase(state.held.begin(), state.held.begin() + keep_from);
      buffered_ -= keep_from;
    }
  }
  Reschedule(stage, key);
}

void FilterChain::Reschedule(std::size_t stage, KeyState& key) {
  StageState& state = key.stages[stage];
  const bool want = !state.held.empty();
  if (state.is_scheduled && (!want || state.scheduled != state.window_end)) {
    deadlines_.erase({state.scheduled, &key, stage});
    state.is_scheduled = false;
  }
  if (want && !state.is_scheduled) {
    deadlines_.emplace(state.window_end, &key, stage);
    state.scheduled = state.window_end;
    state.is_scheduled = true;
  }
}

void FilterChain::Flush(FilterTime now, std::vector<FilterOutput>& out) {
  while (!deadlines_.empty()) {
    auto [end, key, stage] = *deadlines_.begin();
    if (end > now) break;
    CloseTimeWindows(stage, *key, now, out);  // reschedules the key's stage
  }
}

std::optional<FilterTime> FilterChain::NextDeadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return std::get<0>(*deadlines_.begin());
}

}  // namespace wisp
