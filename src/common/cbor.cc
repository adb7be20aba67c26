#include "common/cbor.h"

#include <cstddef>
#include <string>

#include <fmt/format.h>

#include "common/utf8.h"

namespace wisp {
namespace {

using nlohmann::json;

// Builds nothing; stops the reader at the first container deeper than the limit.
class DepthLimit {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  explicit DepthLimit(int max_depth) : max_depth_(max_depth) {}

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(number_integer_t) { return true; }
  bool number_unsigned(number_unsigned_t) { return true; }
  bool number_float(number_float_t, const string_t&) { return true; }
  bool string(string_t& s) { return Text(s); }
  bool binary(binary_t&) { return true; }
  bool key(string_t& s) { return Text(s); }
  bool start_object(std::size_t) { return Enter(); }
  bool end_object() { return --depth_ >= 0; }
  bool start_array(std::size_t) { return Enter(); }
  bool end_array() { return --depth_ >= 0; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    return false;
  }
  bool too_deep() const { return too_deep_; }
  bool bad_text() const { return bad_text_; }

 private:
  // CBOR text must be UTF-8 (RFC 8949, 3.1); nlohmann keeps any bytes and then throws when the
  // value is written out as JSON, far from here.
  bool Text(const string_t& s) {
    if (IsValidUtf8(s)) return true;
    bad_text_ = true;
    return false;
  }
  bool Enter() {
    if (++depth_ <= max_depth_) return true;
    too_deep_ = true;
    return false;
  }
  int max_depth_;
  int depth_ = 0;
  bool too_deep_ = false;
  bool bad_text_ = false;
};

}  // namespace

Result<json> DecodeCbor(std::string_view bytes, std::string_view what, int max_depth) {
  const Status invalid = InvalidArgument(fmt::format("{} is not valid CBOR", what));
  try {
    DepthLimit limit(max_depth);
    if (!json::sax_parse(bytes.begin(), bytes.end(), &limit, json::input_format_t::cbor,
                         /*strict=*/true)) {
      if (limit.too_deep()) {
        return InvalidArgument(fmt::format("{} nests CBOR deeper than {} levels", what, max_depth));
      }
      if (limit.bad_text()) {
        return InvalidArgument(
            fmt::format("{} is not valid CBOR: a text string is not UTF-8", what));
      }
      return invalid;
    }
    json value = json::from_cbor(bytes.begin(), bytes.end(), /*strict=*/true,
                                 /*allow_exceptions=*/false);
    if (value.is_discarded()) return invalid;
    return value;
  } catch (const std::exception& e) {  // nlohmann throws for some lengths even when asked not to
    return InvalidArgument(fmt::format("{} is not valid CBOR: {}", what, e.what()));
  }
}

}  // namespace wisp
