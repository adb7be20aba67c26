#include "mqtt/mqtt_url.h"

#include <algorithm>
#include <cctype>
#include <string>

namespace wisp {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

Status Bad(std::string_view url, std::string_view why) {
  return InvalidArgument("broker URL '" + std::string(url) + "' " + std::string(why));
}

}  // namespace

std::string MqttUrl::ToString() const {
  const bool ipv6 = host.find(':') != std::string::npos;
  return std::string(tls ? "mqtts://" : "mqtt://") + (ipv6 ? "[" + host + "]" : host) + ":" +
         std::to_string(port);
}

Result<MqttUrl> ParseMqttUrl(std::string_view url) {
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    return Bad(url, "has no scheme (use mqtt://host:port or mqtts://host:port)");
  }
  MqttUrl out;
  const std::string scheme = Lower(url.substr(0, sep));
  if (scheme == "mqtt") {
    out.tls = false;
    out.port = kMqttDefaultPort;
  } else if (scheme == "mqtts") {
    out.tls = true;
    out.port = kMqttsDefaultPort;
  } else {
    return Bad(url, "has scheme '" + scheme + "' (use mqtt:// or mqtts://)");
  }

  std::string_view rest = url.substr(sep + 3);
  // One trailing slash is harmless ("mqtt://broker/"); a real path means the user expects
  // something (a websocket path, a topic prefix) that this client does not do.
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos) return Bad(url, "has a path (none is allowed)");
  if (rest.find('@') != std::string_view::npos) {
    return Bad(url, "has user info (give the username and password as separate options)");
  }
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return Bad(url, "has a query or fragment (none is allowed)");
  }

  std::string_view host, port;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return Bad(url, "has an unclosed '[' in its host");
    host = rest.substr(1, close - 1);
    std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Bad(url, "has text after its IPv6 address");
      port = after.substr(1);
      if (port.empty()) return Bad(url, "has an empty port");
    }
  } else {
    const auto colon = rest.find(':');
    if (colon != std::string_view::npos && rest.find(':', colon + 1) != std::string_view::npos) {
      return Bad(url, "has an IPv6 address without brackets (write mqtt://[::1]:1883)");
    }
    host = rest.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = rest.substr(colon + 1);
      if (port.empty()) return Bad(url, "has an empty port");
    }
  }
  if (host.empty()) return Bad(url, "has no host");
  for (unsigned char c : host) {
    if (std::isspace(c) || std::iscntrl(c)) return Bad(url, "has a space or control in its host");
  }
  out.host = std::string(host);

  if (!port.empty()) {
    if (port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](unsigned char c) { return std::isdigit(c); })) {
      return Bad(url, "has port '" + std::string(port) + "' (want a number from 1 to 65535)");
    }
    const int value = std::stoi(std::string(port));
    if (value < 1 || value > 65535) {
      return Bad(url, "has port " + std::string(port) + " (want a number from 1 to 65535)");
    }
    out.port = value;
  }
  return out;
}

}  // namespace wisp
