#include "node/http_actions.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "http/client.h"
#include "http/tls.h"
#include "metrics/metrics.h"

namespace wisp {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Splits "HOST[:PORT]" (HOST may be "[v6]") off an authority.
Status ParseAuthority(std::string_view authority, std::uint16_t default_port, std::string* host,
                      std::uint16_t* port) {
  if (authority.empty()) return InvalidArgument("the URL has no host");
  if (authority.find('@') != std::string_view::npos) {
    return InvalidArgument("user info in the URL is not supported");
  }
  std::string_view port_text;
  if (authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return InvalidArgument("unterminated IPv6 address");
    *host = Lower(authority.substr(1, close - 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return InvalidArgument("junk after the IPv6 address");
      port_text = rest.substr(1);
    }
  } else {
    const auto colon = authority.rfind(':');
    *host = Lower(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (host->empty()) return InvalidArgument("the URL has no host");
  for (char c : *host) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
          c == '_')) {
      return InvalidArgument(fmt::format("'{}' is not a host name", *host));
    }
  }
  *port = default_port;
  if (!port_text.empty()) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc() || ptr != port_text.data() + port_text.size() || value == 0 ||
        value > 65535) {
      return InvalidArgument(fmt::format("'{}' is not a port", port_text));
    }
    *port = static_cast<std::uint16_t>(value);
  }
  return Status::Ok();
}

bool HasControlOrSpace(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f;
  });
}

// True for outcomes worth another attempt: the endpoint may be back in a moment.
bool Retryable(const Status& transport, int http_status) {
  if (!transport.ok()) {
    return transport.code() == StatusCode::kUnavailable ||
           transport.code() == StatusCode::kDeadlineExceeded ||
           transport.code() == StatusCode::kIoError;
  }
  return http_status == 429 || http_status >= 500;
}

}  // namespace

Result<HttpTarget> ParseHttpTarget(std::string_view url) {
  if (url.size() > 8192) return InvalidArgument("the URL is longer than 8 KiB");
  if (HasControlOrSpace(url)) return InvalidArgument("the URL contains spaces or control bytes");
  HttpTarget out;
  std::string_view rest;
  if (Lower(url.substr(0, 7)) == "http://") {
    rest = url.substr(7);
  } else if (Lower(url.substr(0, 8)) == "https://") {
    rest = url.substr(8);
    out.https = true;
  } else {
    return InvalidArgument(
        fmt::format("'{}' is not an http:// or https:// URL", url.substr(0, 64)));
  }
  if (const auto hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  const auto slash = rest.find_first_of("/?");
  RETURN_IF_ERROR(
      ParseAuthority(rest.substr(0, slash), out.https ? 443 : 80, &out.host, &out.port));
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (out.target.front() == '?') out.target.insert(0, "/");
  return out;
}

Result<HttpAllowEntry> ParseHttpAllowEntry(std::string_view entry) {
  ASSIGN_OR_RETURN(HttpTarget target, ParseHttpTarget(entry));
  if (target.target.find('?') != std::string::npos) {
    return InvalidArgument(fmt::format("'{}': an allowlist entry has no query", entry));
  }
  HttpAllowEntry out{std::move(target.host), target.port, std::move(target.target), target.https};
  while (!out.path.empty() && out.path.back() == '/') out.path.pop_back();
  return out;
}

bool IsAllowed(const HttpTarget& target, const std::vector<HttpAllowEntry>& allow) {
  std::string_view path = target.target;
  path = path.substr(0, path.find('?'));
  // "/a/../b" could climb out of an allowed prefix on servers that normalise it.
  if (path.find("/..") != std::string_view::npos || path.find("/./") != std::string_view::npos) {
    return false;
  }
  return std::any_of(allow.begin(), allow.end(), [&](const HttpAllowEntry& entry) {
    // An http:// entry does not allow https:// (nor the reverse): the scheme is part of what the
    // operator allowed.
    if (entry.https != target.https || entry.host != target.host || entry.port != target.port) {
      return false;
    }
    if (!path.starts_with(entry.path)) return false;
    return path.size() == entry.path.size() || path[entry.path.size()] == '/';
  });
}

HttpActions::HttpActions(const ActionsConfig& config, MetricsRegistry* metrics)
    : config_(config), metrics_(metrics) {
  for (const std::string& entry : config_.http_allow) {
    auto parsed = ParseHttpAllowEntry(entry);
    if (parsed.ok()) allow_.push_back(std::move(*parsed));  // config.cc refused bad ones
  }
  // Loaded once for all https POSTs; config.cc checked the files, so failing here means they
  // changed since, and https POSTs fail with the reason.
  if (std::any_of(allow_.begin(), allow_.end(), [](const auto& e) { return e.https; })) {
    auto tls = HttpTlsContext::Create(config_.tls);
    if (tls.ok()) {
      tls_ = std::move(*tls);
    } else {
      tls_status_ = tls.status().WithContext("actions.tls");
      spdlog::error("https HTTP actions will fail: {}", tls_status_.ToString());
    }
  }
  if (metrics_ != nullptr) {
    collector_id_ = metrics_->AddCollector([this](std::string& out) {
      AppendMetricFamily(out, "wisp_http_actions_total", "counter",
                         "HTTP actions (ctx.http_post, async callbacks), by outcome.");
      auto it = std::back_inserter(out);
      fmt::format_to(it, "wisp_http_actions_total{{result=\"sent\"}} {}\n", sent_.load());
      fmt::format_to(it, "wisp_http_actions_total{{result=\"rejected\"}} {}\n", rejected_.load());
      fmt::format_to(it, "wisp_http_actions_total{{result=\"failed\"}} {}\n", failed_.load());
      fmt::format_to(it, "wisp_http_actions_total{{result=\"refused\"}} {}\n", refused_.load());
      fmt::format_to(it, "wisp_http_actions_total{{result=\"dropped\"}} {}\n", dropped_.load());
      AppendMetricFamily(out, "wisp_http_action_retries_total", "counter",
                         "HTTP action attempts after the first.");
      fmt::format_to(it, "wisp_http_action_retries_total {}\n", retries_.load());
      AppendMetricFamily(out, "wisp_http_actions_queued", "gauge", "HTTP actions waiting.");
      fmt::format_to(it, "wisp_http_actions_queued {}\n", queued());
    });
  }
  for (int i = 0; i < config_.http_workers; ++i) workers_.emplace_back([this] { Work(); });
}

HttpActions::~HttpActions() {
  Stop();
  if (metrics_ != nullptr && collector_id_ >= 0) metrics_->RemoveCollector(collector_id_);
}

Status HttpActions::Check(std::string_view url) const {
  ASSIGN_OR_RETURN(HttpTarget target, ParseHttpTarget(url));
  if (!IsAllowed(target, allow_)) {
    return PermissionDenied(fmt::format(
        "'{}' is not in the node's allowlist (add a prefix of it to actions.http_allow in the "
        "node config)",
        url.substr(0, 128)));
  }
  return Status::Ok();
}

Status HttpActions::Enqueue(HttpPost post) {
  ASSIGN_OR_RETURN(HttpTarget target, ParseHttpTarget(post.url));
  if (!IsAllowed(target, allow_)) return Check(post.url);
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Unavailable("the node is shutting down");
    if (queue_.size() >= static_cast<std::size_t>(config_.http_queue)) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      return ResourceExhausted(
          fmt::format("{} HTTP actions are already waiting (actions.http_queue)", queue_.size()));
    }
    queue_.push_back(Queued{std::move(post), std::move(target)});
  }
  wake_.notify_one();
  return Status::Ok();
}

void HttpActions::Stop() {
  std::deque<Queued> abandoned;
  {
    std::lock_guard lock(mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    abandoned.swap(queue_);
  }
  wake_.notify_all();
  for (auto& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
  workers_.clear();
  for (auto& item : abandoned) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("http action to {} for {} dropped at shutdown", item.post.url, item.post.origin);
    if (item.post.done) item.post.done(Unavailable("dropped at shutdown"), 0);
  }
}

std::size_t HttpActions::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void HttpActions::Work() {
  for (;;) {
    Queued item;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    Send(item);
  }
}

void HttpActions::Send(Queued& item) {
  Url url;
  url.host = item.target.host;
  url.port = item.target.port;
  url.https = item.target.https;
  if (url.https && tls_ == nullptr) return Finish(item, tls_status_, 0);
  HttpHeaders headers = item.post.headers;
  headers.emplace_back("Content-Type", item.post.content_type.empty() ? "application/octet-stream"
                                                                      : item.post.content_type);
  std::chrono::milliseconds backoff{200};
  Status last;
  int last_http_status = 0;
  for (int attempt = 1; attempt <= config_.http_attempts; ++attempt) {
    if (attempt > 1) {
      retries_.fetch_add(1, std::memory_order_relaxed);
      std::unique_lock lock(mu_);
      if (wake_.wait_for(lock, backoff, [&] { return stopping_; })) break;
      backoff *= 4;
    }
    auto reply = HttpRequest(url, "POST", item.target.target, item.post.body, headers,
                             config_.http_timeout, tls_.get());
    last = reply.status();
    last_http_status = reply.ok() ? reply->status : 0;
    if (!Retryable(last, last_http_status)) break;
  }
  Finish(item, last, last_http_status);
}

void HttpActions::Finish(Queued& item, const Status& status, int http_status) {
  if (status.ok() && http_status < 400) {
    sent_.fetch_add(1, std::memory_order_relaxed);
  } else if (status.ok() && http_status != 429 && http_status < 500) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("http action to {} for {}: the endpoint answered {}", item.post.url,
                 item.post.origin, http_status);
  } else {
    failed_.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("http action to {} for {} failed: {}", item.post.url, item.post.origin,
                 status.ok() ? fmt::format("HTTP {}", http_status) : status.message());
  }
  if (item.post.done) {
    const Status outcome = status.ok() && http_status >= 500
                               ? Unavailable(fmt::format("the endpoint answered {}", http_status))
                               : status;
    item.post.done(outcome, http_status);
  }
}

}  // namespace wisp
