// Ensemble: runs several detectors on the same stream and combines their scores (max or mean).
#include <algorithm>
#include <sstream>

#include "detect/detector_base.h"
#include "fmt/format.h"

namespace wisp::detect {
namespace {

class Ensemble : public AnomalyDetector {
 public:
  std::string_view Name() const override { return "ensemble"; }

  AnomalyScore Update(double timestamp, double value) override {
    double combined = 0;
    for (auto& member : members_) {
      double s = member->Update(timestamp, value).score;
      combined = use_max_ ? std::max(combined, s) : combined + s / members_.size();
    }
    return rest_.Apply(combined, threshold_);
  }

  std::string SaveState() const override {
    StateWriter w;
    w(std::string("ensemble"));
    w(signature_);
    for (const auto& member : members_) w(member->SaveState());
    const_cast<RestPeriod&>(rest_).Fields(w);
    return w.Take();
  }

  Status LoadState(std::string_view bytes) override {
    StateReader r(bytes);
    std::string name, signature;
    r(name), r(signature);
    if (name != "ensemble" || signature != signature_) {
      return InvalidArgument("detector state is not from this ensemble");
    }
    std::vector<std::string> states(members_.size());
    for (auto& s : states) r(s);
    RestPeriod rest = rest_;
    rest.Fields(r);
    if (!r.ok()) return InvalidArgument("detector state is damaged");
    // Load into fresh copies first so a failure leaves this ensemble unchanged.
    std::vector<std::string> before;
    for (const auto& member : members_) before.push_back(member->SaveState());
    for (size_t i = 0; i < members_.size(); ++i) {
      Status s = members_[i]->LoadState(states[i]);
      if (!s.ok()) {
        for (size_t j = 0; j < i; ++j) (void)members_[j]->LoadState(before[j]);
        return s;
      }
    }
    rest_ = rest;
    return Status::Ok();
  }

  static Result<AnomalyDetectorPtr> Make(const DetectorParams& params) {
    auto ensemble = std::make_unique<Ensemble>();
    ParamReader p("ensemble", params);
    std::string members = p.String("members", "contextual,gaussian");
    std::string combine = p.String("combine", "max");
    ensemble->threshold_ = p.Double("threshold", 0.99, 0, 1);
    ensemble->rest_.length = p.Int("rest", 0, 0, 1'000'000);
    RETURN_IF_ERROR(p.Finish());
    if (combine != "max" && combine != "mean") {
      return InvalidArgument("ensemble: combine must be 'max' or 'mean', not '" + combine + "'");
    }
    ensemble->use_max_ = combine == "max";
    std::stringstream list(members);
    std::string name;
    std::vector<std::string> names;
    while (std::getline(list, name, ',')) {
      if (name.empty()) continue;
      if (name == "ensemble") return InvalidArgument("ensemble: an ensemble cannot contain one");
      DetectorParams member_params;
      for (const auto& [key, value] : params) {
        if (key.starts_with(name + ".")) member_params[key.substr(name.size() + 1)] = value;
      }
      auto member = CreateAnomalyDetector(name, member_params);
      if (!member.ok()) return member.status().WithContext("ensemble member " + name);
      names.push_back(name);
      ensemble->members_.push_back(std::move(member).value());
    }
    if (ensemble->members_.empty()) return InvalidArgument("ensemble: members is empty");
    for (const auto& [key, value] : params) {
      size_t dot = key.find('.');
      if (dot != std::string::npos &&
          std::find(names.begin(), names.end(), key.substr(0, dot)) == names.end()) {
        return InvalidArgument(fmt::format("ensemble: parameter '{}' names no member", key));
      }
    }
    for (const auto& [k, v] : params) ensemble->signature_ += k + '=' + v + '\n';
    return AnomalyDetectorPtr(std::move(ensemble));
  }

 private:
  std::vector<AnomalyDetectorPtr> members_;
  bool use_max_ = true;
  double threshold_ = 0.9;
  RestPeriod rest_;
  std::string signature_;
};

}  // namespace

Result<AnomalyDetectorPtr> MakeEnsemble(const DetectorParams& params) {
  return Ensemble::Make(params);
}

}  // namespace wisp::detect
