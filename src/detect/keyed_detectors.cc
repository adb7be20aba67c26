#include "detect/keyed_detectors.h"

namespace wisp::detect {

std::string KeyedDetectors::StateKey(std::string_view algorithm, std::string_view key) {
  std::string out = "detector/";
  out.append(algorithm).append("/").append(key);
  return out;
}

Result<AnomalyScore> KeyedDetectors::Update(StateStore& store, std::string_view ns,
                                            std::string_view algorithm,
                                            const DetectorParams& params, std::string_view key,
                                            double timestamp, std::span<const double> values) {
  std::string state_key = StateKey(algorithm, key);
  std::string cache_key = state_key;
  for (const auto& [k, v] : params) cache_key += '\n' + k + '=' + v;
  ASSIGN_OR_RETURN(std::optional<std::string> stored, store.Get(ns, state_key));

  auto it = cache_.find(cache_key);
  bool current = it != cache_.end() && stored && *stored == it->second.written;
  if (!current) {
    if (it == cache_.end() && cache_.size() >= max_cached_) cache_.clear();  // bound memory
    ASSIGN_OR_RETURN(AnomalyDetectorPtr detector, CreateAnomalyDetector(algorithm, params));
    // A state from other parameters or damaged bytes: start the stream afresh.
    if (stored) (void)detector->LoadState(*stored);
    it = cache_.insert_or_assign(cache_key, Entry{std::move(detector), {}}).first;
  }
  ASSIGN_OR_RETURN(AnomalyScore score, it->second.detector->UpdateVector(timestamp, values));
  std::string bytes = it->second.detector->SaveState();
  Status put = store.Put(ns, state_key, bytes);
  if (!put.ok()) {
    cache_.erase(it);  // the store and the cache may disagree now
    return put;
  }
  it->second.written = std::move(bytes);
  return score;
}

Result<RulEstimate> KeyedRemainingLife::Update(StateStore& store, std::string_view ns,
                                               const RulParams& params, std::string_view key,
                                               double timestamp, double health) {
  std::string state_key = KeyedDetectors::StateKey(kRemainingLifeAlgorithm, key);
  ASSIGN_OR_RETURN(std::optional<std::string> stored, store.Get(ns, state_key));
  auto it = cache_.find(state_key);
  bool current = it != cache_.end() && stored && *stored == it->second.written;
  if (!current) {
    if (it == cache_.end() && cache_.size() >= max_cached_) cache_.clear();  // bound memory
    ASSIGN_OR_RETURN(
        RemainingLifeEstimator estimator,
        RemainingLifeEstimator::Create(params.failure_threshold, params.half_life_points,
                                       params.min_points, params.trend));
    // A state from other parameters or damaged bytes: start the stream afresh.
    if (stored) (void)estimator.LoadState(*stored);
    it = cache_.insert_or_assign(state_key, Entry{std::move(estimator), {}}).first;
  }
  RulEstimate estimate = it->second.estimator.Update(timestamp, health);
  std::string bytes = it->second.estimator.SaveState();
  Status put = store.Put(ns, state_key, bytes);
  if (!put.ok()) {
    cache_.erase(it);
    return put;
  }
  it->second.written = std::move(bytes);
  return estimate;
}

}  // namespace wisp::detect
