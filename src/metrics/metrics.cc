#include "metrics/metrics.h"

#include <algorithm>

#include <fmt/format.h>

namespace wisp {

void ShardHistogram::Record(std::chrono::nanoseconds value) {
  const double seconds = std::chrono::duration<double>(value).count();
  std::size_t i = 0;
  while (i < kLatencyBuckets.size() && seconds > kLatencyBuckets[i]) ++i;
  buckets_[i].store(buckets_[i].load(kRelaxed) + 1, kRelaxed);
  count_.store(count_.load(kRelaxed) + 1, kRelaxed);
  sum_nanos_.store(sum_nanos_.load(kRelaxed) + static_cast<std::uint64_t>(value.count()), kRelaxed);
}

FunctionMetrics::FunctionMetrics(std::string name, std::string runtime, int shards)
    : name_(std::move(name)), runtime_(std::move(runtime)) {
  for (int i = 0; i < shards; ++i) shards_.push_back(std::make_unique<FunctionShardMetrics>());
}

FunctionMetrics::Totals FunctionMetrics::Sum() const {
  Totals t;
  for (const auto& s : shards_) {
    for (const auto& trigger : s->by_trigger) {
      t.invocations += trigger.ok.Get() + trigger.error.Get();
      t.errors += trigger.error.Get();
      t.duration_seconds_sum += static_cast<double>(trigger.duration.SumNanos()) / 1e9;
    }
    t.cold_starts += s->cold_starts.Get();
    t.instances += s->instances.load(std::memory_order_relaxed);
  }
  return t;
}

FilterMetrics::FilterMetrics(std::string function, std::vector<Stage> stages,
                             std::size_t trigger_count, int shards)
    : function_(std::move(function)), stages_(std::move(stages)) {
  first_stage_.assign(trigger_count + 1, stages_.size());
  for (std::size_t i = stages_.size(); i-- > 0;) first_stage_[stages_[i].trigger] = i;
  for (std::size_t t = trigger_count; t-- > 0;) {
    first_stage_[t] = std::min(first_stage_[t], first_stage_[t + 1]);
  }
  for (int i = 0; i < shards; ++i) {
    shards_.push_back(std::make_unique<FilterShardMetrics>(stages_.size(), trigger_count));
  }
}

std::span<FilterStageCounters> FilterMetrics::TriggerStages(int shard, std::size_t trigger) {
  const std::size_t first = first_stage_[trigger];
  return std::span<FilterStageCounters>(shards_[shard]->stages)
      .subspan(first, first_stage_[trigger + 1] - first);
}

ShardCounter& FilterMetrics::KeysEvicted(int shard, std::size_t trigger) {
  return shards_[shard]->keys_evicted[trigger];
}

MetricsRegistry::MetricsRegistry(int shards) : shards_(shards) {
  for (int i = 0; i < shards; ++i) http_.push_back(std::make_unique<HttpShardMetrics>());
  for (int i = 0; i < shards; ++i) archive_.push_back(std::make_unique<ArchiveShardMetrics>());
}

FunctionMetricsPtr MetricsRegistry::ForFunction(const std::string& name,
                                                const std::string& runtime) {
  std::lock_guard lock(mu_);
  auto& slot = functions_[name];
  if (!slot || slot->runtime() != runtime) {
    slot = std::make_shared<FunctionMetrics>(name, runtime, shards_);
  }
  return slot;
}

void MetricsRegistry::RemoveFunction(const std::string& name) {
  std::lock_guard lock(mu_);
  functions_.erase(name);
  filters_.erase(name);
}

FilterMetricsPtr MetricsRegistry::ForFilters(const std::string& function,
                                             std::vector<FilterMetrics::Stage> stages,
                                             std::size_t trigger_count) {
  std::lock_guard lock(mu_);
  auto& slot = filters_[function];
  if (!slot || slot->stages() != stages || slot->trigger_count() != trigger_count) {
    slot = std::make_shared<FilterMetrics>(function, std::move(stages), trigger_count, shards_);
  }
  return slot;
}

void AppendMetricFamily(std::string& out, std::string_view name, std::string_view type,
                        std::string_view help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

int MetricsRegistry::AddCollector(Collector render) {
  std::lock_guard lock(collectors_mu_);
  const int id = next_collector_id_++;
  collectors_.emplace(id, std::move(render));
  return id;
}

void MetricsRegistry::RemoveCollector(int id) {
  std::lock_guard lock(collectors_mu_);
  collectors_.erase(id);
}

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

void Family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  AppendMetricFamily(out, name, type, help);
}

// Label values here are function names (validated DNS labels) and closed sets, so they need no
// escaping; keep it that way rather than escaping on every scrape.
template <typename Pick>  // (const FunctionShardMetrics&) -> const ShardHistogram&
void RenderHistogram(std::string& out, std::string_view metric, const std::string& labels,
                     const FunctionMetrics& fm, int shards, Pick pick) {
  std::uint64_t cumulative = 0, total = 0, sum_nanos = 0;
  std::array<std::uint64_t, kLatencyBuckets.size() + 1> buckets{};
  for (int s = 0; s < shards; ++s) {
    const ShardHistogram& h = pick(fm.shard(s));
    for (std::size_t i = 0; i < buckets.size(); ++i) buckets[i] += h.BucketCount(i);
    total += h.Count();
    sum_nanos += h.SumNanos();
  }
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    cumulative += buckets[i];
    fmt::format_to(std::back_inserter(out), "{}_bucket{{{},le=\"{}\"}} {}\n", metric, labels,
                   kLatencyBuckets[i], cumulative);
  }
  cumulative += buckets.back();
  // +Inf must equal _count; totals are read separately, so use the larger to stay monotonic.
  fmt::format_to(std::back_inserter(out), "{}_bucket{{{},le=\"+Inf\"}} {}\n", metric, labels,
                 std::max(cumulative, total));
  fmt::format_to(std::back_inserter(out), "{}_sum{{{}}} {:.9f}\n", metric, labels,
                 static_cast<double>(sum_nanos) / 1e9);
  fmt::format_to(std::back_inserter(out), "{}_count{{{}}} {}\n", metric, labels,
                 std::max(cumulative, total));
}

// Gateway filter stages: one series per stage and counter, summed over the shards.
void RenderFilters(std::string& out, const std::vector<FilterMetricsPtr>& filters, int shards) {
  auto it = std::back_inserter(out);
  using Pick = const ShardCounter& (*)(const FilterStageCounters&);
  struct Family {
    std::string_view name, help;
    Pick pick;
  };
  static constexpr std::array<Family, 4> kFamilies = {{
      {"wisp_filter_events_in_total", "Events that reached a filter stage.",
       [](const FilterStageCounters& c) -> const ShardCounter& { return c.in; }},
      {"wisp_filter_events_out_total", "Events a filter stage passed on (a window: its batches).",
       [](const FilterStageCounters& c) -> const ShardCounter& { return c.out; }},
      {"wisp_filter_events_without_field_total",
       "Events a numeric filter passed unchanged because the field was missing.",
       [](const FilterStageCounters& c) -> const ShardCounter& { return c.without_field; }},
      {"wisp_filter_window_overflow_total",
       "Events dropped because the chain's window buffers were full.",
       [](const FilterStageCounters& c) -> const ShardCounter& { return c.overflow; }},
  }};
  for (const Family& family : kFamilies) {
    fmt::format_to(it, "# HELP {} {}\n# TYPE {} counter\n", family.name, family.help, family.name);
    for (const auto& fm : filters) {
      for (std::size_t i = 0; i < fm->stages().size(); ++i) {
        std::uint64_t n = 0;
        for (int s = 0; s < shards; ++s) n += family.pick(fm->shard(s).stages[i]).Get();
        const FilterMetrics::Stage& stage = fm->stages()[i];
        fmt::format_to(it, "{}{{function=\"{}\",trigger=\"{}\",filter=\"{}\"}} {}\n", family.name,
                       fm->function(), stage.trigger, stage.filter, n);
      }
    }
  }
  fmt::format_to(it,
                 "# HELP wisp_filter_keys_evicted_total Keys whose filter state was dropped to "
                 "stay within max_keys.\n# TYPE wisp_filter_keys_evicted_total counter\n");
  for (const auto& fm : filters) {
    for (std::size_t t = 0; t < fm->trigger_count(); ++t) {
      const bool has_stages = std::any_of(fm->stages().begin(), fm->stages().end(),
                                          [t](const auto& stage) { return stage.trigger == t; });
      if (!has_stages) continue;
      std::uint64_t n = 0;
      for (int s = 0; s < shards; ++s) n += fm->shard(s).keys_evicted[t].Get();
      fmt::format_to(it, "wisp_filter_keys_evicted_total{{function=\"{}\",trigger=\"{}\"}} {}\n",
                     fm->function(), t, n);
    }
  }
}

}  // namespace

std::string MetricsRegistry::RenderPrometheus(std::string_view version,
                                              std::string_view commit) const {
  std::vector<FunctionMetricsPtr> functions;
  std::vector<FilterMetricsPtr> filters;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, fm] : functions_) functions.push_back(fm);
    for (const auto& [name, fm] : filters_) {
      if (!fm->stages().empty()) filters.push_back(fm);
    }
  }
  std::string out;
  out.reserve(4096 + functions.size() * 4096);
  auto it = std::back_inserter(out);

  fmt::format_to(it,
                 "# HELP wisp_build_info Build of this node.\n# TYPE wisp_build_info gauge\n"
                 "wisp_build_info{{version=\"{}\",commit=\"{}\"}} 1\n",
                 version, commit);
  fmt::format_to(it,
                 "# HELP wisp_node_shards Worker shards (event loops) of this node.\n"
                 "# TYPE wisp_node_shards gauge\nwisp_node_shards {}\n",
                 shards_);
  fmt::format_to(it,
                 "# HELP wisp_functions Functions deployed on this node.\n"
                 "# TYPE wisp_functions gauge\nwisp_functions {}\n",
                 functions.size());

  static constexpr std::array<std::string_view, 6> kClasses = {"other", "1xx", "2xx",
                                                               "3xx",   "4xx", "5xx"};
  out +=
      "# HELP wisp_http_responses_total HTTP responses sent, by status class.\n"
      "# TYPE wisp_http_responses_total counter\n";
  for (std::size_t c = 1; c < kClasses.size(); ++c) {
    std::uint64_t n = 0;
    for (const auto& h : http_) n += h->responses_by_class[c].Get();
    fmt::format_to(it, "wisp_http_responses_total{{code=\"{}\"}} {}\n", kClasses[c], n);
  }
  std::uint64_t accepted = 0;
  std::int64_t open = 0;
  for (const auto& h : http_) {
    accepted += h->connections_accepted.Get();
    open += h->connections_open.load(std::memory_order_relaxed);
  }
  fmt::format_to(it,
                 "# HELP wisp_http_connections_accepted_total TCP connections accepted.\n"
                 "# TYPE wisp_http_connections_accepted_total counter\n"
                 "wisp_http_connections_accepted_total {}\n"
                 "# HELP wisp_http_connections_open TCP connections open now.\n"
                 "# TYPE wisp_http_connections_open gauge\nwisp_http_connections_open {}\n",
                 accepted, open);
  {
    std::lock_guard lock(collectors_mu_);
    for (const auto& [id, render] : collectors_) render(out);
  }

  std::uint64_t archived = 0, archived_bytes = 0, archive_errors = 0;
  for (const auto& a : archive_) {
    archived += a->records.Get();
    archived_bytes += a->bytes.Get();
    archive_errors += a->write_errors.Get();
  }
  fmt::format_to(it,
                 "# HELP wisp_archive_records_total Records appended to the event archive.\n"
                 "# TYPE wisp_archive_records_total counter\nwisp_archive_records_total {}\n"
                 "# HELP wisp_archive_bytes_total Bytes written to event archive segments.\n"
                 "# TYPE wisp_archive_bytes_total counter\nwisp_archive_bytes_total {}\n"
                 "# HELP wisp_archive_write_errors_total Failed archive writes (records dropped).\n"
                 "# TYPE wisp_archive_write_errors_total counter\n"
                 "wisp_archive_write_errors_total {}\n",
                 archived, archived_bytes, archive_errors);

  if (functions.empty()) return out;

  const int shards = shards_;
  auto sum = [shards](const FunctionMetrics& fm, auto pick) {
    decltype(pick(fm.shard(0))) total{};
    for (int s = 0; s < shards; ++s) total += pick(fm.shard(s));
    return total;
  };
  using M = const FunctionShardMetrics&;

  Family(out, "wisp_function_invocations_total", "counter", "Function invocations, by outcome.");
  // HTTP series always exist (every function can be invoked); others once they have counts.
  auto trigger_used = [&](const FunctionMetrics& fm, std::size_t t) {
    return t == 0 ||
           sum(fm, [t](M m) { return m.by_trigger[t].ok.Get() + m.by_trigger[t].error.Get(); }) > 0;
  };
  auto trigger_name = [](std::size_t t) { return TriggerKindName(static_cast<TriggerKind>(t)); };
  for (const auto& fm : functions) {
    for (std::size_t t = 0; t < kTriggerKindCount; ++t) {
      if (!trigger_used(*fm, t)) continue;
      const auto ok = sum(*fm, [t](M m) { return m.by_trigger[t].ok.Get(); });
      const auto err = sum(*fm, [t](M m) { return m.by_trigger[t].error.Get(); });
      for (auto [status, n] : {std::pair{"success", ok}, std::pair{"error", err}}) {
        fmt::format_to(it,
                       "wisp_function_invocations_total{{function=\"{}\",runtime=\"{}\","
                       "trigger=\"{}\",status=\"{}\"}} {}\n",
                       fm->name(), fm->runtime(), trigger_name(t), status, n);
      }
    }
  }
  Family(out, "wisp_function_errors_total", "counter", "Failed invocations, by error kind.");
  for (const auto& fm : functions) {
    for (std::size_t k = 1; k < kStatusCodeCount; ++k) {
      const auto n = sum(*fm, [k](M m) { return m.errors_by_kind[k].Get(); });
      if (n == 0) continue;
      fmt::format_to(it, "wisp_function_errors_total{{function=\"{}\",kind=\"{}\"}} {}\n",
                     fm->name(), StatusCodeName(static_cast<StatusCode>(k)), n);
    }
  }
  constexpr auto kTimeout = static_cast<std::size_t>(StatusCode::kDeadlineExceeded);
  Family(out, "wisp_function_timeouts_total", "counter", "Invocations stopped at their timeout.");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_timeouts_total{{function=\"{}\"}} {}\n", fm->name(),
                   sum(*fm, [](M m) { return m.errors_by_kind[kTimeout].Get(); }));
  }
  Family(out, "wisp_function_cold_starts_total", "counter", "Instances created (cold starts).");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_cold_starts_total{{function=\"{}\",runtime=\"{}\"}} {}\n",
                   fm->name(), fm->runtime(), sum(*fm, [](M m) { return m.cold_starts.Get(); }));
  }
  Family(out, "wisp_function_emits_total", "counter", "Actions emitted by handlers.");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_emits_total{{function=\"{}\"}} {}\n", fm->name(),
                   sum(*fm, [](M m) { return m.emits.Get(); }));
  }
  Family(out, "wisp_function_emit_failures_total", "counter",
         "Actions that could not be handed to the broker.");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_emit_failures_total{{function=\"{}\"}} {}\n", fm->name(),
                   sum(*fm, [](M m) { return m.emit_failures.Get(); }));
  }
  Family(out, "wisp_function_dead_letters_total", "counter",
         "Events refused before the function ran (malformed payload).");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_dead_letters_total{{function=\"{}\"}} {}\n", fm->name(),
                   sum(*fm, [](M m) { return m.dead_letters.Get(); }));
  }
  Family(out, "wisp_function_instances", "gauge", "Warm instances, idle or busy.");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_instances{{function=\"{}\",runtime=\"{}\"}} {}\n", fm->name(),
                   fm->runtime(), sum(*fm, [](M m) { return m.instances.load(kRelaxed); }));
  }
  Family(out, "wisp_function_instances_by_state", "gauge",
         "Instances by lifecycle state (starting, idle, busy, draining).");
  static constexpr const char* kStates[] = {"starting", "idle", "busy", "draining"};
  for (const auto& fm : functions) {
    for (std::size_t st = 0; st < 4; ++st) {
      fmt::format_to(it,
                     "wisp_function_instances_by_state{{function=\"{}\",runtime=\"{}\","
                     "state=\"{}\"}} {}\n",
                     fm->name(), fm->runtime(), kStates[st],
                     sum(*fm, [st](M m) { return m.instances_by_state[st].load(kRelaxed); }));
    }
  }
  Family(out, "wisp_function_desired_instances", "gauge",
         "Instances the autoscaler recommends now, over all shards.");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_desired_instances{{function=\"{}\"}} {}\n", fm->name(),
                   sum(*fm, [](M m) { return m.desired_instances.load(kRelaxed); }));
  }
  Family(out, "wisp_autoscaler_decisions_total", "counter",
         "Autoscaler decisions that changed a function's instance count, by reason.");
  for (const auto& fm : functions) {
    for (std::size_t reason = 0; reason < kScaleReasonCount; ++reason) {
      const auto count = sum(*fm, [reason](M m) { return m.autoscaler_decisions[reason].Get(); });
      if (count == 0) continue;  // only the reasons that occurred, to keep the page short
      fmt::format_to(it, "wisp_autoscaler_decisions_total{{function=\"{}\",reason=\"{}\"}} {}\n",
                     fm->name(), ScaleReasonName(static_cast<ScaleReason>(reason)), count);
    }
  }
  Family(out, "wisp_function_warm_starts_total", "counter",
         "Calls that found a ready instance (warm hits; warm hit rate = warm / (warm + cold)).");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_warm_starts_total{{function=\"{}\",runtime=\"{}\"}} {}\n",
                   fm->name(), fm->runtime(), sum(*fm, [](M m) { return m.warm_starts.Get(); }));
  }
  Family(out, "wisp_function_rejected_total", "counter",
         "Calls refused with 429 because the function's wait queue was full.");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_rejected_total{{function=\"{}\"}} {}\n", fm->name(),
                   sum(*fm, [](M m) { return m.rejected.Get(); }));
  }
  Family(out, "wisp_function_queue_depth", "gauge", "Calls waiting for an instance now.");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_queue_depth{{function=\"{}\"}} {}\n", fm->name(),
                   sum(*fm, [](M m) { return m.queue_depth.load(kRelaxed); }));
  }
  Family(out, "wisp_function_in_flight", "gauge", "Invocations running now.");
  for (const auto& fm : functions) {
    fmt::format_to(it, "wisp_function_in_flight{{function=\"{}\"}} {}\n", fm->name(),
                   sum(*fm, [](M m) { return m.in_flight.load(kRelaxed); }));
  }
  Family(out, "wisp_function_duration_seconds", "histogram", "Handler run time.");
  for (const auto& fm : functions) {
    for (std::size_t t = 0; t < kTriggerKindCount; ++t) {
      if (!trigger_used(*fm, t)) continue;
      RenderHistogram(out, "wisp_function_duration_seconds",
                      fmt::format("function=\"{}\",runtime=\"{}\",trigger=\"{}\"", fm->name(),
                                  fm->runtime(), trigger_name(t)),
                      *fm, shards, [t](const FunctionShardMetrics& m) -> const ShardHistogram& {
                        return m.by_trigger[t].duration;
                      });
    }
  }
  Family(out, "wisp_function_cold_start_seconds", "histogram", "Time to create an instance.");
  for (const auto& fm : functions) {
    RenderHistogram(out, "wisp_function_cold_start_seconds",
                    fmt::format("function=\"{}\",runtime=\"{}\"", fm->name(), fm->runtime()), *fm,
                    shards, [](const FunctionShardMetrics& m) -> const ShardHistogram& {
                      return m.cold_start_duration;
                    });
  }
  Family(out, "wisp_function_queue_seconds", "histogram", "Time calls waited for an instance.");
  for (const auto& fm : functions) {
    RenderHistogram(
        out, "wisp_function_queue_seconds", fmt::format("function=\"{}\"", fm->name()), *fm, shards,
        [](const FunctionShardMetrics& m) -> const ShardHistogram& { return m.queue_wait; });
  }
  if (!filters.empty()) RenderFilters(out, filters, shards);
  return out;
}

}  // namespace wisp
