#include "cli/model_command.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace wisp {
namespace {

using nlohmann::json;

Result<std::string> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(fmt::format("cannot read {}", path));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

Status CheckModelReply(const NodeClient& client, const HttpResponse& reply) {
  if (reply.status >= 200 && reply.status < 300) return Status::Ok();
  return ReplyError(reply, "", !client.endpoint().token.empty());
}

Result<json> ParseObject(std::string_view body) {
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Internal("the node sent a reply that is not wisp's JSON (is it a wisp node?)");
  }
  return doc;
}

std::string ModelPath(std::string_view ref) {
  // Names and versions are [A-Za-z0-9._-] and '@'; anything else is refused by the node, but
  // must not reach another route: encode it.
  std::string path = "/v1/models/";
  for (char c : ref) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ||
        c == '@') {
      path += c;
    } else {
      path += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    }
  }
  return path;
}

std::string TensorList(const json& tensors) {
  std::string text;
  if (!tensors.is_array()) return text;
  for (const json& t : tensors) {
    if (!text.empty()) text += ", ";
    std::string shape;
    for (const json& d : t.value("shape", json::array())) {
      if (!shape.empty()) shape += "x";
      shape += d.is_number_integer() && d.get<std::int64_t>() >= 0 ? d.dump() : "?";
    }
    text += fmt::format("{}[{}]", t.value("name", std::string("?")), shape);
  }
  return text;
}

std::string Size(const json& doc) {
  auto bytes = doc.value("size_bytes", std::uint64_t{0});
  if (bytes >= (1u << 20)) return fmt::format("{:.1f}MiB", bytes / 1048576.0);
  if (bytes >= (1u << 10)) return fmt::format("{:.1f}KiB", bytes / 1024.0);
  return fmt::format("{}B", bytes);
}

}  // namespace

Result<std::string> FormatModelList(std::string_view body) {
  ASSIGN_OR_RETURN(json doc, ParseObject(body));
  if (!doc.contains("models") || !doc["models"].is_array()) {
    return Internal("the node's model list has no models array");
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "VERSION", "SIZE", "SHA256", "INPUTS", "OUTPUTS"}};
  for (const json& m : doc["models"]) {
    rows.push_back({m.value("name", std::string("?")), m.value("version", std::string("?")),
                    Size(m), m.value("sha256", std::string()).substr(0, 12),
                    TensorList(m.value("inputs", json::array())),
                    TensorList(m.value("outputs", json::array()))});
  }
  return FormatTable(rows);
}

Result<std::string> FormatModelDetails(std::string_view body) {
  ASSIGN_OR_RETURN(json m, ParseObject(body));
  std::string text;
  text += fmt::format("name:      {}@{}\n", m.value("name", std::string("?")),
                      m.value("version", std::string("?")));
  text += fmt::format("size:      {} ({} bytes)\n", Size(m), m.value("size_bytes", 0ull));
  text += fmt::format("sha256:    {}\n", m.value("sha256", std::string()));
  text += fmt::format("backend:   {}\n", m.value("backend", std::string()));
  text += fmt::format("opset:     {}\n", m.value("opset", 0));
  std::string ops;
  for (const json& op : m.value("op_types", json::array())) {
    if (!ops.empty()) ops += ", ";
    ops += op.is_string() ? op.get<std::string>() : op.dump();
  }
  text += fmt::format("operators: {}\n", ops);
  for (const char* role : {"inputs", "outputs"}) {
    text += fmt::format("{}:\n", role);
    for (const json& t : m.value(role, json::array())) {
      text += fmt::format("  - {}  {}  {}\n", t.value("name", std::string("?")),
                          t.value("type", std::string("float32")),
                          t.value("shape", json::array()).dump());
    }
  }
  return text;
}

Status RunModelPush(const NodeClient& client, std::string_view name, const std::string& file,
                    std::string_view version, OutputFormat format, std::ostream& out) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(file));
  std::string target = ModelPath(name);
  if (!version.empty()) target += "?version=" + ModelPath(version).substr(11);
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("POST", target, bytes,
                                                   {{"Content-Type", "application/octet-stream"}}));
  RETURN_IF_ERROR(CheckModelReply(client, reply));
  if (format == OutputFormat::kJson) {
    out << reply.body << std::flush;
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(json m, ParseObject(reply.body));
  out << fmt::format("pushed {}@{} ({}, sha256 {})\n", m.value("name", std::string()),
                     m.value("version", std::string()), Size(m), m.value("sha256", std::string()))
      << std::flush;
  return Status::Ok();
}

Status RunModelList(const NodeClient& client, OutputFormat format, std::ostream& out) {
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("GET", "/v1/models"));
  RETURN_IF_ERROR(CheckModelReply(client, reply));
  if (format == OutputFormat::kJson) {
    out << reply.body << std::flush;
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string text, FormatModelList(reply.body));
  out << text << std::flush;
  return Status::Ok();
}

Status RunModelDescribe(const NodeClient& client, std::string_view ref, OutputFormat format,
                        std::ostream& out) {
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("GET", ModelPath(ref)));
  RETURN_IF_ERROR(CheckModelReply(client, reply));
  if (format == OutputFormat::kJson) {
    out << reply.body << std::flush;
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string text, FormatModelDetails(reply.body));
  out << text << std::flush;
  return Status::Ok();
}

Status RunModelRemove(const NodeClient& client, std::string_view ref, std::ostream& out) {
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("DELETE", ModelPath(ref)));
  RETURN_IF_ERROR(CheckModelReply(client, reply));
  ASSIGN_OR_RETURN(json doc, ParseObject(reply.body));
  for (const json& removed : doc.value("deleted", json::array())) {
    out << "removed " << (removed.is_string() ? removed.get<std::string>() : removed.dump())
        << "\n";
  }
  out << std::flush;
  return Status::Ok();
}

Status RunModelRun(const NodeClient& client, std::string_view ref, const std::string& input_json,
                   OutputFormat format, std::ostream& out) {
  std::string body = input_json;
  if (!body.empty() && body.front() == '@') {
    ASSIGN_OR_RETURN(body, ReadFileBytes(body.substr(1)));
  }
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send("POST", ModelPath(ref) + "/run", body,
                                                   {{"Content-Type", "application/json"}}));
  RETURN_IF_ERROR(CheckModelReply(client, reply));
  if (format == OutputFormat::kJson) {
    out << reply.body << std::flush;
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(json doc, ParseObject(reply.body));
  for (const auto& [name, tensor] : doc.value("outputs", json::object()).items()) {
    out << name << ": " << tensor.dump() << "\n";
  }
  out << std::flush;
  return Status::Ok();
}

Result<std::string> FormatModelChannels(std::string_view body) {
  ASSIGN_OR_RETURN(json c, ParseObject(body));
  auto field = [&](const char* key) {
    std::string value = c.value(key, std::string());
    return value.empty() ? std::string("-") : value;
  };
  std::string text = fmt::format("model:     {}\n", field("name"));
  text += fmt::format("stable:    {} (previous: {})\n", field("stable"), field("previous_stable"));
  if (c.value("canary", std::string()).empty()) {
    text += "canary:    -\n";
  } else {
    text += fmt::format("canary:    {} at {}% (rolled back when > {:g} of {} calls fail)\n",
                        field("canary"), c.value("canary_percent", 0),
                        c.value("canary_max_error_rate", 0.0), c.value("canary_window", 0));
  }
  text += fmt::format("automatic rollbacks: {}\n", c.value("automatic_rollbacks", 0ull));
  text += fmt::format("last change: {}\n", field("last_change"));
  return text;
}

Status RunModelPromote(const NodeClient& client, const PromoteOptions& options, OutputFormat format,
                       std::ostream& out) {
  std::string body;
  if (!options.reference_file.empty()) {
    ASSIGN_OR_RETURN(body, ReadFileBytes(options.reference_file));
  }
  std::string path = fmt::format("{}/promote?channel={}&percent={}&window={}&max_error_rate={}",
                                 ModelPath(options.ref), options.channel, options.percent,
                                 options.window, options.max_error_rate);
  if (options.tolerance >= 0) path += fmt::format("&tolerance={}", options.tolerance);
  ASSIGN_OR_RETURN(HttpResponse reply,
                   client.Send("POST", path, body, {{"Content-Type", "application/json"}}));
  RETURN_IF_ERROR(CheckModelReply(client, reply));
  if (format == OutputFormat::kJson) {
    out << reply.body << std::flush;
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string text, FormatModelChannels(reply.body));
  out << text << std::flush;
  return Status::Ok();
}

Status RunModelChannels(const NodeClient& client, std::string_view name, std::string_view action,
                        OutputFormat format, std::ostream& out) {
  ASSIGN_OR_RETURN(HttpResponse reply, client.Send(action == "rollback" ? "POST" : "GET",
                                                   ModelPath(name) + "/" + std::string(action)));
  RETURN_IF_ERROR(CheckModelReply(client, reply));
  if (format == OutputFormat::kJson) {
    out << reply.body << std::flush;
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(std::string text, FormatModelChannels(reply.body));
  out << text << std::flush;
  return Status::Ok();
}

void AddModelCommand(CLI::App& app, ClientInputs& inputs, int& timeout_s) {
  auto* model = app.add_subcommand(
      "model", "Manage ONNX models (push, ls, describe, rm, run, promote, rollback, channels)");
  model->require_subcommand(1);
  struct Args {
    std::string name, file, version, ref, input, output = "text";
  };
  auto args = std::make_shared<Args>();  // owned by the callbacks

  auto run = [&inputs, &timeout_s, args](auto verb) {
    ClientInputs resolved = inputs;
    if (const char* url = std::getenv("WISP_URL")) resolved.env_url = url;
    if (const char* token = std::getenv("WISP_TOKEN")) resolved.env_token = token;
    const OutputFormat format = args->output == "json" ? OutputFormat::kJson : OutputFormat::kText;
    Status status;
    auto endpoint = ResolveEndpoint(resolved);
    if (!endpoint.ok()) {
      status = endpoint.status();
    } else {
      NodeClient client(*endpoint, std::chrono::seconds(timeout_s));
      status = verb(client, format);
    }
    if (!status.ok()) {
      std::cerr << "error: " << status.message() << "\n";
      throw CLI::RuntimeError(1);
    }
  };
  auto add_output = [args](CLI::App* cmd) {
    cmd->add_option("-o,--output", args->output, "text or json")
        ->check(CLI::IsMember({"text", "json"}));
  };

  auto* push = model->add_subcommand("push", "Check an ONNX model and store it on the node");
  push->add_option("name", args->name, "Model name")->required();
  push->add_option("file", args->file, "The .onnx file")->required();
  push->add_option("--version", args->version, "Version (default: the next number)");
  add_output(push);
  push->callback([run, args] {
    run([&](const NodeClient& c, OutputFormat f) {
      return RunModelPush(c, args->name, args->file, args->version, f, std::cout);
    });
  });

  auto* ls = model->add_subcommand("ls", "List models and their versions");
  add_output(ls);
  ls->callback([run] {
    run([&](const NodeClient& c, OutputFormat f) { return RunModelList(c, f, std::cout); });
  });

  auto* describe = model->add_subcommand("describe", "Show a model's inputs, outputs, sha256");
  describe->add_option("ref", args->ref, "NAME or NAME@VERSION (default: the latest)")->required();
  add_output(describe);
  describe->callback([run, args] {
    run([&](const NodeClient& c, OutputFormat f) {
      return RunModelDescribe(c, args->ref, f, std::cout);
    });
  });

  auto* rm = model->add_subcommand("rm", "Remove a model version (NAME@V) or every version");
  rm->add_option("ref", args->ref, "NAME or NAME@VERSION")->required();
  rm->callback([run, args] {
    run([&](const NodeClient& c, OutputFormat) { return RunModelRemove(c, args->ref, std::cout); });
  });

  auto promote_options = std::make_shared<PromoteOptions>();
  auto* promote = model->add_subcommand(
      "promote", "Point a channel (stable or canary) at a version; stable needs --reference");
  promote->add_option("ref", promote_options->ref, "NAME@VERSION")->required();
  promote->add_option("--channel", promote_options->channel, "stable or canary")
      ->check(CLI::IsMember({"stable", "canary"}));
  promote->add_option("--percent", promote_options->percent, "Canary: share of calls (1-100)");
  promote->add_option("--reference", promote_options->reference_file,
                      "JSON {\"cases\": [{\"inputs\", \"outputs\"}], \"tolerance\"}");
  promote->add_option("--tolerance", promote_options->tolerance,
                      "Max absolute error per output value (default: the file's, else 1e-4)");
  promote->add_option("--window", promote_options->window,
                      "Canary: calls judged together for the automatic rollback");
  promote->add_option("--max-error-rate", promote_options->max_error_rate,
                      "Canary: rolled back when more than this share of the window fails");
  add_output(promote);
  promote->callback([run, promote_options] {
    run([&](const NodeClient& c, OutputFormat f) {
      return RunModelPromote(c, *promote_options, f, std::cout);
    });
  });

  auto* rollback = model->add_subcommand(
      "rollback", "Drop the canary; without one, return stable to its previous version");
  rollback->add_option("name", args->name, "Model name")->required();
  add_output(rollback);
  rollback->callback([run, args] {
    run([&](const NodeClient& c, OutputFormat f) {
      return RunModelChannels(c, args->name, "rollback", f, std::cout);
    });
  });

  auto* channels = model->add_subcommand("channels", "Show a model's stable and canary versions");
  channels->add_option("name", args->name, "Model name")->required();
  add_output(channels);
  channels->callback([run, args] {
    run([&](const NodeClient& c, OutputFormat f) {
      return RunModelChannels(c, args->name, "channels", f, std::cout);
    });
  });

  auto* run_cmd = model->add_subcommand("run", "Run a model once on JSON input");
  run_cmd->add_option("ref", args->ref, "NAME or NAME@VERSION")->required();
  run_cmd
      ->add_option("--input", args->input,
                   "Nested arrays, or {\"input name\": arrays}; @FILE reads a file")
      ->required();
  add_output(run_cmd);
  run_cmd->callback([run, args] {
    run([&](const NodeClient& c, OutputFormat f) {
      return RunModelRun(c, args->ref, args->input, f, std::cout);
    });
  });
}

}  // namespace wisp
