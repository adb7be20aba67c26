#include "wisp/event.h"

namespace wisp {

std::string_view TriggerKindName(TriggerKind kind) {
  switch (kind) {
    case TriggerKind::kHttp:
      return "http";
    case TriggerKind::kMqtt:
      return "mqtt";
    case TriggerKind::kTimer:
      return "timer";
  }
  return "unknown";
}

}  // namespace wisp
