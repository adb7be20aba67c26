// `wisp`: runs a node (`wisp up`) and talks to one (deploy, ls, describe, invoke, logs, rm,
// token, health). Flag parsing only; the verbs live in cli/commands.h.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/client_config.h"
#include "cli/commands.h"
#include "cli/detect_command.h"
#include "cli/events_command.h"
#include "cli/model_command.h"
#include "cli/sim_command.h"
#include "node/node.h"
#include "node/node_flags.h"

namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

int Fail(const wisp::Status& status) {
  std::cerr << "error: " << status.message() << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wisp: serverless functions for the industrial edge", "wisp"};
  app.set_version_flag("--version", "wisp " + std::string(wisp::ClientVersion()));
  app.require_subcommand(1);
  // Global options may also come after the verb: `wisp ls --server URL`.
  app.fallthrough();
  app.footer(
      "Server: --server, else $WISP_URL, else the local node (<data>/node.json), else "
      "http://127.0.0.1:8080.\nToken: --token, else $WISP_TOKEN, else the local node's "
      "<data>/token.");

  wisp::ClientInputs inputs;
  int timeout_s = 60;
  app.add_option("--server", inputs.server_flag, "Node URL, http://HOST:PORT ($WISP_URL)");
  app.add_option("--token", inputs.token_flag, "Node token ($WISP_TOKEN)");
  app.add_option("--data,--data-dir", inputs.data_flag,
                 "Local node's data directory ($WISP_HOME; default ~/.wisp/node)");
  app.add_option("--timeout", timeout_s, "Seconds to wait for the node's reply")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();

  // up: the same flags as wispd.
  auto* up = app.add_subcommand("up", "Run a node in the foreground (Ctrl-C drains and stops)");
  wisp::NodeFlags node_flags;
  wisp::AddNodeFlags(*up, node_flags);
  up->footer(
      "The node writes <data>/token and <data>/node.json; the client verbs find it through "
      "them.");

  // Client verbs.
  std::string output = "text";
  auto add_output = [&output](CLI::App* cmd) {
    cmd->add_option("-o,--output", output, "text or json")->check(CLI::IsMember({"text", "json"}));
  };

  auto* deploy = app.add_subcommand("deploy", "Deploy the function directories (default: .)");
  std::vector<std::string> dirs;
  deploy->add_option("dirs", dirs, "Directories holding wisp.yaml");

  auto* ls = app.add_subcommand("ls", "List deployed functions");
  bool quiet = false;
  add_output(ls);
  ls->add_flag("-q,--quiet", quiet, "Names only");

  std::string name;
  auto* describe = app.add_subcommand("describe", "Show one function");
  describe->add_option("name", name, "Function name")->required();
  add_output(describe);

  auto* invoke = app.add_subcommand("invoke", "Call a function and print its reply");
  wisp::InvokeOptions invoke_options;
  invoke->add_option("name", invoke_options.name, "Function name")->required();
  auto* data_option = invoke->add_option("-d,--data", invoke_options.data,
                                         "Request body: text, @FILE, or @- for stdin (default: "
                                         "stdin when it is not a terminal)");
  invoke->add_option("--content-type", invoke_options.content_type,
                     "Content-Type (default application/json when there is a body)");
  invoke->add_option("-X,--method", invoke_options.method, "HTTP method")->capture_default_str();
  invoke->add_option("-H,--header", invoke_options.headers, "Extra header 'Name: value'");
  invoke->add_flag("--async", invoke_options.async,
                   "Queue the call (invoke-async) and print its id; fetch the result with "
                   "`wisp call ID`");
  invoke->add_option("--callback-url", invoke_options.callback_url,
                     "With --async: POST the result there (must be in actions.http_allow)");
  invoke->add_option("--reply-topic", invoke_options.reply_topic,
                     "With --async: publish the result to this MQTT topic");

  auto* logs = app.add_subcommand("logs", "Print a function's recent log lines");
  int tail = 100;
  logs->add_option("name", name, "Function name")->required();
  logs->add_option("--tail", tail, "How many lines, newest last")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  add_output(logs);

  auto* rm = app.add_subcommand("rm", "Remove a function and its state");
  rm->add_option("name", name, "Function name")->required();

  auto* call = app.add_subcommand("call", "Show an async call's result (`wisp invoke --async`)");
  std::string call_id;
  bool call_wait = false;
  call->add_option("id", call_id, "Call id")->required();
  call->add_flag("-w,--wait", call_wait, "Wait until the call has run");
  add_output(call);

  auto* token = app.add_subcommand("token", "Print the local node's token");
  auto* health = app.add_subcommand("health", "Check that the node is up");
  add_output(health);
  wisp::AddEventsCommand(app, inputs, timeout_s);
  wisp::AddModelCommand(app, inputs, timeout_s);

  wisp::SimCommand sim(app);
  wisp::DetectCommand detect(app);

  if (argc == 1) {
    std::cout << app.help();
    return 0;
  }
  CLI11_PARSE(app, argc, argv);

  if (up->parsed()) {
    // `wisp --data DIR up` means the same as `wisp up --data DIR`.
    if (node_flags.data_dir.empty()) node_flags.data_dir = inputs.data_flag;
    auto config = wisp::ResolveNodeConfig(node_flags);
    if (!config.ok()) {
      std::cerr << "error: " << config.status().message() << "\n";
      return 2;
    }
    return wisp::RunNode(*config);
  }

  if (sim.parsed()) return sim.Run();
  if (detect.parsed()) return detect.Run();

  if (token->parsed()) {
    std::string data_dir = inputs.data_flag.empty() ? wisp::DefaultDataDir() : inputs.data_flag;
    if (wisp::Status s = wisp::RunToken(data_dir, std::cout); !s.ok()) return Fail(s);
    return 0;
  }

  inputs.env_url = Env("WISP_URL");
  inputs.env_token = Env("WISP_TOKEN");
  auto endpoint = wisp::ResolveEndpoint(inputs);
  if (!endpoint.ok()) return Fail(endpoint.status());
  wisp::NodeClient client(*endpoint, std::chrono::seconds(timeout_s));
  const auto format = output == "json" ? wisp::OutputFormat::kJson : wisp::OutputFormat::kText;

  wisp::Status status;
  if (deploy->parsed()) {
    status =
        wisp::RunDeploy(client, dirs.empty() ? std::vector<std::string>{"."} : dirs, std::cout);
  } else if (ls->parsed()) {
    status = wisp::RunList(client, format, quiet, std::cout);
  } else if (describe->parsed()) {
    status = wisp::RunDescribe(client, name, format, std::cout);
  } else if (invoke->parsed()) {
    invoke_options.has_data = data_option->count() > 0;
    invoke_options.read_stdin = !invoke_options.has_data && !isatty(STDIN_FILENO);
    status = wisp::RunInvoke(client, invoke_options, std::cout, isatty(STDOUT_FILENO) != 0);
  } else if (logs->parsed()) {
    status = wisp::RunLogs(client, name, tail, format, std::cout);
  } else if (rm->parsed()) {
    status = wisp::RunRemove(client, name, std::cout);
  } else if (call->parsed()) {
    status = wisp::RunCall(client, call_id, call_wait, format, std::cout);
  } else if (health->parsed()) {
    status = wisp::RunHealth(client, format, std::cout);
  }
  return status.ok() ? 0 : Fail(status);
}
