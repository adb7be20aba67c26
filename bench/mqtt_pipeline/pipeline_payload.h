// The MQTT pipeline benchmark's readings and the arithmetic on what comes back (mqtt_load.cc).
//
// A reading is one line of JSON, ~100 bytes, the same in every scenario:
//   {"pump":"p07","line":"press-3","seq":41,"t":123456789012,"vibration":2.41,"unit":"mm/s"}
// `seq` numbers the readings from 0; `t` is the intended send time, CLOCK_MONOTONIC in ns (the
// publisher and the subscriber run on one host). Reading `seq` is above the vibration limit
// (7.1 mm/s) when seq % action_every == action_every - 1, so with action_every = 100 exactly 1%
// of the readings call for an action, spread evenly. No newline inside: the stock relay
// (mosquitto_sub | mosquitto_pub -l) forwards line by line.
//
// Header-only and free of libmosquitto so that the unit tests can check it.
// Threads: pure functions, callable from any thread.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>
#include <vector>

namespace wisp::bench {

inline constexpr double kVibrationLimit = 7.1;  // mm/s; the alert function's threshold

// True when reading `seq` is above the limit (needs an action). action_every >= 1.
inline bool IsAction(std::int64_t seq, std::int64_t action_every) {
  return seq % action_every == action_every - 1;
}

// How many of the readings 0..count-1 are actions.
inline std::int64_t ActionCount(std::int64_t count, std::int64_t action_every) {
  return count / action_every;  // seq = k * action_every - 1 for k = 1..
}

// Writes reading `seq` into `out` (at least 160 bytes); returns its length, or 0 if it did not
// fit. A negative `seq` is a probe (run.sh's readiness check): always above the limit.
inline std::size_t FormatReading(char* out, std::size_t capacity, std::int64_t seq,
                                 std::int64_t t_ns, std::int64_t action_every) {
  const bool above = seq < 0 || IsAction(seq, action_every);
  // Normal readings wander between 2.00 and 2.49 mm/s; alarms sit well above the limit.
  const double vibration = above ? 9.40 : 2.0 + static_cast<double>((seq < 0 ? 0 : seq) % 50) / 100;
  const int pump = static_cast<int>((seq < 0 ? 0 : seq) % 12) + 1;
  const int n = std::snprintf(
      out, capacity,
      R"({"pump":"p%02d","line":"press-3","seq":%lld,"t":%lld,"vibration":%.2f,"unit":"mm/s"})",
      pump, static_cast<long long>(seq), static_cast<long long>(t_ns), vibration);
  if (n < 0 || static_cast<std::size_t>(n) >= capacity) return 0;
  return static_cast<std::size_t>(n);
}

// Finds the integer after `"key":` in `text`; false when absent or not an integer.
inline bool FindInteger(std::string_view text, std::string_view quoted_key_colon,
                        std::int64_t* value) {
  const std::size_t at = text.find(quoted_key_colon);
  if (at == std::string_view::npos) return false;
  std::size_t i = at + quoted_key_colon.size();
  bool negative = false;
  if (i < text.size() && text[i] == '-') {
    negative = true;
    ++i;
  }
  const std::size_t digits_start = i;
  std::int64_t v = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (i - digits_start >= 18) return false;  // would overflow; no reading has that many
    v = v * 10 + (text[i] - '0');
  }
  if (i == digits_start) return false;
  *value = negative ? -v : v;
  return true;
}

// Reads `seq` and `t` from a payload that carries a reading, as is (raw, relay, echo) or
// wrapped in an alert ({"alert":..,"reading":{...}}). False when either is missing.
inline bool ParseSeqAndTime(std::string_view payload, std::int64_t* seq, std::int64_t* t_ns) {
  return FindInteger(payload, R"("seq":)", seq) && FindInteger(payload, R"("t":)", t_ns);
}

// The q-quantile (0 < q <= 1) of `sorted` by the nearest-rank rule; 0 when empty.
inline std::int64_t Quantile(const std::vector<std::int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  // ceil(q * n), forgiving the rounding of q (0.99 * 1000 must be rank 990, not 991).
  const double exact = q * static_cast<double>(sorted.size());
  auto rank = static_cast<std::size_t>(std::ceil(exact - 1e-9));
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

// Sustained input events per second from the arrival times (ns, in arrival order) of the
// outputs: the rate between the arrivals at `skip` and 1 - `skip` of them, so that start-up
// and the tail are left out, scaled by inputs per output (action_every for the alert
// scenario, 1 when every reading comes out). 0 when there are too few arrivals to tell.
inline double SteadyEventsPerSecond(const std::vector<std::int64_t>& arrivals_ns,
                                    double inputs_per_output, double skip = 0.1) {
  if (arrivals_ns.size() < 10) return 0;
  const auto last = arrivals_ns.size() - 1;
  const auto lo = static_cast<std::size_t>(skip * static_cast<double>(last));
  const auto hi = last - lo;
  const std::int64_t elapsed = arrivals_ns[hi] - arrivals_ns[lo];
  if (hi <= lo || elapsed <= 0) return 0;
  return static_cast<double>(hi - lo) * inputs_per_output * 1e9 / static_cast<double>(elapsed);
}

}  // namespace wisp::bench
