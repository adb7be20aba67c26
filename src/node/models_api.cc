// /v1/models: the model registry over HTTP (docs/http-api.md, docs/inference.md). Control API:
// the node token is required (checked by Shard::Handle). Runs on the shard that got the
// request; a push or run loads the model there, so it costs that shard the model's load time.
#include <cmath>
#include <cstdlib>
#include <string>

#include <fmt/format.h>
#include <boost/beast/http/status.hpp>
#include <nlohmann/json.hpp>

#include "inference/tensor_json.h"
#include "models/model_store.h"
#include "node/shard.h"
#include "runtime/model/model_runtime.h"

namespace wisp {
namespace http = boost::beast::http;
using nlohmann::json;

namespace {

void SetJsonBody(HttpResponse& response, http::status status, const json& body) {
  response.result(status);
  response.set(http::field::content_type, "application/json");
  response.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  response.body() += '\n';
}

// A numeric query parameter; `fallback` when absent.
Result<double> NumberParam(std::string_view query, std::string_view key, double fallback) {
  const std::string text(QueryParam(query, key));
  if (text.empty()) return fallback;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(value)) {
    return InvalidArgument(fmt::format("{}={} is not a number", key, text));
  }
  return value;
}

// POST NAME@V/promote, POST NAME/rollback, GET NAME/channels (docs/http-api.md).
void HandleChannels(ModelStore& store, std::string_view ref, std::string_view action,
                    const Route& route, HttpRequest& request, HttpResponse& response) {
  const http::verb method = request.method();
  Result<ModelChannels> channels = NotFound("");
  if (action == "channels" && method == http::verb::get) {
    channels = store.Channels(ref);
  } else if (action == "rollback" && method == http::verb::post) {
    channels = store.Rollback(ref);
  } else if (action == "promote" && method == http::verb::post) {
    PromoteRequest promote;
    promote.ref = std::string(ref);
    promote.channel = std::string(QueryParam(route.query, "channel"));
    auto percent = NumberParam(route.query, "percent", 10);
    auto tolerance = NumberParam(route.query, "tolerance", -1);
    auto window = NumberParam(route.query, "window", 20);
    auto max_error_rate = NumberParam(route.query, "max_error_rate", 0.2);
    for (const auto* r : {&percent, &tolerance, &window, &max_error_rate}) {
      if (!r->ok()) return SetErrorResponse(r->status(), response);
    }
    promote.percent = static_cast<int>(*percent);
    promote.tolerance = *tolerance;
    promote.window = static_cast<int>(*window);
    promote.max_error_rate = *max_error_rate;
    if (!request.body().empty()) {
      auto reference = DecodeJsonBody(request.body());
      if (!reference.ok()) return SetErrorResponse(reference.status(), response);
      promote.reference = std::move(*reference);
    }
    channels = store.Promote(promote);
  } else {
    response.set(http::field::allow, action == "channels" ? "GET" : "POST");
    return SetErrorResponse(
        InvalidArgument(fmt::format("{} does not accept {}", route.path, request.method_string())),
        response, 405);
  }
  if (!channels.ok()) return SetErrorResponse(channels.status(), response);
  SetJsonBody(response, http::status::ok, ModelChannelsToJson(*channels));
}

}  // namespace

Result<std::string> Shard::Host::Infer(std::string_view model, std::string_view inputs_json) {
  return InferWithThreadSessions(shard_.services_.models, model, inputs_json);
}

void Shard::HandleModels(const Route& route, HttpRequest& request, HttpResponse& response) {
  ModelStore* store = services_.models;
  if (store == nullptr) {
    return SetErrorResponse(NotFound("this node has no model registry"), response);
  }
  const http::verb method = request.method();
  std::string_view ref = route.name;
  bool run = false;
  if (auto slash = ref.find('/'); slash != std::string_view::npos) {
    const std::string_view action = ref.substr(slash + 1);
    if (action == "promote" || action == "rollback" || action == "channels") {
      return HandleChannels(*store, ref.substr(0, slash), action, route, request, response);
    }
    if (ref.substr(slash) != "/run") {
      return SetErrorResponse(NotFound(fmt::format("no route for {}", route.path)), response);
    }
    ref = ref.substr(0, slash);
    run = true;
  }
  auto method_not_allowed = [&](std::string_view allowed) {
    response.set(http::field::allow, allowed);
    SetErrorResponse(InvalidArgument(fmt::format("{} does not accept {} (allowed: {})", route.path,
                                                 request.method_string(), allowed)),
                     response, 405);
  };

  if (ref.empty()) {
    if (method != http::verb::get) return method_not_allowed("GET");
    auto all = store->List();
    if (!all.ok()) return SetErrorResponse(all.status(), response);
    json list = json::array();
    for (const auto& m : *all) list.push_back(ModelMetadataToJson(m));
    return SetJsonBody(response, http::status::ok, {{"models", list}});
  }

  if (run) {
    if (method != http::verb::post) return method_not_allowed("POST");
    auto body = DecodeJsonBody(request.body());
    if (!body.ok()) return SetErrorResponse(body.status(), response);
    auto loaded = store->Load(ref);
    if (!loaded.ok()) return SetErrorResponse(loaded.status(), response);
    auto inputs = InputsFromJson(*body, loaded->session->Info());
    if (!inputs.ok()) return SetErrorResponse(inputs.status(), response);
    const auto start = std::chrono::steady_clock::now();
    auto outputs = loaded->session->Run(*inputs);
    const double run_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!outputs.ok()) return SetErrorResponse(outputs.status(), response);
    return SetJsonBody(response, http::status::ok,
                       {{"model", loaded->metadata.name + "@" + loaded->metadata.version},
                        {"outputs", TensorsToJson(*outputs)},
                        {"load_ms", loaded->load_seconds * 1000.0},
                        {"run_ms", run_seconds * 1000.0}});
  }

  switch (method) {
    case http::verb::get: {
      auto m = store->Describe(ref);
      if (!m.ok()) return SetErrorResponse(m.status(), response);
      return SetJsonBody(response, http::status::ok, ModelMetadataToJson(*m));
    }
    case http::verb::post: {
      if (ref.find('@') != std::string_view::npos) {
        return SetErrorResponse(InvalidArgument("push to /v1/models/NAME?version=V, not NAME@V"),
                                response);
      }
      auto m = store->Push(ref, QueryParam(route.query, "version"), request.body());
      if (!m.ok()) {
        return SetErrorResponse(m.status(), response,
                                m.status().code() == StatusCode::kAlreadyExists ? 409 : 0);
      }
      return SetJsonBody(response, http::status::created, ModelMetadataToJson(*m));
    }
    case http::verb::delete_: {
      auto removed = store->Remove(ref);
      if (!removed.ok()) return SetErrorResponse(removed.status(), response);
      return SetJsonBody(response, http::status::ok, {{"deleted", *removed}});
    }
    default:
      return method_not_allowed("GET, POST, DELETE");
  }
}

}  // namespace wisp
