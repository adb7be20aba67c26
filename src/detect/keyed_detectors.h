// KeyedDetectors: one detector per (algorithm, parameters, key), its state kept in the state
// store so that any instance on any shard, and a restarted node, continue the same stream.
// Used by the detector runtime and by Lua's ctx.detect.
//
// Each Update reads the key's state, restores it unless this object wrote exactly those bytes
// last (then the cached detector is current and restoring is skipped), scores the point and
// writes the new state back. A state saved with other parameters (the function was redeployed
// with new ones) is dropped and the stream starts afresh.
//
// Ownership and threads: owned by one instance, called from its shard thread only.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "wisp/anomaly_detector.h"
#include "wisp/state_store.h"

namespace wisp::detect {

class KeyedDetectors {
 public:
  explicit KeyedDetectors(size_t max_cached = 1024) : max_cached_(max_cached) {}

  // NotFound / InvalidArgument for a bad algorithm or parameters (or a vector of the wrong
  // size), IoError when the store fails.
  Result<AnomalyScore> Update(StateStore& store, std::string_view ns, std::string_view algorithm,
                              const DetectorParams& params, std::string_view key, double timestamp,
                              std::span<const double> values);

  // The store key of a stream's state.
  static std::string StateKey(std::string_view algorithm, std::string_view key);

 private:
  struct Entry {
    AnomalyDetectorPtr detector;
    std::string written;  // the bytes this object last stored for the key
  };
  size_t max_cached_;
  std::unordered_map<std::string, Entry> cache_;
};

// The same for remaining-life streams: one RemainingLifeEstimator per key, its state in the
// store under StateKey("rul", key).
class KeyedRemainingLife {
 public:
  explicit KeyedRemainingLife(size_t max_cached = 1024) : max_cached_(max_cached) {}

  // InvalidArgument for bad parameters, IoError when the store fails.
  Result<RulEstimate> Update(StateStore& store, std::string_view ns, const RulParams& params,
                             std::string_view key, double timestamp, double health);

 private:
  struct Entry {
    RemainingLifeEstimator estimator;
    std::string written;
  };
  size_t max_cached_;
  std::unordered_map<std::string, Entry> cache_;
};

}  // namespace wisp::detect
