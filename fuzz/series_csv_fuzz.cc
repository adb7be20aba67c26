// The series CSV reader (src/detect/series_csv.h) behind `wisp detect`: any bytes must give a
// Series or an InvalidArgument naming a line, never a crash; a parsed series feeds a detector.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "detect/series_csv.h"
#include "wisp/anomaly_detector.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto series = wisp::detect::ParseSeriesCsv(text);
  if (!series.ok()) {
    if (series.status().code() != wisp::StatusCode::kInvalidArgument) __builtin_trap();
    if (series.status().message().find("line ") == std::string::npos) __builtin_trap();
    return 0;
  }
  if (series->values.size() != series->rows() * series->width()) __builtin_trap();
  auto detector = wisp::CreateAnomalyDetector("contextual", {{"warmup", "2"}});
  for (size_t r = 0; r < series->rows(); ++r) {
    auto s = (*detector)->Update(series->times[r], series->values[r * series->width()]);
    if (!(s.score >= 0 && s.score <= 1)) __builtin_trap();
  }
  return 0;
}
