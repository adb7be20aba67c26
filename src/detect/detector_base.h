// Shared machinery of the built-in detectors: parameter parsing, state encoding, the rest
// period, and a CRTP base that derives SaveState/LoadState from one Fields() list per detector.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "wisp/anomaly_detector.h"

namespace wisp::detect {

// Reads typed parameters and remembers which were used, so Finish() can refuse unknown ones.
class ParamReader {
 public:
  ParamReader(std::string_view detector, const DetectorParams& params)
      : detector_(detector), params_(params) {}

  double Double(std::string_view key, double fallback, double min, double max);
  int64_t Int(std::string_view key, int64_t fallback, int64_t min, int64_t max);
  std::string String(std::string_view key, std::string fallback);
  bool Has(std::string_view key) const { return params_.contains(key); }

  // The first error, or InvalidArgument for a parameter no reader asked for.
  Status Finish() const;

 private:
  const std::string* Lookup(std::string_view key);
  std::string detector_;
  const DetectorParams& params_;
  std::vector<std::string> used_;
  Status error_;
};

// Appends fixed-size little-endian fields (the machine's order; states stay on one node).
class StateWriter {
 public:
  template <typename T>
  requires std::is_arithmetic_v<T>
  void operator()(const T& v) { bytes_.append(reinterpret_cast<const char*>(&v), sizeof(T)); }
  void operator()(const std::string& s) {
    (*this)(static_cast<uint64_t>(s.size()));
    bytes_.append(s);
  }
  template <typename T>
  void operator()(const std::vector<T>& v) {
    (*this)(static_cast<uint64_t>(v.size()));
    for (const T& x : v) (*this)(x);
  }
  template <typename T>
  void operator()(const std::deque<T>& v) {
    (*this)(static_cast<uint64_t>(v.size()));
    for (const T& x : v) (*this)(x);
  }
  template <typename K, typename V>
  void operator()(const std::unordered_map<K, V>& m) {
    (*this)(static_cast<uint64_t>(m.size()));
    for (const auto& [k, v] : m) (*this)(k), (*this)(v);
  }
  std::string Take() { return std::move(bytes_); }

 private:
  std::string bytes_;
};

class StateReader {
 public:
  explicit StateReader(std::string_view bytes) : rest_(bytes) {}
  template <typename T>
  requires std::is_arithmetic_v<T>
  void operator()(T& v) {
    if (rest_.size() < sizeof(T)) return Fail();
    std::memcpy(&v, rest_.data(), sizeof(T));
    rest_.remove_prefix(sizeof(T));
  }
  void operator()(std::string& s) {
    uint64_t n = 0;
    (*this)(n);
    if (n > rest_.size()) return Fail();
    s.assign(rest_.substr(0, n));
    rest_.remove_prefix(n);
  }
  template <typename Seq>
  requires requires(Seq s) { s.emplace_back(); }
  void operator()(Seq& v) {
    uint64_t n = 0;
    (*this)(n);
    if (n > rest_.size()) return Fail();  // every element takes at least one byte
    v.clear();
    for (uint64_t i = 0; i < n && ok_; ++i) (*this)(v.emplace_back());
  }
  template <typename K, typename V>
  void operator()(std::unordered_map<K, V>& m) {
    uint64_t n = 0;
    (*this)(n);
    if (n > rest_.size()) return Fail();
    m.clear();
    m.reserve(n);
    for (uint64_t i = 0; i < n && ok_; ++i) {
      K k{};
      V v{};
      (*this)(k), (*this)(v);
      m.emplace(std::move(k), std::move(v));
    }
  }
  bool ok() const { return ok_ && rest_.empty(); }

 private:
  void Fail() {
    ok_ = false;
    rest_ = {};
  }
  std::string_view rest_;
  bool ok_ = true;
};

// Score suppression after a flag (as in CAD OSE): a real fault usually raises many scores in a
// row; reporting only the first keeps one event one alert.
struct RestPeriod {
  int64_t length = 0;
  int64_t remaining = 0;
  AnomalyScore Apply(double score, double threshold) {
    if (remaining > 0) {
      --remaining;
      return {0, false};
    }
    bool flag = score >= threshold;
    if (flag) remaining = length;
    return {score, flag};
  }
  template <typename A>
  void Fields(A& a) {
    a(length), a(remaining);
  }
};

// CRTP base: Derived provides Name() and `template <typename A> void Fields(A&)` listing every
// member that changes. The state starts with the name and the parameters it was built with, so
// a state from another detector or other parameters is refused.
template <typename Derived>
class DetectorBase : public AnomalyDetector {
 public:
  void SetParamSignature(const DetectorParams& params) {
    signature_.clear();
    for (const auto& [k, v] : params) signature_ += k + '=' + v + '\n';
  }
  std::string SaveState() const override {
    StateWriter w;
    std::string name(Name());
    w(name);
    w(signature_);
    const_cast<Derived*>(static_cast<const Derived*>(this))->Fields(w);
    return w.Take();
  }
  Status LoadState(std::string_view bytes) override {
    StateReader r(bytes);
    std::string name, signature;
    r(name);
    if (name != Name()) {
      return InvalidArgument("detector state is not from a '" + std::string(Name()) + "' detector");
    }
    r(signature);
    if (signature != signature_) {
      return InvalidArgument("detector state was saved with other parameters");
    }
    Derived copy = *static_cast<Derived*>(this);
    copy.Fields(r);
    if (!r.ok()) return InvalidArgument("detector state is damaged");
    *static_cast<Derived*>(this) = std::move(copy);
    return Status::Ok();
  }

 private:
  std::string signature_;
};

// Builds a Derived from params with its Create(ParamReader&), refusing unknown parameters.
template <typename Derived>
Result<AnomalyDetectorPtr> MakeWithParams(std::string_view name, const DetectorParams& params) {
  ParamReader reader(name, params);
  auto detector = std::make_unique<Derived>(reader);
  RETURN_IF_ERROR(reader.Finish());
  detector->SetParamSignature(params);
  return AnomalyDetectorPtr(std::move(detector));
}

// Score of a z-score: z^2 / (z^2 + 9), so 3 sigma is 0.5 and 4 sigma 0.64. Unlike a normal
// tail probability it never rounds to exactly 1, so extreme points stay ordered (the NAB
// threshold search and any user threshold can still tell 10 sigma from 30).
inline double ZScoreToScore(double z) {
  if (!std::isfinite(z)) return 1;
  return z * z / (z * z + 9.0);
}
inline constexpr double kFourSigmaScore = 16.0 / 25.0;

// Factories, one per detector file.
Result<AnomalyDetectorPtr> MakeGaussian(const DetectorParams& params);
Result<AnomalyDetectorPtr> MakeEwma(const DetectorParams& params);
Result<AnomalyDetectorPtr> MakeCusum(const DetectorParams& params);
Result<AnomalyDetectorPtr> MakeContextual(const DetectorParams& params);
Result<AnomalyDetectorPtr> MakeKnnConformal(const DetectorParams& params);
Result<AnomalyDetectorPtr> MakeEnsemble(const DetectorParams& params);
Result<AnomalyDetectorPtr> MakeMahalanobis(const DetectorParams& params);

}  // namespace wisp::detect
