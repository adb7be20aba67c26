// Broker addresses: mqtt://host[:port] and mqtts://host[:port].
//
// The URL names only where the broker is and whether to speak TLS. Credentials, certificates and
// the client id are separate options (MqttOptions), so that a URL can be logged as it is.
#pragma once

#include <string>
#include <string_view>

#include "wisp/status.h"

namespace wisp {

inline constexpr int kMqttDefaultPort = 1883;
inline constexpr int kMqttsDefaultPort = 8883;

struct MqttUrl {
  bool tls = false;  // mqtts
  std::string host;  // a name or an address; an IPv6 address without its brackets
  int port = kMqttDefaultPort;

  // "mqtt://host:port", with brackets around an IPv6 address.
  std::string ToString() const;
};

// Parses "mqtt://host[:port][/]" or "mqtts://host[:port][/]" (scheme case-insensitive; IPv6 as
// "[::1]"). The port defaults to 1883 for mqtt and 8883 for mqtts. Anything else (another
// scheme, user info, a path, a bad port) is InvalidArgument with a message that names the
// problem.
Result<MqttUrl> ParseMqttUrl(std::string_view url);

}  // namespace wisp
