#include "cli/client_config.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "node/node.h"

namespace wisp {
namespace {

std::string Trim(std::string s) {
  const char* space = " \t\r\n\f\v";
  auto first = s.find_first_not_of(space);
  if (first == std::string::npos) return "";
  auto last = s.find_last_not_of(space);
  return s.substr(first, last - first + 1);
}

std::string CanonicalHost(const std::string& host) {
  return host == "localhost" ? "127.0.0.1" : host;
}

}  // namespace

std::optional<LocalNodeInfo> ReadLocalNodeInfo(const std::string& data_dir) {
  std::ifstream in(NodeInfoPath(data_dir));
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  auto json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("url") || !json["url"].is_string()) return std::nullopt;
  LocalNodeInfo info;
  info.url = json["url"].get<std::string>();
  if (json.contains("pid") && json["pid"].is_number_integer()) {
    info.pid = json["pid"].get<std::int64_t>();
  }
  return info;
}

Result<std::string> ReadLocalToken(const std::string& data_dir) {
  const std::string path = TokenPath(data_dir);
  std::ifstream in(path);
  if (!in) {
    if (errno == EACCES) {
      return PermissionDenied("cannot read " + path +
                              ": permission denied (run as the user that runs the node)");
    }
    return NotFound("no token at " + path +
                    ": start a node with `wisp up` (it creates one), or pass --data with the "
                    "node's data directory");
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string token = Trim(text.str());
  if (token.empty()) return NotFound(path + " is empty: restart the node to create a new token");
  return token;
}

bool SameNode(const Url& a, const Url& b) {
  return a.https == b.https && CanonicalHost(a.host) == CanonicalHost(b.host) && a.port == b.port &&
         a.base_path == b.base_path;
}

Result<Endpoint> ResolveEndpoint(const ClientInputs& inputs) {
  Endpoint endpoint;
  endpoint.data_dir = inputs.data_flag.empty() ? DefaultDataDir() : inputs.data_flag;

  std::optional<Url> local_url;
  if (auto info = ReadLocalNodeInfo(endpoint.data_dir)) {
    // A node.json we cannot parse is ignored, like a missing one: it only ever suggests.
    if (auto parsed = ParseUrl(info->url); parsed.ok()) local_url = *parsed;
  }

  const std::string& given = !inputs.server_flag.empty() ? inputs.server_flag : inputs.env_url;
  if (!given.empty()) {
    auto parsed = ParseUrl(given);
    if (!parsed.ok()) {
      return parsed.status().WithContext(!inputs.server_flag.empty() ? "--server" : "WISP_URL");
    }
    endpoint.url = *parsed;
  } else if (local_url) {
    endpoint.url = *local_url;
  } else {
    ASSIGN_OR_RETURN(endpoint.url, ParseUrl(kDefaultServerUrl));
  }

  if (!inputs.token_flag.empty()) {
    endpoint.token = inputs.token_flag;
    endpoint.token_source = "--token";
  } else if (!inputs.env_token.empty()) {
    endpoint.token = inputs.env_token;
    endpoint.token_source = "WISP_TOKEN";
  } else if (given.empty() || (local_url && SameNode(endpoint.url, *local_url))) {
    // Missing or unreadable: go without; the node's 401 then says what to do.
    if (auto token = ReadLocalToken(endpoint.data_dir); token.ok()) {
      endpoint.token = *token;
      endpoint.token_source = TokenPath(endpoint.data_dir);
    }
  }
  return endpoint;
}

}  // namespace wisp
