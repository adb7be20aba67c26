// AnomalyDetector: an online detector for one stream (one key: one sensor, one device).
//
// Each Update takes the next point of the stream (timestamp in seconds, one value or a vector of
// values) and returns a score in [0, 1] (higher = more anomalous) and a flag, set when the score
// reaches the detector's own threshold (the `threshold` parameter). Work per point is O(1) or
// O(window); memory is bounded by the parameters. Points are expected in time order; the
// detectors use the order of calls, not the timestamps' spacing.
//
// State: SaveState returns the whole learned state (parameters included) as bytes, so a detector
// can live in the state store between events; LoadState on a detector built with the same name
// and parameters restores it, after which it gives exactly the scores the saved one would have.
// LoadState fails with InvalidArgument on bytes from another detector or on damaged bytes, and
// leaves the detector unchanged then.
//
// Creation: CreateAnomalyDetector(name, params) builds a registered detector. Parameters are
// strings ("window" -> "500"); an unknown name is NotFound (the message lists the known ones),
// an unknown or out-of-range parameter is InvalidArgument naming it. Nothing fails after that:
// Update never fails for scalar input; UpdateVector fails with InvalidArgument when the vector's
// size does not match the detector's.
//
// Ownership and threads: the caller owns the detector; a detector is not thread-safe (one thread
// at a time, e.g. the shard that owns the key).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "wisp/registry.h"
#include "wisp/status.h"

namespace wisp {

struct AnomalyScore {
  double score = 0;      // in [0, 1]
  bool anomaly = false;  // score >= the detector's threshold
};

class AnomalyDetector {
 public:
  virtual ~AnomalyDetector() = default;

  // The registered name ("gaussian", "contextual", ...).
  virtual std::string_view Name() const = 0;

  // Values per point: 1 for univariate detectors, the configured size for multivariate ones.
  virtual size_t Dimensions() const { return 1; }

  // Scores the next point of a univariate stream and learns from it. A multivariate detector
  // of more than one dimension returns a zero score here.
  virtual AnomalyScore Update(double timestamp, double value) = 0;

  // Scores the next point given as a vector; InvalidArgument when values.size() !=
  // Dimensions(). The default passes a one-value vector to Update.
  virtual Result<AnomalyScore> UpdateVector(double timestamp, std::span<const double> values);

  virtual std::string SaveState() const = 0;
  virtual Status LoadState(std::string_view bytes) = 0;
};
using AnomalyDetectorPtr = std::unique_ptr<AnomalyDetector>;

using DetectorParams = std::map<std::string, std::string, std::less<>>;
using AnomalyDetectorFactory = std::function<Result<AnomalyDetectorPtr>(const DetectorParams&)>;
using AnomalyDetectorRegistry = Registry<AnomalyDetectorFactory>;

// The name `--algorithm best` and `algorithm: best` stand for (docs/anomaly-detection.md says
// why).
inline constexpr std::string_view kBestAnomalyDetector = "contextual";

// Registers the built-in detectors (gaussian, ewma, contextual, knn, cusum, ensemble,
// mahalanobis). Idempotent; CreateAnomalyDetector calls it.
void RegisterBuiltinAnomalyDetectors();

// Builds the detector registered as `name` ("best" is kBestAnomalyDetector).
Result<AnomalyDetectorPtr> CreateAnomalyDetector(std::string_view name,
                                                 const DetectorParams& params = {});

// Registered names, sorted.
std::vector<std::string> AnomalyDetectorNames();

// Parses "k=v" into params; InvalidArgument without '=' or with an empty key.
Status ParseDetectorParam(std::string_view key_equals_value, DetectorParams& params);

// Remaining useful life from a health-indicator stream. The healthy side of the failure
// threshold is the side the stream starts on (health may fall towards it or rise towards it). Fits
// a linear degradation trend over the recent points (exponential forgetting, half-life
// `half_life_points`) and extrapolates it to the failure threshold. The interval comes from the
// standard errors of the slope and of the current level (about 90%: +- 1.645 se each). Cheap (O(1)
// per point), not thread-safe, never fails after construction.
struct RulEstimate {
  bool valid = false;      // false until enough points, or when the trend does not head for the
                           // threshold (then the rul fields are +infinity)
  double slope = 0;        // health units per second
  double rul_seconds = 0;  // time from the last point to the predicted crossing
  double rul_low_seconds = 0;
  double rul_high_seconds = 0;
  bool failed = false;  // the fitted health has already crossed the threshold
};

// The degradation model: a straight line in health, or an exponential one (a straight line in
// log(health), for wear that accelerates, e.g. vibration energy growing towards a limit; health
// and threshold must then be positive, a health <= 0 counts as the smallest positive number).
enum class RulTrend { kLinear, kExponential };

class RemainingLifeEstimator {
 public:
  // InvalidArgument unless half_life_points >= 2, min_points >= 3, and (exponential) the
  // threshold is > 0.
  static Result<RemainingLifeEstimator> Create(double failure_threshold, double half_life_points,
                                               int min_points = 10,
                                               RulTrend trend = RulTrend::kLinear);
  RulEstimate Update(double timestamp, double health);

  std::string SaveState() const;
  Status LoadState(std::string_view bytes);

 private:
  RemainingLifeEstimator() = default;
  double threshold_ = 0;
  double decay_ = 1;
  int min_points_ = 10;
  bool log_scale_ = false;  // RulTrend::kExponential: fit log(health); threshold_ is logged too
  double side_ = 1;         // +1: healthy above the threshold, -1: below (from the first point)
  double t0_ = 0;           // first timestamp: keeps the sums well conditioned
  double count_ = 0, weight_ = 0, sum_t_ = 0, sum_y_ = 0, sum_tt_ = 0, sum_ty_ = 0, sum_yy_ = 0;
};

// Parameters of a remaining-life stream when run without code (`algorithm: rul` in a
// `runtime: detector` function, `wisp detect --algorithm rul`). Parsed from detector params:
// threshold (the failure threshold, required), half_life (points, default 50), min_points
// (default 10), horizon (seconds; alert when the low end of the interval is within it, or the
// health has crossed; default 0 = alert only on the crossing) and time_field (a payload field
// holding the reading's time in seconds; empty = the event's arrival time) and trend (linear,
// the default, or exponential).
struct RulParams {
  double failure_threshold = 0;
  RulTrend trend = RulTrend::kLinear;
  double half_life_points = 50;
  int min_points = 10;
  double horizon_seconds = 0;
  std::string time_field;

  // Whether an estimate calls for an alert under these parameters.
  bool Alert(const RulEstimate& e) const {
    return e.failed || (e.valid && e.rul_low_seconds <= horizon_seconds);
  }
};

// The name that selects the remaining-life estimator instead of an anomaly detector.
inline constexpr std::string_view kRemainingLifeAlgorithm = "rul";

// InvalidArgument (naming the parameter) for a missing threshold, an unknown parameter or a
// value out of range.
Result<RulParams> ParseRulParams(const DetectorParams& params);

}  // namespace wisp
