// Command-line flags of the node, shared by `wispd` and `wisp up` so both accept the same.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "node/node.h"

namespace wisp {

struct NodeFlags {
  std::string listen;
  std::string data_dir;
  std::string config_file;
  std::string broker;
  int shards = -1;
  std::vector<std::string> deploy_dirs;
};

// Adds --listen, --data, --config, --shards and --deploy to `app`.
void AddNodeFlags(CLI::App& app, NodeFlags& flags);

// The config file (or embedded defaults) with the flags applied over it.
Result<NodeConfig> ResolveNodeConfig(const NodeFlags& flags);

}  // namespace wisp
