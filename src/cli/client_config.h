// Where the `wisp` client verbs send their requests, and with which token.
//
// Rules, first match wins:
//   server: --server, else $WISP_URL, else the url in <data>/node.json (written by a running
//           node), else http://127.0.0.1:8080.
//   token:  --token, else $WISP_TOKEN, else <data>/token when the server is the local node:
//           the one node.json names, or any server when none was given.
//   data:   --data, else DefaultDataDir() ($WISP_HOME, $HOME/.wisp/node, ./.wisp).
// The local token is never sent to a server the user named that is not the local node, so a
// typo in --server cannot leak it.
//
// Thread safety: plain values and functions that only read files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cli/http_client.h"
#include "wisp/status.h"

namespace wisp {

// What the user gave; an empty string means "not given". The caller reads the environment,
// so the rules stay testable without it.
struct ClientInputs {
  std::string server_flag;
  std::string token_flag;
  std::string data_flag;
  std::string env_url;    // $WISP_URL
  std::string env_token;  // $WISP_TOKEN
};

struct Endpoint {
  Url url;
  std::string token;         // empty: send no Authorization header
  std::string token_source;  // "--token", "WISP_TOKEN", the token file's path, or ""
  std::string data_dir;
};

inline constexpr const char* kDefaultServerUrl = "http://127.0.0.1:8080";

struct LocalNodeInfo {
  std::string url;
  std::int64_t pid = 0;
};

// Reads <data>/node.json. nullopt when it is absent or unreadable: no node ever ran there, or
// it was written by something else; either way there is no local node to point at.
std::optional<LocalNodeInfo> ReadLocalNodeInfo(const std::string& data_dir);

// The token in <data>/token with surrounding whitespace removed. NotFound with a hint when
// there is no such file, PermissionDenied when it cannot be read.
Result<std::string> ReadLocalToken(const std::string& data_dir);

// Applies the rules above. Fails only on a malformed (or https) server URL.
Result<Endpoint> ResolveEndpoint(const ClientInputs& inputs);

// True when both URLs reach the same node: same host (localhost and 127.0.0.1 count as one),
// port and base path.
bool SameNode(const Url& a, const Url& b);

}  // namespace wisp
