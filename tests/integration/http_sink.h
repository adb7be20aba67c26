// A tiny HTTP/1.1 server on a loopback port the kernel picks, for the tests of the node's HTTP
// actions and callbacks: it records every request and answers with the statuses it is told to
// (then 200). One connection at a time, `Connection: close`; enough for a test, not a server.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace wisp::testing {

class HttpSink {
 public:
  struct Request {
    std::string method;
    std::string target;
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string body;
  };

  HttpSink() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 16);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~HttpSink() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }

  std::uint16_t port() const { return port_; }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // The next requests get these statuses, in order; after them, 200.
  void AnswerNext(std::vector<int> statuses) {
    std::lock_guard lock(mu_);
    for (int s : statuses) statuses_.push_back(s);
  }

  // Waits until `n` requests arrived; returns them all.
  std::vector<Request> WaitFor(std::size_t n,
                               std::chrono::seconds timeout = std::chrono::seconds(20)) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
    return requests_;
  }
  std::vector<Request> Received() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      Request request;
      if (Read(conn, &request)) {
        int status = 200;
        {
          std::lock_guard lock(mu_);
          if (!statuses_.empty()) {
            status = statuses_.front();
            statuses_.pop_front();
          }
          requests_.push_back(request);
        }
        cv_.notify_all();
        const std::string reply = "HTTP/1.1 " + std::to_string(status) +
                                  " X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        (void)!::send(conn, reply.data(), reply.size(), MSG_NOSIGNAL);
      }
      ::close(conn);
    }
  }

  static bool Read(int conn, Request* request) {
    std::string data;
    char buf[4096];
    std::size_t head_end = std::string::npos;
    std::size_t content_length = 0;
    for (;;) {
      pollfd p{conn, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) return false;
      ssize_t n = ::recv(conn, buf, sizeof(buf), 0);
      if (n <= 0) return false;
      data.append(buf, static_cast<std::size_t>(n));
      if (head_end == std::string::npos) {
        head_end = data.find("\r\n\r\n");
        if (head_end == std::string::npos) continue;
        ParseHead(data.substr(0, head_end), request);
        auto it = request->headers.find("content-length");
        if (it != request->headers.end()) content_length = std::stoul(it->second);
      }
      if (data.size() >= head_end + 4 + content_length) {
        request->body = data.substr(head_end + 4, content_length);
        return true;
      }
    }
  }

  static void ParseHead(const std::string& head, Request* request) {
    std::size_t line_end = head.find("\r\n");
    const std::string first = head.substr(0, line_end);
    const std::size_t sp1 = first.find(' ');
    const std::size_t sp2 = first.find(' ', sp1 + 1);
    request->method = first.substr(0, sp1);
    request->target = first.substr(sp1 + 1, sp2 - sp1 - 1);
    std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      std::size_t end = head.find("\r\n", pos);
      if (end == std::string::npos) end = head.size();
      const std::string line = head.substr(pos, end - pos);
      const std::size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::size_t v = colon + 1;
        while (v < line.size() && line[v] == ' ') ++v;
        request->headers[name] = line.substr(v);
      }
      pos = end + 2;
    }
  }

  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int> statuses_;
  std::vector<Request> requests_;
};

}  // namespace wisp::testing
