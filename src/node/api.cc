// The shard's HTTP API: invoke on the hot path, and the control endpoints (docs/http-api.md).
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>
#include <boost/beast/http/field.hpp>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/utf8.h"
#include "node/shard.h"
#include "runtime/model/model_runtime.h"
#include "wisp/bundle.h"
#include "wisp/units.h"

#ifndef WISP_VERSION
#define WISP_VERSION "dev"
#endif
#ifndef WISP_GIT_COMMIT
#define WISP_GIT_COMMIT "unknown"
#endif

namespace wisp {
namespace http = boost::beast::http;
using nlohmann::json;

namespace {

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  const auto seconds = std::chrono::time_point_cast<std::chrono::seconds>(t);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - seconds).count();
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z", seconds, ms);
}

void SetJson(HttpResponse& response, http::status status, const json& body) {
  response.result(status);
  response.set(http::field::content_type, "application/json");
  response.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  response.body() += '\n';
}

json Summary(const DeployedFunction& fn) {
  const FunctionSpec& spec = *fn.spec;
  const auto totals = fn.metrics->Sum();
  return {
      {"name", spec.name},
      {"runtime", spec.runtime},
      {"version", spec.version},
      {"auth", spec.auth == AuthMode::kToken ? "token" : "public"},
      {"handler", spec.handler_file + ":" + spec.handler_entry},
      {"deployed_at", Rfc3339(fn.deployed_at)},
      {"invocations", totals.invocations},
      {"errors", totals.errors},
      {"cold_starts", totals.cold_starts},
      {"instances", totals.instances},
      {"avg_duration_ms",
       totals.invocations ? totals.duration_seconds_sum * 1000.0 / totals.invocations : 0.0},
  };
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

// Headers a function may not set: the server owns framing and connection management.
bool IsReservedHeader(std::string_view name) {
  return boost::beast::iequals(name, "content-length") ||
         boost::beast::iequals(name, "transfer-encoding") ||
         boost::beast::iequals(name, "connection") || boost::beast::iequals(name, "keep-alive") ||
         boost::beast::iequals(name, "upgrade") || boost::beast::iequals(name, "x-wisp-error") ||
         boost::beast::iequals(name, "x-wisp-cold-start");
}

bool IsSafeHeader(std::string_view name, std::string_view value) {
  if (name.empty()) return false;
  for (char c : name) {
    if (c <= ' ' || c >= 127 || c == ':') return false;
  }
  return value.find_first_of("\r\n") == std::string_view::npos;
}

Status NoSuchFunction(std::string_view name) {
  return NotFound(fmt::format("no function named '{}' (see `wisp ls`)", name));
}

}  // namespace

std::uint64_t Shard::BodyLimit(const HttpRequestHead& head) const {
  const Route route = RouteTarget(head.target());
  // Only a caller holding the token may send a deploy-sized body; anyone else is held to the
  // invoke limit, so no stranger can make the node buffer megabytes before the 401.
  if ((route.kind == RouteKind::kFunctions || route.kind == RouteKind::kModels) &&
      head.method() == http::verb::post && Authorized(head[http::field::authorization])) {
    return services_.config->http.max_deploy_body_bytes;
  }
  return services_.config->http.max_body_bytes;
}

bool Shard::Authorized(std::string_view authorization) const {
  const std::string_view token = BearerToken(authorization);
  const std::string& expected = services_.token;
  return token.size() == expected.size() && !expected.empty() &&
         CRYPTO_memcmp(token.data(), expected.data(), expected.size()) == 0;
}

void Shard::Handle(HttpRequest& request, HttpResponse& response) {
  const Route route = RouteTarget(request.target());
  const http::verb method = request.method();
  auto method_not_allowed = [&](std::string_view allowed) {
    response.set(http::field::allow, allowed);
    SetErrorResponse(InvalidArgument(fmt::format("{} does not accept {} (allowed: {})", route.path,
                                                 request.method_string(), allowed)),
                     response, 405);
  };
  switch (route.kind) {
    case RouteKind::kFunctionInvoke:
      // Reached only through HandleDeferred, which answers invokes itself.
      return SetErrorResponse(Internal("invoke routed to the synchronous handler"), response);
    case RouteKind::kFunctionInvokeAsync:
      if (method != http::verb::post) return method_not_allowed("POST");
      return HandleInvokeAsync(route, request, response);
    case RouteKind::kCall:
      if (method != http::verb::get && method != http::verb::head) return method_not_allowed("GET");
      return HandleCall(route, request, response);
    case RouteKind::kHealth:
      if (method != http::verb::get && method != http::verb::head) return method_not_allowed("GET");
      return HandleHealth(response);
    case RouteKind::kMetrics:
      if (method != http::verb::get && method != http::verb::head) return method_not_allowed("GET");
      return HandleMetrics(response);
    case RouteKind::kNotFound:
      return SetErrorResponse(
          NotFound(fmt::format("no route for {} {}", request.method_string(), route.path)),
          response);
    default:
      break;
  }
  // Everything below is the control API: the node token is required.
  if (!Authorized(request[http::field::authorization])) {
    return SetErrorResponse(
        Unauthenticated("the control API needs 'Authorization: Bearer <token>' with the node's "
                        "token (`wisp token` prints it)"),
        response);
  }
  switch (route.kind) {
    case RouteKind::kFunctions:
      if (method == http::verb::get) return HandleList(response);
      if (method == http::verb::post) return HandleDeploy(request, response);
      return method_not_allowed("GET, POST");
    case RouteKind::kFunction:
      if (method == http::verb::get) return HandleDescribe(route, response);
      if (method == http::verb::delete_) return HandleDelete(route, response);
      return method_not_allowed("GET, DELETE");
    case RouteKind::kFunctionLogs:
      if (method == http::verb::get) return HandleLogs(route, response);
      return method_not_allowed("GET");
    case RouteKind::kEvents:
      if (method == http::verb::get) return HandleEvents(route, response);
      return method_not_allowed("GET");
    case RouteKind::kModels:
      return HandleModels(route, request, response);
    default:
      return SetErrorResponse(Internal("unrouted request"), response);
  }
}

Result<Shard::ShardFunction*> Shard::FunctionToInvoke(const Route& route,
                                                      const HttpRequest& request) {
  ShardFunction* sf = FindFunction(route.name);
  if (sf == nullptr) return NoSuchFunction(route.name);
  const FunctionSpec& spec = *sf->fn->spec;
  if (spec.auth == AuthMode::kToken && !Authorized(request[http::field::authorization])) {
    return Unauthenticated(
        fmt::format("function '{}' needs 'Authorization: Bearer <token>'", spec.name));
  }
  if (services_.draining.load(std::memory_order_relaxed)) {
    return Unavailable("the node is shutting down; retry on another node");
  }
  return sf;
}

void Shard::HandleDeferred(HttpRequest& request, HttpResponse& response,
                           std::function<void()> done) {
  const Route route = RouteTarget(request.target());
  if (route.kind == RouteKind::kFunctionInvoke) {
    return HandleInvoke(route, request, response, std::move(done));
  }
  Handle(request, response);
  done();
}

namespace {

void SetReply(HttpResponse& response, Result<Reply>& reply, bool cold) {
  if (cold) response.set("X-Wisp-Cold-Start", "1");
  if (!reply.ok()) return SetErrorResponse(reply.status(), response);
  response.result(static_cast<unsigned>(reply->status));
  for (const auto& [name, value] : reply->headers) {
    if (IsSafeHeader(name, value) && !IsReservedHeader(name)) response.set(name, value);
  }
  if (!reply->content_type.empty() && IsSafeHeader("content-type", reply->content_type)) {
    response.set(http::field::content_type, reply->content_type);
  } else if (response[http::field::content_type].empty()) {
    response.set(http::field::content_type, "text/plain; charset=utf-8");
  }
  response.body() = std::move(reply->body);
}

}  // namespace

// An HTTP invoke waits in the function's queue for an instance (docs/lifecycle.md), so `done`
// may be called long after this returns; `request` and `response` live until then.
void Shard::HandleInvoke(const Route& route, HttpRequest& request, HttpResponse& response,
                         std::function<void()> done) {
  auto found = FunctionToInvoke(route, request);
  if (!found.ok()) {
    SetErrorResponse(found.status(), response);
    return done();
  }
  ShardFunction* sf = *found;

  auto call = std::make_shared<PendingInvoke>(*this);
  for (const auto& field : request) {
    call->headers.push_back({field.name_string(), field.value()});
  }
  Event& event = call->event;
  event.trigger = TriggerKind::kHttp;
  event.id = (static_cast<std::uint64_t>(index_) << 56) | ++next_event_seq_;
  event.timestamp = std::chrono::system_clock::now();
  event.method = request.method_string();
  event.path = route.path;
  event.query = route.query;
  event.content_type = request[http::field::content_type];
  event.headers = call->headers;
  event.body = request.body();

  auto decoded = DecodeInvokeBody(event.content_type, event.body);
  if (!decoded.ok()) {
    CountFailure(*sf, event, decoded.status());
    SetErrorResponse(decoded.status(), response);
    return done();
  }
  if (*decoded) {
    call->decoded = std::move(*decoded);
    event.json = &*call->decoded;
  }
  call->target = sf->instances;
  call->function = sf->fn->spec->name;
  call->response = &response;
  call->done = std::move(done);
  call->queued_at = std::chrono::steady_clock::now();
  CallBegins(call->function);  // ended wherever the call is answered
  Admit(call);
}

void Shard::Admit(const PendingInvokePtr& call) {
  const FunctionInstancesPtr fi = call->target;
  // The common case, a free instance and nobody waiting, needs no queue entry.
  if (const auto id = fi->pool.TryAcquire()) {
    PublishGauges(*fi);
    return RunOn(call, *id);
  }
  auto admitted = fi->pool.Admit([this, call](Result<InstancePool::InstanceId> instance) {
    RunOn(call, std::move(instance));
  });
  if (!admitted.ok()) {
    FunctionShardMetrics& metrics = fi->fn->metrics->shard(index_);
    metrics.trigger(call->event.trigger).error.Add();
    metrics.errors_by_kind[static_cast<std::size_t>(admitted.status().code())].Add();
    if (admitted.status().code() == StatusCode::kResourceExhausted) {
      metrics.rejected.Add();
      const int retry_after = fi->pool.RetryAfterSeconds();
      spdlog::debug("function {} shard {}: call refused, queue full ({} waiting); Retry-After {}",
                    call->function, index_, fi->pool.queue_depth(), retry_after);
      call->response->set(http::field::retry_after, std::to_string(retry_after));
      SetErrorResponse(admitted.status(), *call->response, 429);
    } else {
      SetErrorResponse(admitted.status(), *call->response);
    }
    if (archive_) archive_->RecordEvent(call->event, call->function, admitted.status(), {});
    CallEnds(call->function);
    return call->done();
  }
  ApplyActions(fi, std::move(*admitted));
}

void Shard::RunOn(const PendingInvokePtr& call, Result<InstancePool::InstanceId> instance) {
  const FunctionInstancesPtr fi = call->target;
  FunctionShardMetrics& metrics = fi->fn->metrics->shard(index_);
  if (!instance.ok()) {
    // Redeployed while it waited: the call runs on the new version instead.
    if (instance.status().code() == StatusCode::kUnavailable && fi->pool.drained()) {
      ShardFunction* now = FindFunction(call->function);
      if (now != nullptr && now->instances != fi &&
          !services_.draining.load(std::memory_order_relaxed)) {
        call->target = now->instances;
        return Admit(call);
      }
    }
    metrics.trigger(call->event.trigger).error.Add();
    metrics.errors_by_kind[static_cast<std::size_t>(instance.status().code())].Add();
    fi->fn->log->Append(LogLevel::kError, instance.status().ToString());
    if (archive_) archive_->RecordEvent(call->event, call->function, instance.status(), {});
    Result<Reply> failed = instance.status();
    SetReply(*call->response, failed, false);
    CallEnds(call->function);
    return call->done();
  }
  const InstancePool::InstanceId id = *instance;
  call->cold = fi->fresh.erase(id) > 0;
  if (!call->cold) metrics.warm_starts.Add();
  const auto now = std::chrono::steady_clock::now();
  metrics.queue_wait.Record(now - call->queued_at);
  metrics.in_flight.fetch_add(1, std::memory_order_relaxed);
  call->host.Bind(fi->fn.get(), &metrics, &call->event);
  call->started_at = now;
  fi->objects.at(id)->InvokeAsync(
      call->event, call->host, io_,
      [this, call, id](Result<Reply> reply) { FinishInvoke(call, id, std::move(reply)); });
}

void Shard::FinishInvoke(const PendingInvokePtr& call, InstancePool::InstanceId id,
                         Result<Reply> reply) {
  const FunctionInstancesPtr fi = call->target;
  FunctionShardMetrics& metrics = fi->fn->metrics->shard(index_);
  const auto elapsed = std::chrono::steady_clock::now() - call->started_at;
  metrics.in_flight.fetch_sub(1, std::memory_order_relaxed);
  metrics.trigger(call->event.trigger).duration.Record(elapsed);
  if (archive_) archive_->RecordEvent(call->event, call->function, reply.status(), elapsed);
  auto it = fi->objects.find(id);
  const bool reusable = it != fi->objects.end() && it->second->Reusable();
  if (!reusable) {
    fi->fn->log->Append(LogLevel::kWarn,
                        fmt::format("instance replaced after {}", reply.status().ToString()));
  }
  if (!reply.ok()) {
    fi->fn->log->Append(LogLevel::kError, reply.status().ToString());
    metrics.trigger(call->event.trigger).error.Add();
    metrics.errors_by_kind[static_cast<std::size_t>(reply.status().code())].Add();
  } else {
    metrics.trigger(call->event.trigger).ok.Add();
  }
  SetReply(*call->response, reply, call->cold);
  CallEnds(call->function);
  call->done();
  auto actions = fi->pool.Release(id, reusable, elapsed);
  if (!actions.ok()) {
    spdlog::error("function {}: {}", call->function, actions.status().message());
    return;
  }
  ApplyActions(fi, std::move(*actions));
}

void Shard::HandleInvokeAsync(const Route& route, HttpRequest& request, HttpResponse& response) {
  auto found = FunctionToInvoke(route, request);
  if (!found.ok()) return SetErrorResponse(found.status(), response);
  const FunctionSpec& spec = *(*found)->fn->spec;
  if (services_.async_calls == nullptr) {
    return SetErrorResponse(Unavailable("async invocations are not available on this node"),
                            response);
  }
  AsyncRequest async;
  async.function = spec.name;
  async.body = std::move(request.body());
  async.content_type = std::string(request[http::field::content_type]);
  async.query = std::string(route.query);
  // Checked now, so that a caller learns of a bad callback or topic before the call runs.
  async.callback_url = std::string(request["X-Callback-Url"]);
  if (!async.callback_url.empty()) {
    if (services_.http_actions == nullptr) {
      return SetErrorResponse(InvalidArgument("callbacks are not available on this node"),
                              response);
    }
    if (Status allowed = services_.http_actions->Check(async.callback_url); !allowed.ok()) {
      return SetErrorResponse(allowed.WithContext("X-Callback-Url"), response);
    }
  }
  async.reply_topic = std::string(request["X-Reply-Topic"]);
  if (!async.reply_topic.empty()) {
    if (!services_.publish) {
      return SetErrorResponse(
          InvalidArgument("X-Reply-Topic needs a broker (start the node with --broker)"), response);
    }
    if (async.reply_topic.find_first_of("+#") != std::string::npos ||
        async.reply_topic.size() > 1024) {
      return SetErrorResponse(
          InvalidArgument("X-Reply-Topic must be a topic to publish to (no wildcards)"), response);
    }
  }
  for (const auto& field : request) {
    const std::string_view name = field.name_string();
    // The node's own headers are not the function's business (the token least of all).
    if (boost::beast::iequals(name, "authorization") ||
        boost::beast::iequals(name, "x-callback-url") ||
        boost::beast::iequals(name, "x-reply-topic")) {
      continue;
    }
    async.headers.emplace_back(std::string(name), std::string(field.value()));
  }
  // A body that cannot run is refused now rather than failing later where nobody sees it.
  if (auto decoded = DecodeInvokeBody(async.content_type, async.body); !decoded.ok()) {
    return SetErrorResponse(decoded.status(), response);
  }
  auto id = services_.async_calls->Accept(async);
  if (!id.ok()) {
    if (id.status().code() == StatusCode::kResourceExhausted) response.set("Retry-After", "1");
    return SetErrorResponse(id.status(), response,
                            id.status().code() == StatusCode::kResourceExhausted ? 429 : 0);
  }
  AsyncCall call;
  call.id = *id;
  call.request = std::move(async);
  call.state = "queued";
  call.accepted_at = std::chrono::system_clock::now();
  boost::asio::post(io_, [this, call = std::move(call)] { RunAsync(call); });
  response.set("X-Call-Id", *id);
  response.set(http::field::location, "/v1/calls/" + *id);
  SetJson(response, http::status::accepted, {{"id", *id}, {"status_url", "/v1/calls/" + *id}});
}

namespace {

// The body as JSON text when it is UTF-8, else base64 (as `body_base64`).
void PutBody(json& out, const std::string& body) {
  if (IsValidUtf8(body)) {
    out["body"] = body;
    return;
  }
  std::string encoded(4 * ((body.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(encoded.data()),
                                reinterpret_cast<const unsigned char*>(body.data()),
                                static_cast<int>(body.size()));
  encoded.resize(static_cast<std::size_t>(n));
  out["body_base64"] = std::move(encoded);
}

}  // namespace

void Shard::HandleCall(const Route& route, HttpRequest& request, HttpResponse& response) {
  if (services_.async_calls == nullptr) {
    return SetErrorResponse(NotFound("async invocations are not available on this node"), response);
  }
  auto call = services_.async_calls->Get(std::string(route.name));
  if (!call.ok()) return SetErrorResponse(call.status(), response);
  const AsyncRequest& async = call->request;
  // A token-protected function's results need the token; a public one's, only the id.
  auto fn = services_.catalog->Find(async.function);
  const bool protected_fn = !fn || fn->spec->auth == AuthMode::kToken;
  if (protected_fn && !Authorized(request[http::field::authorization])) {
    return SetErrorResponse(
        Unauthenticated("this call's result needs 'Authorization: Bearer <token>'"), response);
  }
  json body = {{"id", call->id},
               {"function", async.function},
               {"state", call->state},
               {"accepted_at", Rfc3339(call->accepted_at)}};
  if (call->finished_at) body["finished_at"] = Rfc3339(*call->finished_at);
  if (call->result) {
    const AsyncResult& result = *call->result;
    if (result.ok) {
      json reply = {{"status", result.status}, {"content_type", result.content_type}};
      json headers = json::object();
      for (const auto& [name, value] : result.headers) headers[name] = value;
      reply["headers"] = std::move(headers);
      PutBody(reply, result.body);
      body["result"] = std::move(reply);
    } else {
      body["error"] = {{"kind", result.error_kind},
                       {"message", result.error_message},
                       {"status", result.status}};
    }
  }
  SetJson(response, http::status::ok, body);
}

void Shard::HandleDeploy(HttpRequest& request, HttpResponse& response) {
  const std::string_view content_type = request[http::field::content_type];
  if (!content_type.starts_with("application/cbor")) {
    return SetErrorResponse(
        InvalidArgument("deploy expects a CBOR bundle with Content-Type application/cbor "
                        "(use `wisp deploy DIR`)"),
        response, 415);
  }
  BundleLimits limits;
  limits.max_total_bytes = services_.config->http.max_deploy_body_bytes;
  auto bundle = DecodeBundle(request.body(), limits);
  if (!bundle.ok()) {
    const bool too_big = bundle.status().code() == StatusCode::kResourceExhausted;
    return SetErrorResponse(bundle.status().WithContext("bad bundle"), response, too_big ? 413 : 0);
  }
  auto deployed = services_.catalog->Deploy(*bundle);
  if (!deployed.ok()) return SetErrorResponse(deployed.status(), response);
  if (services_.on_catalog_changed) services_.on_catalog_changed();
  json list = json::array();
  for (const auto& fn : *deployed) {
    list.push_back(
        {{"name", fn->spec->name}, {"version", fn->spec->version}, {"runtime", fn->spec->runtime}});
  }
  SetJson(response, http::status::created, {{"deployed", list}});
}

void Shard::HandleList(HttpResponse& response) {
  json list = json::array();
  for (const auto& [name, fn] : *services_.catalog->Snapshot()) list.push_back(Summary(*fn));
  SetJson(response, http::status::ok, {{"functions", list}});
}

void Shard::HandleDescribe(const Route& route, HttpResponse& response) {
  auto fn = services_.catalog->Find(route.name);
  if (!fn) {
    return SetErrorResponse(NoSuchFunction(route.name), response);
  }
  const FunctionSpec& spec = *fn->spec;
  json body = Summary(*fn);
  body["environment"] = spec.environment;
  body["labels"] = spec.labels;
  body["limits"] = {{"memory", FormatByteSize(spec.limits.memory_bytes)},
                    {"timeout", FormatDuration(spec.limits.timeout)}};
  body["concurrency"] = {{"max", spec.concurrency_max}};
  body["scale"] = {{"min", spec.scale_min}, {"max", spec.scale_max}};
  body["files"] = fn->files;
  SetJson(response, http::status::ok, body);
}

void Shard::HandleDelete(const Route& route, HttpResponse& response) {
  const std::string name(route.name);
  Status removed = services_.catalog->Remove(name);
  if (!removed.ok()) return SetErrorResponse(removed, response);
  // The function's state goes with it; a new function of the same name starts empty.
  if (Status dropped = state_->DropNamespace(name); !dropped.ok()) {
    return SetErrorResponse(dropped.WithContext("deleted, but its state could not be dropped"),
                            response);
  }
  SyncCatalog();
  if (services_.on_catalog_changed) services_.on_catalog_changed();
  SetJson(response, http::status::ok, {{"deleted", name}});
}

void Shard::HandleLogs(const Route& route, HttpResponse& response) {
  auto fn = services_.catalog->Find(route.name);
  if (!fn) {
    return SetErrorResponse(NoSuchFunction(route.name), response);
  }
  std::size_t tail = 100;
  if (std::string_view text = QueryParam(route.query, "tail"); !text.empty()) {
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), tail);
    if (ec != std::errc() || ptr != text.data() + text.size()) {
      return SetErrorResponse(InvalidArgument(fmt::format("tail='{}' is not a number", text)),
                              response);
    }
  }
  json logs = json::array();
  for (const auto& entry : fn->log->Tail(tail)) {
    logs.push_back({{"time", Rfc3339(entry.time)},
                    {"level", LevelName(entry.level)},
                    {"message", entry.message}});
  }
  SetJson(response, http::status::ok, {{"logs", logs}});
}

void Shard::HandleHealth(HttpResponse& response) {
  const bool draining = services_.draining.load(std::memory_order_relaxed);
  SetJson(response, draining ? http::status::service_unavailable : http::status::ok,
          {{"status", draining ? "draining" : "ok"},
           {"version", WISP_VERSION},
           {"shards", services_.shard_count},
           {"functions", services_.catalog->Snapshot()->size()}});
}

void Shard::HandleMetrics(HttpResponse& response) {
  response.result(http::status::ok);
  response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  response.body() = services_.metrics->RenderPrometheus(WISP_VERSION, WISP_GIT_COMMIT);
  response.body() += fmt::format(
      "# HELP wisp_model_canary_rollbacks_total Canaries dropped automatically for failing.\n"
      "# TYPE wisp_model_canary_rollbacks_total counter\n"
      "wisp_model_canary_rollbacks_total {}\n",
      CanaryRollbackCount().load(std::memory_order_relaxed));
  const UpstreamMetrics& upstream = ModelUpstreamMetrics();
  response.body() += fmt::format(
      "# HELP wisp_model_escalations_total Model answers below the confidence bound sent "
      "upstream.\n"
      "# TYPE wisp_model_escalations_total counter\n"
      "wisp_model_escalations_total {}\n"
      "# HELP wisp_model_degraded_total Escalations answered locally: upstream failed or late.\n"
      "# TYPE wisp_model_degraded_total counter\n"
      "wisp_model_degraded_total {}\n"
      "# HELP wisp_model_upstream_seconds_total Time spent waiting for upstream nodes.\n"
      "# TYPE wisp_model_upstream_seconds_total counter\n"
      "wisp_model_upstream_seconds_total {}\n",
      upstream.escalations.load(std::memory_order_relaxed),
      upstream.degraded.load(std::memory_order_relaxed),
      upstream.latency_microseconds.load(std::memory_order_relaxed) / 1e6);
  std::string runs, rows, seconds;
  ForEachModelFunctionMetrics([&](const std::string& function, const ModelFunctionMetrics& m) {
    runs += fmt::format("wisp_model_runs_total{{function=\"{}\"}} {}\n", function,
                        m.runs.load(std::memory_order_relaxed));
    rows += fmt::format("wisp_model_inferences_total{{function=\"{}\"}} {}\n", function,
                        m.rows.load(std::memory_order_relaxed));
    seconds += fmt::format("wisp_model_inference_seconds_total{{function=\"{}\"}} {}\n", function,
                           m.run_nanoseconds.load(std::memory_order_relaxed) / 1e9);
  });
  response.body() += fmt::format(
      "# HELP wisp_model_runs_total Backend runs of a model function's model (one per batch).\n"
      "# TYPE wisp_model_runs_total counter\n{}"
      "# HELP wisp_model_inferences_total Events a model function's model answered.\n"
      "# TYPE wisp_model_inferences_total counter\n{}"
      "# HELP wisp_model_inference_seconds_total Time in the inference backend.\n"
      "# TYPE wisp_model_inference_seconds_total counter\n{}",
      runs, rows, seconds);
}

}  // namespace wisp
