#include "extensions/builtin.h"

#include <mutex>

#include "inference/opencv/opencv_backend.h"
#include "runtime/detector/detector_runtime.h"
#include "runtime/lua/lua_runtime.h"
#include "runtime/model/model_runtime.h"
#include "runtime/process/process_runtime.h"
#include "state/sqlite/sqlite_store.h"
#include "wisp/anomaly_detector.h"
#include "wisp/keepalive_policy.h"

namespace wisp {

void RegisterBuiltinExtensions() {
  static std::once_flag once;
  std::call_once(once, [] {
    RegisterLuaRuntime();
    RegisterProcessRuntime();
    RegisterDetectorRuntime();
    RegisterBuiltinAnomalyDetectors();
    RegisterSqliteStateBackend();
    RegisterBuiltinKeepAlivePolicies();
    RegisterOpenCvInferenceBackend();
    RegisterModelRuntime();
  });
}

}  // namespace wisp
