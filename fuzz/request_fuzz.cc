// Fuzzes what wispd does with the bytes of an HTTP request before a function runs: Beast's
// request parser with the node's limits, routing, the bearer token and the JSON and CBOR body
// decoders.
#include <utility>  // before Asio (Boost 1.74 + GCC 12 C++20)

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "http/request.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace http = boost::beast::http;
  http::request_parser<http::string_body> parser;
  parser.header_limit(16 << 10);
  parser.body_limit(1 << 20);
  parser.eager(true);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (ec || !parser.is_header_done()) return 0;
  const auto& request = parser.get();
  wisp::Route route = wisp::RouteTarget(request.target());
  (void)wisp::QueryParam(route.query, "tail");
  (void)wisp::BearerToken(request[http::field::authorization]);
  if (parser.is_done()) {
    (void)wisp::DecodeInvokeBody(request[http::field::content_type], request.body());
  }
  return 0;
}
