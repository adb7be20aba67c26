// Fuzzes ParseManifest, which reads the wisp.yaml of every deploy request. Beyond "no crash",
// it checks the parser's promises: errors are InvalidArgument naming the source, and every
// accepted spec is within the documented limits (docs/manifest.md).
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>
#include <vector>

#include "wisp/bundle.h"
#include "wisp/function_spec.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// What src/gateway/filter_chain.cc relies on for an accepted filter.
void CheckFilter(const wisp::FilterSpec& filter) {
  using std::chrono::milliseconds;
  if (const auto* r = std::get_if<wisp::RangeFilterSpec>(&filter)) {
    Check(r->min || r->max);
    Check(!r->min || !r->max || *r->min <= *r->max);
  } else if (const auto* d = std::get_if<wisp::DeadbandFilterSpec>(&filter)) {
    Check(d->delta > 0 && std::isfinite(d->delta));
  } else if (const auto* e = std::get_if<wisp::EwmaFilterSpec>(&filter)) {
    Check(e->alpha > 0 && e->alpha <= 1);
  } else if (const auto* s = std::get_if<wisp::DownsampleFilterSpec>(&filter)) {
    Check((s->every > 0) != (s->interval > milliseconds(0)));
  } else if (const auto* l = std::get_if<wisp::RateLimitFilterSpec>(&filter)) {
    Check(l->per_second > 0 && std::isfinite(l->per_second) && l->burst >= 1);
  } else {
    const auto& w = std::get<wisp::WindowFilterSpec>(filter);
    if (w.count > 0) {
      Check(w.count <= 10000 && w.count_slide >= 1 && w.count_slide <= w.count);
      Check(w.duration == milliseconds(0));
    } else {
      Check(w.slide > milliseconds(0) && w.slide <= w.duration);
      Check(w.duration % w.slide == milliseconds(0) && w.duration / w.slide <= 1000);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  wisp::Result<std::vector<wisp::FunctionSpec>> specs = wisp::ParseManifest(text, "fuzz.yaml");
  if (!specs.ok()) {
    Check(specs.status().code() == wisp::StatusCode::kInvalidArgument);
    Check(specs.status().message().rfind("fuzz.yaml: ", 0) == 0);
    return 0;
  }
  Check(!specs->empty());
  for (const wisp::FunctionSpec& f : *specs) {
    Check(wisp::IsValidFunctionName(f.name));
    Check(!f.runtime.empty());
    Check(wisp::IsValidBundlePath(f.handler_file));
    Check(!f.handler_entry.empty());
    Check(!f.version.empty());
    Check(f.limits.memory_bytes >= (1u << 20) && f.limits.memory_bytes <= (4ull << 30));
    Check(f.limits.timeout.count() >= 1 && f.limits.timeout.count() <= 15 * 60 * 1000);
    Check(f.concurrency_max >= 1 && f.concurrency_max <= 1024);
    Check(f.scale_min >= 0 && f.scale_min <= f.scale_max && f.scale_max <= 1000);
    for (const wisp::MqttTriggerSpec& t : f.mqtt_triggers) {
      Check(t.filters.size() <= 16);
      Check(t.max_keys >= 1 && t.max_keys <= 1'000'000);
      for (const wisp::FilterSpec& filter : t.filters) CheckFilter(filter);
    }
  }
  return 0;
}
