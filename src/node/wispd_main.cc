// wispd: the node. `wisp up` is the same program reached through the CLI.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "node/node_flags.h"

int main(int argc, char** argv) {
  CLI::App app{"wispd: the wisp node (serverless functions at the edge)"};
  wisp::NodeFlags flags;
  wisp::AddNodeFlags(app, flags);
  CLI11_PARSE(app, argc, argv);
  auto config = wisp::ResolveNodeConfig(flags);
  if (!config.ok()) {
    std::fprintf(stderr, "wispd: %s\n", config.status().message().c_str());
    return 2;
  }
  return wisp::RunNode(*config);
}
