// Fuzzes the gateway filters with what a deploy and a broker can send them: the input is a
// manifest, a line "%%", then messages (one per line). Each message line is a control byte
// (low 2 bits: one of four topics; the rest: how far time moves, in 100 ms steps; 0xff: flush
// instead) and a payload, decoded as JSON when it parses, else as the node reads plain text.
// Beyond "no crash" it checks the chain's promises: bounded keys and buffered events, batches
// that say how many values they hold, and no deadline left in the past after a flush.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "gateway/filter_chain.h"
#include "wisp/function_spec.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckOutputs(const std::vector<wisp::FilterOutput>& outputs) {
  for (const wisp::FilterOutput& out : outputs) {
    if (!out.batch) continue;
    Check(out.value.is_object() && out.value.contains("values"));
    Check(out.value["values"].is_array());
    Check(out.value["count"].get<std::size_t>() == out.value["values"].size());
    Check(out.value["start"].get<std::int64_t>() <= out.value["end"].get<std::int64_t>());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t split = input.find("\n%%\n");
  if (split == std::string_view::npos) return 0;
  auto specs = wisp::ParseManifest(input.substr(0, split + 1), "fuzz.yaml");
  if (!specs.ok()) return 0;

  struct Built {
    std::shared_ptr<wisp::FilterMetrics> metrics;
    std::unique_ptr<wisp::FilterChain> chain;
    std::size_t max_keys;
  };
  std::vector<Built> chains;
  for (const wisp::FunctionSpec& spec : *specs) {
    auto metrics = std::make_shared<wisp::FilterMetrics>(spec.name, wisp::FilterStagesOf(spec),
                                                         spec.mqtt_triggers.size(), 1);
    for (std::size_t t = 0; t < spec.mqtt_triggers.size(); ++t) {
      if (spec.mqtt_triggers[t].filters.empty()) continue;
      auto chain = wisp::FilterChain::Create(
          spec.mqtt_triggers[t], {metrics->TriggerStages(0, t), &metrics->KeysEvicted(0, t)});
      Check(chain.ok());  // every spec the parser accepts builds
      chains.push_back({metrics, std::move(*chain), spec.mqtt_triggers[t].max_keys});
    }
  }
  if (chains.empty()) return 0;

  static const std::string kTopics[] = {"plant/a/pump/1", "plant/a/pump/2", "plant/b/valve/1", "x"};
  auto now = wisp::FilterTime(std::chrono::milliseconds(1'700'000'000'000));
  std::vector<wisp::FilterOutput> out;
  std::string_view messages = input.substr(split + 4);
  while (!messages.empty()) {
    const std::size_t end = messages.find('\n');
    std::string_view line = messages.substr(0, end);
    messages = end == std::string_view::npos ? std::string_view() : messages.substr(end + 1);
    if (line.empty()) continue;
    const auto control = static_cast<std::uint8_t>(line[0]);
    std::string_view payload = line.substr(1);
    if (control == 0xff) {
      now += std::chrono::seconds(5);
      for (Built& b : chains) {
        out.clear();
        b.chain->Flush(now, out);
        CheckOutputs(out);
        auto deadline = b.chain->NextDeadline();
        Check(!deadline || *deadline > now);
      }
      continue;
    }
    now += std::chrono::milliseconds(100) * (control >> 2);
    auto value = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded()) value = wisp::PlainPayloadValue(payload);
    for (Built& b : chains) {
      out.clear();
      b.chain->Push(kTopics[control & 3], value, now, out);
      CheckOutputs(out);
      Check(b.chain->key_count() <= b.max_keys);
      Check(b.chain->buffered_events() <= wisp::kMaxBufferedEvents);
    }
  }
  return 0;
}
