#include "cli/detect_command.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "detect/series_csv.h"
#include "fmt/format.h"
#include "wisp/anomaly_detector.h"

namespace wisp {

namespace {

// `--algorithm rul`: timestamp,rul,low,high in seconds, empty while there is no crossing ahead.
Status RunRemainingLife(const DetectorParams& params, const detect::Series& series,
                        const std::vector<size_t>& columns, std::ostream& out) {
  ASSIGN_OR_RETURN(RulParams rul, ParseRulParams(params));
  if (!rul.time_field.empty()) {
    return InvalidArgument("rul: time_field is for manifests; the CSV's timestamp column is used");
  }
  if (columns.size() != 1) {
    return InvalidArgument(
        fmt::format("rul takes one health column and the file has {} ({}); pick one with --column "
                    "NAME",
                    columns.size(), fmt::join(series.columns, ", ")));
  }
  ASSIGN_OR_RETURN(RemainingLifeEstimator estimator,
                   RemainingLifeEstimator::Create(rul.failure_threshold, rul.half_life_points,
                                                  rul.min_points, rul.trend));
  auto seconds = [](double s) { return std::isinf(s) ? std::string() : fmt::format("{:.3f}", s); };
  std::string text = "timestamp,rul,low,high\n";
  for (size_t r = 0; r < series.rows(); ++r) {
    RulEstimate e =
        estimator.Update(series.times[r], series.values[r * series.width() + columns[0]]);
    text += fmt::format("{},{},{},{}\n", series.timestamps[r], seconds(e.rul_seconds),
                        seconds(e.rul_low_seconds), seconds(e.rul_high_seconds));
  }
  out << text;
  return Status::Ok();
}

}  // namespace

Status RunDetect(const DetectOptions& options, std::string_view csv, std::ostream& out) {
  DetectorParams params;
  for (const std::string& p : options.params) RETURN_IF_ERROR(ParseDetectorParam(p, params));
  ASSIGN_OR_RETURN(detect::Series series, detect::ParseSeriesCsv(csv));

  // Which columns feed the detector.
  std::vector<size_t> columns;
  if (!options.column.empty()) {
    for (size_t i = 0; i < series.width(); ++i) {
      if (series.columns[i] == options.column) columns.push_back(i);
    }
    if (columns.empty()) {
      return InvalidArgument(fmt::format("no column '{}' in the header (columns: {})",
                                         options.column, fmt::join(series.columns, ", ")));
    }
  } else {
    for (size_t i = 0; i < series.width(); ++i) columns.push_back(i);
  }
  if (options.algorithm == kRemainingLifeAlgorithm)
    return RunRemainingLife(params, series, columns, out);
  // A multivariate detector takes all the chosen columns unless told otherwise.
  if (columns.size() > 1 && !params.contains("dims")) {
    std::string name =
        options.algorithm == "best" ? std::string(kBestAnomalyDetector) : options.algorithm;
    if (name == "mahalanobis") params["dims"] = std::to_string(columns.size());
  }
  ASSIGN_OR_RETURN(AnomalyDetectorPtr detector, CreateAnomalyDetector(options.algorithm, params));
  if (detector->Dimensions() != columns.size()) {
    return InvalidArgument(fmt::format(
        "'{}' takes {} value column(s) per row and the file has {} ({}); pick one with --column "
        "NAME, or use --algorithm mahalanobis for several",
        detector->Name(), detector->Dimensions(), columns.size(), fmt::join(series.columns, ", ")));
  }

  std::string text = "timestamp,score,label\n";
  std::vector<double> row(columns.size());
  for (size_t r = 0; r < series.rows(); ++r) {
    for (size_t c = 0; c < columns.size(); ++c) {
      row[c] = series.values[r * series.width() + columns[c]];
    }
    ASSIGN_OR_RETURN(AnomalyScore s, detector->UpdateVector(series.times[r], row));
    text += fmt::format("{},{:.6f},{}\n", series.timestamps[r], s.score, s.anomaly ? 1 : 0);
  }
  out << text;
  return Status::Ok();
}

DetectCommand::DetectCommand(CLI::App& app) {
  command_ = app.add_subcommand(
      "detect", "Score a CSV time series with an anomaly detector (prints timestamp,score,label)");
  command_
      ->add_option(
          "--algorithm,-a", options_.algorithm,
          "Detector: best, contextual, gaussian, ewma, cusum, knn, ensemble, mahalanobis, or rul "
          "(remaining useful life: prints timestamp,rul,low,high)")
      ->capture_default_str();
  command_->add_option("--param,-p", options_.params,
                       "Detector parameter k=v (repeatable; docs/anomaly-detection.md)");
  command_->add_option("--column,-c", options_.column, "Value column to score (by header name)");
  command_->add_option("file", options_.file, "CSV file with a header, or - for stdin")->required();
}

bool DetectCommand::parsed() const { return command_->parsed(); }

int DetectCommand::Run() {
  std::string text;
  if (options_.file == "-") {
    std::stringstream buffer;
    buffer << std::cin.rdbuf();
    text = buffer.str();
  } else {
    std::ifstream in(options_.file, std::ios::binary);
    if (!in) {
      std::cerr << "error: cannot read " << options_.file << "\n";
      return 1;
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    text = buffer.str();
  }
  Status status = RunDetect(options_, text, std::cout);
  if (!status.ok()) {
    std::cerr << "error: " << (options_.file == "-" ? "stdin" : options_.file) << ": "
              << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace wisp
