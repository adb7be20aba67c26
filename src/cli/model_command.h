// `wisp model push|ls|describe|rm|run|promote|rollback|channels`: the node's model registry
// (/v1/models, docs/inference.md).
//
// Like the other verbs, each Run* writes its result to `out` and returns OK or a Status whose
// message is the whole sentence for the user. Formatting is a pure function of the node's
// reply, testable without a node.
//
// Thread safety: none needed; a verb runs once per process.
#pragma once

#include <iosfwd>
#include <string>
#include <string_view>

#include "cli/client_config.h"
#include "cli/commands.h"
#include "wisp/status.h"

namespace CLI {
class App;
}

namespace wisp {

// Reads FILE and pushes it as NAME (version: empty lets the node pick the next number).
Status RunModelPush(const NodeClient& client, std::string_view name, const std::string& file,
                    std::string_view version, OutputFormat format, std::ostream& out);
Status RunModelList(const NodeClient& client, OutputFormat format, std::ostream& out);
Status RunModelDescribe(const NodeClient& client, std::string_view ref, OutputFormat format,
                        std::ostream& out);
Status RunModelRemove(const NodeClient& client, std::string_view ref, std::ostream& out);
// `input_json`: nested arrays, or {"input": nested arrays}; "@FILE" reads it from FILE.
Status RunModelRun(const NodeClient& client, std::string_view ref, const std::string& input_json,
                   OutputFormat format, std::ostream& out);

struct PromoteOptions {
  std::string ref;  // NAME@VERSION
  std::string channel = "stable";
  int percent = 10;
  std::string reference_file;  // empty: none (allowed for canary only; the node checks)
  double tolerance = -1;       // < 0: the reference file's
  int window = 20;
  double max_error_rate = 0.2;
};
// POST NAME@V/promote with the reference file as the body.
Status RunModelPromote(const NodeClient& client, const PromoteOptions& options, OutputFormat format,
                       std::ostream& out);
// `action`: "rollback" (POST) or "channels" (GET).
Status RunModelChannels(const NodeClient& client, std::string_view name, std::string_view action,
                        OutputFormat format, std::ostream& out);
// A model's channels for people.
Result<std::string> FormatModelChannels(std::string_view body);

// Table of /v1/models: NAME VERSION SIZE SHA256 (first 12) INPUTS OUTPUTS.
Result<std::string> FormatModelList(std::string_view body);
// One model version's metadata for people: name@version, size, sha256, ops, inputs, outputs.
Result<std::string> FormatModelDetails(std::string_view body);

// Adds `model` and its subcommands. They run from CLI11's callback (as `events` does): on
// failure the error is printed and CLI::RuntimeError(1) thrown. `inputs` and `timeout_s` are
// the global flags' storage, read when the callback runs.
void AddModelCommand(CLI::App& app, ClientInputs& inputs, int& timeout_s);

}  // namespace wisp
