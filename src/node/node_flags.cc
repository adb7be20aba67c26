#include "node/node_flags.h"

namespace wisp {

void AddNodeFlags(CLI::App& app, NodeFlags& flags) {
  app.add_option("--listen", flags.listen, "HOST:PORT to serve HTTP on (default 127.0.0.1:8080)");
  app.add_option("--data", flags.data_dir,
                 "data directory (default $WISP_HOME, else ~/.wisp/node, else ./.wisp)");
  app.add_option("--config", flags.config_file, "YAML node config (see docs/config.md)");
  app.add_option("--broker", flags.broker,
                 "MQTT broker for mqtt triggers and ctx.emit: mqtt://HOST:PORT or mqtts://...");
  app.add_option("--shards", flags.shards, "worker threads, 0 = one per core")
      ->check(CLI::Range(0, 256));
  app.add_option("--deploy", flags.deploy_dirs, "function directory to deploy at start")
      ->take_all();
}

Result<NodeConfig> ResolveNodeConfig(const NodeFlags& flags) {
  ASSIGN_OR_RETURN(NodeConfig config, LoadNodeConfig(flags.config_file));
  if (!flags.listen.empty()) RETURN_IF_ERROR(ParseListenAddress(flags.listen, &config));
  if (!flags.data_dir.empty()) config.data_dir = flags.data_dir;
  if (!flags.broker.empty()) config.mqtt.broker = flags.broker;
  if (flags.shards >= 0) config.shards = flags.shards;
  config.deploy_dirs.insert(config.deploy_dirs.end(), flags.deploy_dirs.begin(),
                            flags.deploy_dirs.end());
  return config;
}

}  // namespace wisp
