// The sandboxed LuaJIT runtime. Notes for readers:
//
// * Every lua_State is created with our allocator and the allocator's user data is the owning
//   LuaInstance, so any C function, hook or allocation finds its instance with lua_getallocf()
//   (no registry lookup, no light userdata, nothing to allocate).
// * Lua errors raised from our C functions unwind through C++ frames. LuaJIT uses C++-compatible
//   external unwinding on x64 and arm64 Linux, so destructors of locals run (checked on this
//   build); C++ exceptions (nlohmann) are still caught before they could reach Lua.
// * Lua API calls that can raise (anything that allocates) only run inside lua_pcall/lua_cpcall:
//   an unprotected error would end the process through the panic handler.

#include "runtime/lua/lua_runtime.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <lua.hpp>
#include <nlohmann/json.hpp>

#include "common/quote.h"
#include "detect/keyed_detectors.h"
#include "wisp/units.h"

namespace wisp {
namespace {

using Clock = std::chrono::steady_clock;

// The count hook runs every this many VM instructions. A clock read costs ~20ns, so this costs
// about 1% of interpreter time and stops a runaway loop within microseconds of its deadline.
constexpr int kHookInstructions = 1000;

// Deeper tables are refused when encoding; that also catches cycles without a visited set.
constexpr int kMaxEncodeDepth = 64;
// The JSON writer reads the clock every this many values (a value costs some 10-50ns).
constexpr std::size_t kJsonCheckValues = 1024;
// event.json is decoded recursively on the shard thread's C stack; this bounds that recursion.
constexpr int kMaxDecodeDepth = 128;
// Error messages travel into HTTP replies and logs; a handler can raise megabytes of text.
constexpr std::size_t kMaxErrorMessage = 8192;

// The largest integer a double (Lua's only number type) holds exactly.
constexpr double kMaxExactInteger = 9007199254740992.0;  // 2^53

constexpr const char* kTextPlain = "text/plain";
constexpr const char* kApplicationJson = "application/json";

// Globals a handler keeps; everything else the opened libraries define is removed (allowlist,
// so a LuaJIT update that adds a global cannot open a hole). pcall, xpcall, print, require and
// collectgarbage are replaced by our versions below.
constexpr std::string_view kAllowedGlobals[] = {
    "_G",           "_VERSION", "assert",   "error",    "getmetatable", "ipairs", "next",
    "pairs",        "pcall",    "print",    "rawequal", "rawget",       "rawset", "select",
    "setmetatable", "tonumber", "tostring", "type",     "unpack",       "xpcall", "coroutine",
    "string",       "table",    "math",     "bit"};

// Wraps the catching functions so that a call stopped for its timeout or memory cannot be
// resumed by user code: `pass` re-raises when the instance is aborted, else returns its
// arguments. Written in Lua (not as C calling lua_pcall) so pcall stays yieldable in coroutines.
// xpcall's message handler is wrapped too: Lua calls the handler again for an error raised inside
// it, so a handler that loops would be re-entered by every hook error and never return; once
// aborted, the wrapper returns at once instead of running the user's handler.
constexpr std::string_view kWrapCatchers = R"lua(
local raw_pcall, raw_xpcall, raw_resume, pass, aborted, type, error = ...
pcall = function(...) return pass(raw_pcall(...)) end
xpcall = function(f, handler, ...)
  if type(handler) ~= "function" then
    error("bad argument #2 to 'xpcall' (function expected)", 2)
  end
  local function guarded(e)
    if aborted() then return e end
    return handler(e)
  end
  return pass(raw_xpcall(f, guarded, ...))
end
coroutine.resume = function(...) return pass(raw_resume(...)) end
-- table.sort without a comparator compares in C, out of the hook's reach, and crafted input
-- drives its quicksort quadratic; a Lua comparator keeps every comparison under the timeout.
local raw_sort = table.sort
local function less(a, b) return a < b end
table.sort = function(t, cmp) return raw_sort(t, cmp or less) end
)lua";

// Strings the hot path pushes by name; anchored in the registry so that pushing them finds the
// interned string instead of allocating it again after a collection.
constexpr const char* kAnchoredNames[] = {"status", "statusCode", "body", "headers"};

int AbsIndex(lua_State* L, int index) {
  return (index > 0 || index <= LUA_REGISTRYINDEX) ? index : lua_gettop(L) + index + 1;
}

// Reads a whole regular file (symlinks refused: a function may only read what was deployed in
// its directory). Returns an empty string on success, else why it failed.
std::string ReadSourceFile(const std::string& path, std::uint64_t max_bytes, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::strerror(errno);
  struct stat st;
  std::string error;
  if (::fstat(fd, &st) != 0) {
    error = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    error = "not a regular file";
  } else if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    error = "larger than the function's memory limit";
  } else {
    out->resize(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < out->size()) {
      ssize_t n = ::read(fd, out->data() + done, out->size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? std::strerror(errno) : "file shrank while reading";
        break;
      }
      done += static_cast<std::size_t>(n);
    }
  }
  ::close(fd);
  return error;
}

// [A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*: no path separators, no "..", nothing absolute.
bool IsValidModuleName(std::string_view name) {
  if (name.empty() || name.size() > 200) return false;
  bool segment_empty = true;
  for (char c : name) {
    if (c == '.') {
      if (segment_empty) return false;
      segment_empty = true;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_') {
      segment_empty = false;
    } else {
      return false;
    }
  }
  return !segment_empty;
}

bool IsSafeRelativePath(std::string_view path) {
  if (path.empty() || path.front() == '/') return false;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view segment = path.substr(start, end - start);
    if (segment == "..") return false;
    start = end + 1;
  }
  return true;
}

// RFC 7230 token characters; header names outside this set could split or smuggle headers.
bool IsValidHeaderName(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name) {
    if (std::isalnum(c)) continue;
    if (std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0') continue;
    return false;
  }
  return true;
}

bool IsValidHeaderValue(std::string_view value) {
  return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

double SecondsSinceEpoch(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// Length of the valid UTF-8 sequence starting at s (RFC 3629: no overlongs, no surrogates,
// nothing above U+10FFFF), or 0 when it is not valid.
std::size_t Utf8SequenceLength(const unsigned char* s, std::size_t n) {
  unsigned char c = s[0];
  std::size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (std::size_t i = 2; i < len; ++i) {
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  }
  return len;
}

void AppendNumber(double d, std::string* out) {
  // Integral values print without a fraction ("3", not "3.0"), like Lua's tostring does.
  if (d == std::floor(d) && std::fabs(d) < 1e15) {
    fmt::format_to(std::back_inserter(*out), "{}", static_cast<long long>(d));
  } else {
    fmt::format_to(std::back_inserter(*out), "{}", d);  // shortest text that reads back exactly
  }
}

// Lua value -> JSON text. A table is an array when its keys are exactly 1..n (n > 0), else an
// object (so {} is "{}"); number and boolean keys become their text; metamethods are ignored.
//
// The text grows outside the Lua heap, where neither the allocator's limit nor the hook sees it,
// and a table may hold the same subtable many times (t = {t, t} nested 24 deep is 2^24 copies):
// so the writer stops once its output passes `max_bytes` or, checked every kJsonCheckValues
// values, once `deadline` has passed.
class JsonWriter {
 public:
  enum class Stop { kNone, kInvalid, kTooLarge, kTimeout };

  JsonWriter(lua_State* L, std::string* out, std::size_t max_bytes, Clock::time_point deadline)
      : L_(L), out_(out), max_bytes_(max_bytes), deadline_(deadline) {}

  // Appends the value at `index`. False when it has no JSON form (stop() is kInvalid, error()
  // says why) or when a limit stopped the writer (stop() says which).
  bool Write(int index) {
    if (!Value(AbsIndex(L_, index), 0)) return false;
    return !Full() || TooLarge();
  }
  Stop stop() const { return stop_; }
  const std::string& error() const { return error_; }

 private:
  bool Fail(std::string message) {
    stop_ = Stop::kInvalid;
    error_ = std::move(message);
    return false;
  }
  bool TooLarge() {
    stop_ = Stop::kTooLarge;
    return false;
  }
  bool Full() const { return out_->size() > max_bytes_; }

  bool Value(int index, int depth) {
    // Every value adds at most a few bytes before the next check, strings aside (String checks).
    if (Full()) return TooLarge();
    if (++values_ % kJsonCheckValues == 0 && Clock::now() >= deadline_) {
      stop_ = Stop::kTimeout;
      return false;
    }
    int type = lua_type(L_, index);
    switch (type) {
      case LUA_TNIL:
        out_->append("null");
        return true;
      case LUA_TBOOLEAN:
        out_->append(lua_toboolean(L_, index) ? "true" : "false");
        return true;
      case LUA_TNUMBER: {
        double d = lua_tonumber(L_, index);
        if (!std::isfinite(d)) return Fail("cannot encode NaN or infinity as JSON");
        AppendNumber(d, out_);
        return true;
      }
      case LUA_TSTRING: {
        std::size_t len = 0;
        const char* s = lua_tolstring(L_, index, &len);
        return String(reinterpret_cast<const unsigned char*>(s), len);
      }
      case LUA_TTABLE:
        return Table(index, depth);
      default:
        return Fail(fmt::format("cannot encode a {} value as JSON", lua_typename(L_, type)));
    }
  }

  bool Table(int index, int depth) {
    if (depth >= kMaxEncodeDepth) {
      return Fail(
          fmt::format("tables nested more than {} levels deep (or a cycle)", kMaxEncodeDepth));
    }
    if (!lua_checkstack(L_, 4)) return Fail("out of Lua stack space");
    std::size_t count = 0;
    double max_key = 0;
    bool sequence = true;
    lua_pushnil(L_);
    while (lua_next(L_, index) != 0) {
      lua_pop(L_, 1);
      ++count;
      if (lua_type(L_, -1) == LUA_TNUMBER) {
        double k = lua_tonumber(L_, -1);
        if (k >= 1 && k == std::floor(k)) {
          max_key = std::max(max_key, k);
          continue;
        }
      }
      sequence = false;
      lua_pop(L_, 1);
      break;
    }
    if (sequence && count > 0 && max_key == static_cast<double>(count)) {
      out_->push_back('[');
      for (std::size_t i = 1; i <= count; ++i) {
        if (i > 1) out_->push_back(',');
        lua_rawgeti(L_, index, static_cast<int>(i));
        bool ok = Value(lua_gettop(L_), depth + 1);
        lua_pop(L_, 1);
        if (!ok) return false;
      }
      out_->push_back(']');
      return true;
    }
    out_->push_back('{');
    bool first = true;
    lua_pushnil(L_);
    while (lua_next(L_, index) != 0) {
      if (!first) out_->push_back(',');
      first = false;
      bool ok = true;
      switch (lua_type(L_, -2)) {
        case LUA_TSTRING: {
          std::size_t len = 0;
          const char* s = lua_tolstring(L_, -2, &len);
          ok = String(reinterpret_cast<const unsigned char*>(s), len);
          break;
        }
        case LUA_TNUMBER: {
          // Formatted here: lua_tolstring would turn the key into a string and break lua_next.
          double k = lua_tonumber(L_, -2);
          if (!std::isfinite(k)) {
            ok = Fail("cannot encode a NaN or infinite key as JSON");
            break;
          }
          out_->push_back('"');
          AppendNumber(k, out_);
          out_->push_back('"');
          break;
        }
        case LUA_TBOOLEAN:
          out_->append(lua_toboolean(L_, -2) ? "\"true\"" : "\"false\"");
          break;
        default:
          // A table or function key has no meaningful text (its address changes every run).
          ok = Fail(fmt::format("cannot encode a {} key as JSON", luaL_typename(L_, -2)));
      }
      if (ok) {
        out_->push_back(':');
        ok = Value(lua_gettop(L_), depth + 1);
      }
      if (!ok) {
        lua_pop(L_, 2);
        return false;
      }
      lua_pop(L_, 1);
    }
    out_->push_back('}');
    return true;
  }

  bool String(const unsigned char* s, std::size_t n) {
    // The text takes at least n + 2 bytes; escapes add more, checked as they are written.
    if (n + 2 > max_bytes_ - std::min(max_bytes_, out_->size())) return TooLarge();
    out_->push_back('"');
    std::size_t start = 0;
    std::size_t i = 0;
    while (i < n) {
      unsigned char c = s[i];
      if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
        ++i;
        continue;
      }
      if (c >= 0x80) {
        std::size_t len = Utf8SequenceLength(s + i, n - i);
        // Lua strings are bytes; refusing beats silently altering them (replies, stored state).
        if (len == 0) return Fail("cannot encode a string that is not valid UTF-8 as JSON");
        i += len;
        continue;
      }
      out_->append(reinterpret_cast<const char*>(s + start), i - start);
      if (Full()) return TooLarge();
      switch (c) {
        case '"':
          out_->append("\\\"");
          break;
        case '\\':
          out_->append("\\\\");
          break;
        case '\b':
          out_->append("\\b");
          break;
        case '\f':
          out_->append("\\f");
          break;
        case '\n':
          out_->append("\\n");
          break;
        case '\r':
          out_->append("\\r");
          break;
        case '\t':
          out_->append("\\t");
          break;
        default:
          fmt::format_to(std::back_inserter(*out_), "\\u{:04x}", c);
      }
      start = ++i;
    }
    out_->append(reinterpret_cast<const char*>(s + start), n - start);
    out_->push_back('"');
    return true;
  }

  lua_State* L_;
  std::string* out_;
  const std::size_t max_bytes_;
  const Clock::time_point deadline_;
  std::size_t values_ = 0;
  Stop stop_ = Stop::kNone;
  std::string error_;
};

// JSON -> Lua. Decision: JSON null becomes nil (an absent key, a hole in an array) rather than a
// sentinel, so `if r.x then` reads naturally; a sentinel is true in a test, a known footgun of
// lua-cjson's cjson.null. Arrays become 1-based sequences. Raises a Lua error when too deep.
void PushJson(lua_State* L, const nlohmann::json& value, int depth) {
  using Type = nlohmann::json::value_t;
  if (depth > kMaxDecodeDepth) {
    luaL_error(L, "event.json is nested more than %d levels deep", kMaxDecodeDepth);
  }
  luaL_checkstack(L, 3, "event.json");
  switch (value.type()) {
    case Type::null:
    case Type::discarded:
      lua_pushnil(L);
      return;
    case Type::boolean:
      lua_pushboolean(L, value.get<bool>());
      return;
    case Type::number_integer:
      lua_pushnumber(L, static_cast<lua_Number>(value.get<std::int64_t>()));
      return;
    case Type::number_unsigned:
      lua_pushnumber(L, static_cast<lua_Number>(value.get<std::uint64_t>()));
      return;
    case Type::number_float:
      lua_pushnumber(L, value.get<double>());
      return;
    case Type::string: {
      const auto& s = value.get_ref<const std::string&>();
      lua_pushlstring(L, s.data(), s.size());
      return;
    }
    case Type::binary: {
      const auto& b = value.get_binary();
      lua_pushlstring(L, reinterpret_cast<const char*>(b.data()), b.size());
      return;
    }
    case Type::array: {
      lua_createtable(L, static_cast<int>(std::min<std::size_t>(value.size(), 1 << 24)), 0);
      int i = 0;
      for (const auto& item : value) {
        ++i;
        PushJson(L, item, depth + 1);
        if (lua_isnil(L, -1)) {
          lua_pop(L, 1);
        } else {
          lua_rawseti(L, -2, i);
        }
      }
      return;
    }
    case Type::object: {
      lua_createtable(L, 0, static_cast<int>(std::min<std::size_t>(value.size(), 1 << 24)));
      for (auto it = value.begin(); it != value.end(); ++it) {
        PushJson(L, it.value(), depth + 1);
        if (lua_isnil(L, -1)) {
          lua_pop(L, 1);
          continue;
        }
        const std::string& key = it.key();
        lua_pushlstring(L, key.data(), key.size());
        lua_insert(L, -2);
        lua_rawset(L, -3);
      }
      return;
    }
  }
  lua_pushnil(L);
}

// Pushes what tostring() would give for argument i, without looking up the global `tostring`
// (which the handler may have replaced).
void PushDisplayString(lua_State* L, int i) {
  switch (lua_type(L, i)) {
    case LUA_TSTRING:
      lua_pushvalue(L, i);
      break;
    case LUA_TNUMBER:
      lua_pushvalue(L, i);
      lua_tolstring(L, -1, nullptr);  // converts the copy, not the caller's argument
      break;
    case LUA_TBOOLEAN:
      lua_pushstring(L, lua_toboolean(L, i) ? "true" : "false");
      break;
    case LUA_TNIL:
      lua_pushliteral(L, "nil");
      break;
    default:
      if (luaL_callmeta(L, i, "__tostring")) {
        if (!lua_isstring(L, -1)) luaL_error(L, "'__tostring' must return a string");
      } else {
        lua_pushfstring(L, "%s: %p", luaL_typename(L, i), lua_topointer(L, i));
      }
  }
}

// The text of an error value, for FunctionError. Runs outside protected mode, so it must not
// allocate on the Lua heap: numbers are formatted here and __tostring is not called.
std::string ErrorText(lua_State* L, int index) {
  std::string text;
  switch (lua_type(L, index)) {
    case LUA_TSTRING: {
      std::size_t len = 0;
      const char* s = lua_tolstring(L, index, &len);
      text.assign(s, std::min(len, kMaxErrorMessage));
      if (len > kMaxErrorMessage) text.append("...");
      break;
    }
    case LUA_TNUMBER:
      AppendNumber(lua_tonumber(L, index), &text);
      break;
    default:
      text = fmt::format("(error object is a {} value)", luaL_typename(L, index));
  }
  return text;
}

std::optional<std::chrono::milliseconds> OptionalTtl(lua_State* L, int index, const char* what) {
  if (lua_isnoneornil(L, index)) return std::nullopt;
  double seconds = luaL_checknumber(L, index);
  if (!(seconds > 0) || seconds > 1e10) {
    luaL_error(L, "%s: ttl must be a positive number of seconds", what);
  }
  auto ms = static_cast<std::int64_t>(std::llround(seconds * 1000));
  return std::chrono::milliseconds(std::max<std::int64_t>(ms, 1));
}

// --- Lua patterns ----------------------------------------------------------------------------
//
// LuaJIT's string.find, match, gmatch and gsub run Lua's backtracking matcher inside one C call,
// where the count hook never fires: string.find(("a"):rep(16), ("a-"):rep(16) .. "b") ran for
// 11 s under a 1 s timeout. These replacements implement the same pattern language (Lua 5.1 as
// LuaJIT has it, with its error messages and its recursion limit), and charge every step of the
// matcher against a budget; each time kPatternCheckSteps are spent they call `check`, which
// raises the timeout abort once the call is past its deadline.

// Called by the matcher every kPatternCheckSteps steps; raises to stop the call.
using LimitCheck = void (*)(lua_State*);

// A step costs a few nanoseconds and a clock read about 20, so this stays under 1% overhead.
constexpr std::size_t kPatternCheckSteps = 1024;
constexpr int kMaxPatternCaptures = 32;  // LUA_MAXCAPTURES
// Match recurses on the C stack (captures, repetitions); LuaJIT refuses deeper at the same 200.
constexpr int kMaxPatternDepth = 200;
constexpr char kPatternEscape = '%';

// Character classes are ASCII whatever the C locale, as in LuaJIT.
bool IsAsciiDigit(int c) { return c >= '0' && c <= '9'; }
bool IsAsciiLower(int c) { return c >= 'a' && c <= 'z'; }
bool IsAsciiUpper(int c) { return c >= 'A' && c <= 'Z'; }
bool IsAsciiAlpha(int c) { return IsAsciiLower(c) || IsAsciiUpper(c); }
bool IsAsciiAlnum(int c) { return IsAsciiAlpha(c) || IsAsciiDigit(c); }
bool IsAsciiSpace(int c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
bool IsAsciiControl(int c) { return c < 0x20 || c == 0x7f; }
bool IsAsciiPunct(int c) { return c > 0x20 && c < 0x7f && !IsAsciiAlnum(c); }
bool IsAsciiHexDigit(int c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Does byte c belong to class %<cl>? An unknown letter (or any other byte) stands for itself.
bool MatchClass(int c, int cl) {
  bool in;
  switch (IsAsciiUpper(cl) ? cl - 'A' + 'a' : cl) {
    case 'a':
      in = IsAsciiAlpha(c);
      break;
    case 'c':
      in = IsAsciiControl(c);
      break;
    case 'd':
      in = IsAsciiDigit(c);
      break;
    case 'g':  // from Lua 5.2; LuaJIT 2.1 has it
      in = c > 0x20 && c < 0x7f;
      break;
    case 'l':
      in = IsAsciiLower(c);
      break;
    case 'p':
      in = IsAsciiPunct(c);
      break;
    case 's':
      in = IsAsciiSpace(c);
      break;
    case 'u':
      in = IsAsciiUpper(c);
      break;
    case 'w':
      in = IsAsciiAlnum(c);
      break;
    case 'x':
      in = IsAsciiHexDigit(c);
      break;
    case 'z':
      in = c == 0;
      break;
    default:
      return cl == c;
  }
  return IsAsciiUpper(cl) ? !in : in;  // %A is the complement of %a
}

// True when a find pattern needs the matcher; without these bytes it is a plain substring.
bool HasPatternSpecials(const char* p, std::size_t len) {
  for (std::size_t i = 0; i < len; ++i) {
    if (p[i] != '\0' && std::strchr("^$*+?.([%-", p[i]) != nullptr) return true;
  }
  return false;
}

// One subject string matched against patterns. Patterns are NUL-terminated (Lua strings are),
// and, as in Lua 5.1, a pattern ends at its first NUL byte (%z matches a zero byte).
class PatternMatcher {
 public:
  PatternMatcher(lua_State* L, const char* subject, std::size_t len, LimitCheck check)
      : L_(L), begin_(subject), end_(subject + len), check_(check) {}

  const char* end() const { return end_; }

  // Where a match of pattern p that starts at s ends, or null. Forgets earlier captures.
  const char* MatchAt(const char* s, const char* p) {
    level_ = 0;
    depth_ = 0;
    return Match(s, p);
  }

  // Pushes capture i of the last match; with no captures, capture 0 is the whole match s..e.
  void PushCapture(int i, const char* s, const char* e) {
    if (i >= level_) {
      if (i != 0) luaL_error(L_, "invalid capture index");
      lua_pushlstring(L_, s, static_cast<std::size_t>(e - s));
      return;
    }
    const Capture& capture = captures_[i];
    if (capture.len == kUnfinished) luaL_error(L_, "unfinished capture");
    if (capture.len == kPosition) {
      lua_pushinteger(L_, capture.start - begin_ + 1);
    } else {
      lua_pushlstring(L_, capture.start, static_cast<std::size_t>(capture.len));
    }
  }

  // Pushes every capture, or the whole match s..e when there are none (and s is not null).
  // Returns how many values it pushed.
  int PushCaptures(const char* s, const char* e) {
    int n = (level_ == 0 && s != nullptr) ? 1 : level_;
    luaL_checkstack(L_, n, "too many captures");
    for (int i = 0; i < n; ++i) PushCapture(i, s, e);
    return n;
  }

 private:
  // Capture lengths that are not lengths.
  static constexpr std::ptrdiff_t kUnfinished = -1;
  static constexpr std::ptrdiff_t kPosition = -2;

  struct Capture {
    const char* start;
    std::ptrdiff_t len;
  };

  void Charge(std::size_t steps) {
    if (steps < budget_) {
      budget_ -= steps;
      return;
    }
    budget_ = kPatternCheckSteps;
    check_(L_);
  }

  // Testing one byte against the item p..ep costs more when the item is a long [set].
  static std::size_t ItemCost(const char* p, const char* ep) {
    return 1 + static_cast<std::size_t>(ep - p) / 16;
  }

  // The end of the single-byte item at p (a byte, ., %x or [set]).
  const char* ItemEnd(const char* p) {
    char c = *p++;
    if (c == kPatternEscape) {
      if (*p == '\0') luaL_error(L_, "malformed pattern (ends with '%%')");
      return p + 1;
    }
    if (c == '[') {
      if (*p == '^') ++p;
      // The first byte of a set is a member even when it is ']', hence the do-while.
      do {
        if (*p == '\0') luaL_error(L_, "malformed pattern (missing ']')");
        if (*p++ == kPatternEscape && *p != '\0') ++p;
      } while (*p != ']');
      return p + 1;
    }
    return p;
  }

  // Is byte c in the set p..end, where p is at '[' and end at the closing ']'?
  static bool MatchSet(int c, const char* p, const char* end) {
    bool member = true;
    if (p[1] == '^') {
      member = false;
      ++p;
    }
    while (++p < end) {
      if (*p == kPatternEscape) {
        ++p;
        if (MatchClass(c, static_cast<unsigned char>(*p))) return member;
      } else if (p[1] == '-' && p + 2 < end) {
        p += 2;
        if (static_cast<unsigned char>(p[-2]) <= c && c <= static_cast<unsigned char>(*p)) {
          return member;
        }
      } else if (static_cast<unsigned char>(*p) == c) {
        return member;
      }
    }
    return !member;
  }

  // Does the byte at s match the item p..ep? False at the end of the subject.
  bool MatchItem(const char* s, const char* p, const char* ep) const {
    if (s >= end_) return false;
    int c = static_cast<unsigned char>(*s);
    switch (*p) {
      case '.':
        return true;
      case kPatternEscape:
        return MatchClass(c, static_cast<unsigned char>(p[1]));
      case '[':
        return MatchSet(c, p, ep - 1);
      default:
        return static_cast<unsigned char>(*p) == c;
    }
  }

  const char* Match(const char* s, const char* p) {
    if (++depth_ > kMaxPatternDepth) luaL_error(L_, "pattern too complex");
    const char* result = MatchFrom(s, p);
    --depth_;
    return result;
  }

  // Match without the depth count. Tail positions loop here instead of recursing, so that only
  // branching (captures, repetitions) costs C stack.
  const char* MatchFrom(const char* s, const char* p) {
    while (true) {
      Charge(1);
      switch (*p) {
        case '\0':  // the end of the pattern: matched
          return s;
        case '(':
          if (p[1] == ')') return StartCapture(s, p + 2, kPosition);
          return StartCapture(s, p + 1, kUnfinished);
        case ')':
          return EndCapture(s, p + 1);
        case '$':
          if (p[1] == '\0') return s == end_ ? s : nullptr;
          break;  // a '$' elsewhere is an ordinary byte
        case kPatternEscape:
          if (p[1] == 'b') {
            s = MatchBalance(s, p + 2);
            if (s == nullptr) return nullptr;
            p += 4;
            continue;
          }
          if (p[1] == 'f') {
            p += 2;
            if (*p != '[') luaL_error(L_, "missing '[' after '%%f' in pattern");
            const char* ep = ItemEnd(p);
            Charge(2 * ItemCost(p, ep));
            // The bytes before the subject and at its end count as '\0'.
            int previous = s == begin_ ? 0 : static_cast<unsigned char>(s[-1]);
            int current = s < end_ ? static_cast<unsigned char>(*s) : 0;
            if (MatchSet(previous, p, ep - 1) || !MatchSet(current, p, ep - 1)) return nullptr;
            p = ep;
            continue;
          }
          if (IsAsciiDigit(static_cast<unsigned char>(p[1]))) {
            s = MatchBackReference(s, static_cast<unsigned char>(p[1]));
            if (s == nullptr) return nullptr;
            p += 2;
            continue;
          }
          break;  // %a, %., ...: a single-byte item
        default:
          break;
      }
      // A single-byte item, maybe followed by a repetition.
      const char* ep = ItemEnd(p);
      Charge(ItemCost(p, ep));
      bool matched = MatchItem(s, p, ep);
      switch (*ep) {
        case '?':
          if (matched) {
            const char* result = Match(s + 1, ep + 1);
            if (result != nullptr) return result;
          }
          p = ep + 1;
          continue;
        case '*':
          return MaxExpand(s, p, ep);
        case '+':
          return matched ? MaxExpand(s + 1, p, ep) : nullptr;
        case '-':
          return MinExpand(s, p, ep);
        default:
          if (!matched) return nullptr;
          ++s;
          p = ep;
      }
    }
  }

  // item* and item+: the longest run first, then one fewer each time the rest fails.
  const char* MaxExpand(const char* s, const char* p, const char* ep) {
    const std::size_t cost = ItemCost(p, ep);
    std::ptrdiff_t count = 0;
    while (MatchItem(s + count, p, ep)) {
      Charge(cost);
      ++count;
    }
    for (; count >= 0; --count) {
      const char* result = Match(s + count, ep + 1);
      if (result != nullptr) return result;
    }
    return nullptr;
  }

  // item-: the shortest run first, one more each time the rest fails.
  const char* MinExpand(const char* s, const char* p, const char* ep) {
    const std::size_t cost = ItemCost(p, ep);
    while (true) {
      const char* result = Match(s, ep + 1);
      if (result != nullptr) return result;
      Charge(cost);
      if (!MatchItem(s, p, ep)) return nullptr;
      ++s;
    }
  }

  const char* StartCapture(const char* s, const char* p, std::ptrdiff_t what) {
    if (level_ >= kMaxPatternCaptures) luaL_error(L_, "too many captures");
    captures_[level_].start = s;
    captures_[level_].len = what;
    ++level_;
    const char* result = Match(s, p);
    if (result == nullptr) --level_;  // undo the capture for the next alternative
    return result;
  }

  const char* EndCapture(const char* s, const char* p) {
    int open = level_ - 1;
    while (open >= 0 && captures_[open].len != kUnfinished) --open;
    if (open < 0) luaL_error(L_, "invalid pattern capture");
    captures_[open].len = s - captures_[open].start;
    const char* result = Match(s, p);
    if (result == nullptr) captures_[open].len = kUnfinished;
    return result;
  }

  // %bxy at s: x, then bytes up to the y that balances it.
  const char* MatchBalance(const char* s, const char* p) {
    if (p[0] == '\0' || p[1] == '\0') luaL_error(L_, "unbalanced pattern");
    if (s >= end_ || *s != p[0]) return nullptr;
    const char open = p[0];
    const char close = p[1];
    const char* start = s;
    int depth = 1;
    const char* result = nullptr;
    while (++s < end_) {
      if (*s == close) {
        if (--depth == 0) {
          result = s + 1;
          break;
        }
      } else if (*s == open) {
        ++depth;
      }
    }
    Charge(1 + static_cast<std::size_t>(s - start));
    return result;
  }

  // %1-%9 (and %0, which is always invalid here): the text of an earlier, closed capture.
  const char* MatchBackReference(const char* s, int digit) {
    int i = digit - '1';
    if (i < 0 || i >= level_ || captures_[i].len == kUnfinished) {
      luaL_error(L_, "invalid capture index");
    }
    // A position capture has no text: it never matches, as in Lua.
    if (captures_[i].len == kPosition) return nullptr;
    auto len = static_cast<std::size_t>(captures_[i].len);
    Charge(1 + len / 64);
    if (static_cast<std::size_t>(end_ - s) < len || std::memcmp(captures_[i].start, s, len) != 0) {
      return nullptr;
    }
    return s + len;
  }

  lua_State* L_;
  const char* begin_;
  const char* end_;
  LimitCheck check_;
  std::size_t budget_ = kPatternCheckSteps;
  int level_ = 0;  // captures opened so far
  int depth_ = 0;  // Match recursion
  Capture captures_[kMaxPatternCaptures];
};

// Lua's init argument: 1-based, negative counts from the end; clamped to 0..len (0-based).
std::size_t PatternStart(lua_State* L, int arg, std::size_t len) {
  lua_Integer init = luaL_optinteger(L, arg, 1);
  auto n = static_cast<lua_Integer>(len);
  lua_Integer start = init < 0 ? init + n : init - 1;
  return static_cast<std::size_t>(std::clamp<lua_Integer>(start, 0, n));
}

// string.find (find) and string.match.
int PatternFind(lua_State* L, LimitCheck check, bool find) {
  std::size_t len = 0, pattern_len = 0;
  const char* s = luaL_checklstring(L, 1, &len);
  const char* p = luaL_checklstring(L, 2, &pattern_len);
  std::size_t start = PatternStart(L, 3, len);
  if (find && (lua_toboolean(L, 4) || !HasPatternSpecials(p, pattern_len))) {
    // A plain substring: memmem is linear and never backtracks.
    const void* at =
        pattern_len == 0 ? s + start : ::memmem(s + start, len - start, p, pattern_len);
    if (at == nullptr) {
      lua_pushnil(L);
      return 1;
    }
    std::ptrdiff_t offset = static_cast<const char*>(at) - s;
    lua_pushinteger(L, offset + 1);
    lua_pushinteger(L, offset + static_cast<std::ptrdiff_t>(pattern_len));
    return 2;
  }
  PatternMatcher matcher(L, s, len, check);
  bool anchored = *p == '^';
  if (anchored) ++p;
  const char* from = s + start;
  do {
    const char* e = matcher.MatchAt(from, p);
    if (e != nullptr) {
      if (!find) return matcher.PushCaptures(from, e);
      lua_pushinteger(L, from - s + 1);
      lua_pushinteger(L, e - s);
      return 2 + matcher.PushCaptures(nullptr, nullptr);
    }
  } while (from++ < matcher.end() && !anchored);
  lua_pushnil(L);
  return 1;
}

// The iterator string.gmatch returns. Upvalues: subject, pattern, next start offset. As in Lua
// 5.1, '^' is an ordinary byte here (an anchor would stop the iteration).
int PatternGmatchStep(lua_State* L, LimitCheck check) {
  std::size_t len = 0;
  const char* s = lua_tolstring(L, lua_upvalueindex(1), &len);
  const char* p = lua_tostring(L, lua_upvalueindex(2));
  auto offset = static_cast<std::size_t>(lua_tointeger(L, lua_upvalueindex(3)));
  PatternMatcher matcher(L, s, len, check);
  for (std::size_t i = offset; i <= len; ++i) {
    const char* from = s + i;
    const char* e = matcher.MatchAt(from, p);
    if (e == nullptr) continue;
    // After an empty match the next search starts one byte later, so the iteration ends.
    lua_pushinteger(L, (e - s) + (e == from ? 1 : 0));
    lua_replace(L, lua_upvalueindex(3));
    return matcher.PushCaptures(from, e);
  }
  return 0;
}

// Appends the replacement of the match s..e to `buffer`. The replacement is argument 3: a
// string with %0-%9 references, a table indexed by the first capture, or a function called
// with the captures; nil or false from the last two keeps the matched text.
void AddReplacement(lua_State* L, PatternMatcher& matcher, luaL_Buffer* buffer, const char* s,
                    const char* e) {
  switch (lua_type(L, 3)) {
    case LUA_TFUNCTION: {
      lua_pushvalue(L, 3);
      int n = matcher.PushCaptures(s, e);
      lua_call(L, n, 1);
      break;
    }
    case LUA_TTABLE:
      matcher.PushCapture(0, s, e);
      lua_gettable(L, 3);
      break;
    default: {  // a string or a number
      std::size_t len = 0;
      const char* r = lua_tolstring(L, 3, &len);
      for (std::size_t i = 0; i < len; ++i) {
        if (r[i] != kPatternEscape) {
          luaL_addchar(buffer, r[i]);
          continue;
        }
        // A trailing '%' reads the string's NUL terminator, which Lua 5.1 appends as is.
        unsigned char c = static_cast<unsigned char>(r[++i]);
        if (!IsAsciiDigit(c)) {
          luaL_addchar(buffer, static_cast<char>(c));
        } else if (c == '0') {
          luaL_addlstring(buffer, s, static_cast<std::size_t>(e - s));
        } else {
          matcher.PushCapture(c - '1', s, e);
          luaL_addvalue(buffer);
        }
      }
      return;
    }
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    lua_pushlstring(L, s, static_cast<std::size_t>(e - s));
  } else if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  }
  luaL_addvalue(buffer);
}

int PatternGsub(lua_State* L, LimitCheck check) {
  std::size_t len = 0;
  const char* src = luaL_checklstring(L, 1, &len);
  const char* p = luaL_checkstring(L, 2);
  int replacement_type = lua_type(L, 3);
  luaL_argcheck(L,
                replacement_type == LUA_TNUMBER || replacement_type == LUA_TSTRING ||
                    replacement_type == LUA_TFUNCTION || replacement_type == LUA_TTABLE,
                3, "string/function/table expected");
  lua_Integer max = luaL_optinteger(L, 4, static_cast<lua_Integer>(len) + 1);
  bool anchored = *p == '^';
  if (anchored) ++p;
  PatternMatcher matcher(L, src, len, check);
  luaL_Buffer buffer;
  luaL_buffinit(L, &buffer);
  lua_Integer count = 0;
  while (count < max) {
    const char* e = matcher.MatchAt(src, p);
    if (e != nullptr) {
      ++count;
      AddReplacement(L, matcher, &buffer, src, e);
    }
    if (e != nullptr && e > src) {
      src = e;
    } else if (src < matcher.end()) {
      luaL_addchar(&buffer, *src++);  // no match here, or an empty one: keep this byte
    } else {
      break;
    }
    if (anchored) break;
  }
  luaL_addlstring(&buffer, src, static_cast<std::size_t>(matcher.end() - src));
  luaL_pushresult(&buffer);
  lua_pushinteger(L, count);
  return 2;
}

// The Lua-callable functions, for one LimitCheck.
template <LimitCheck kCheck>
struct PatternFunctions {
  static int Find(lua_State* L) { return PatternFind(L, kCheck, true); }
  static int Match(lua_State* L) { return PatternFind(L, kCheck, false); }
  static int GmatchStep(lua_State* L) { return PatternGmatchStep(L, kCheck); }
  static int Gmatch(lua_State* L) {
    luaL_checkstring(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, &GmatchStep, 3);
    return 1;
  }
  static int Gsub(lua_State* L) { return PatternGsub(L, kCheck); }
};

class LuaInstance final : public Instance {
 public:
  LuaInstance(FunctionSpecPtr spec, std::string dir)
      : spec_(std::move(spec)), dir_(std::move(dir)), limit_(spec_->limits.memory_bytes) {}

  ~LuaInstance() override {
    if (L_ != nullptr) lua_close(L_);
  }

  LuaInstance(const LuaInstance&) = delete;
  LuaInstance& operator=(const LuaInstance&) = delete;

  // Creates the state, the sandbox and ctx, and loads the handler. Called once.
  Status Load() {
    L_ = lua_newstate(&LuaInstance::Allocate, this);
    if (L_ == nullptr) {
      if (abort_ == Abort::kMemory) {
        return ResourceExhausted(
            fmt::format("memory limit of {} is too small to start Lua", FormatByteSize(limit_)));
      }
      // LuaJIT built without GC64 on x64 refuses custom allocators.
      return Internal("lua_newstate failed: this LuaJIT build does not accept an allocator");
    }
    // The JIT never starts here anyway (the jit library, which switches it on, is not opened),
    // but say it: hooks do not run inside compiled traces, so a compiled loop would escape the
    // timeout. Interpreter-only costs compute-heavy handlers speed; the timeout is worth more.
    if (luaJIT_setmode(L_, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF) == 0) {
      return Internal("cannot switch the LuaJIT compiler off");
    }
    // Installed for the state's whole life instead of per call: setting a hook rewrites
    // LuaJIT's dispatch table, and code only runs during Load and Invoke, both under a deadline.
    lua_sethook(L_, &LuaInstance::Hook, LUA_MASKCOUNT, kHookInstructions);
    deadline_ = Clock::now() + spec_->limits.timeout;
    int rc = lua_cpcall(L_, &LuaInstance::Setup, nullptr);
    if (abort_ != Abort::kNone) {
      Status status = AbortStatus();
      return Status(status.code(), status.message() + " while loading");
    }
    if (rc != 0) {
      Status status = InvalidArgument(ErrorText(L_, -1));
      lua_settop(L_, 0);
      return status;
    }
    lua_settop(L_, 0);
    return Status::Ok();
  }

  Result<Reply> Invoke(const Event& event, HostApi& host) override {
    if (abort_ != Abort::kNone) return AbortStatus();
    Reply reply;
    event_ = &event;
    host_ = &host;
    reply_ = &reply;
    deadline_ = Clock::now() + spec_->limits.timeout;
    lua_rawgeti(L_, LUA_REGISTRYINDEX, call_ref_);
    int rc = lua_pcall(L_, 0, 0, 0);
    // Cleared before anything else so that no Lua code (a coroutine resumed later, a stale event
    // table) can reach the borrowed event or host after this call.
    event_ = nullptr;
    event_table_ = nullptr;
    host_ = nullptr;
    reply_ = nullptr;
    if (abort_ != Abort::kNone) {
      lua_settop(L_, 0);
      return AbortStatus();
    }
    if (rc != 0) {
      std::string message = ErrorText(L_, -1);
      lua_settop(L_, 0);
      return FunctionError(std::move(message));
    }
    if (!reply_status_.ok()) return std::exchange(reply_status_, Status());
    return reply;
  }

  bool Reusable() const override { return abort_ == Abort::kNone; }
  std::uint64_t MemoryBytes() const override { return used_; }

 private:
  enum class Abort { kNone, kTimeout, kMemory };

  static LuaInstance* From(lua_State* L) {
    void* ud = nullptr;
    lua_getallocf(L, &ud);
    return static_cast<LuaInstance*>(ud);
  }

  Status AbortStatus() const {
    if (abort_ == Abort::kTimeout) {
      return DeadlineExceeded(
          fmt::format("function exceeded its {} timeout", FormatDuration(spec_->limits.timeout)));
    }
    return ResourceExhausted(
        fmt::format("function exceeded its memory limit of {}", FormatByteSize(limit_)));
  }

  // The state's allocator. Refuses growth past the limit (Lua then raises "not enough memory")
  // and marks the instance aborted, so the error cannot be caught and ignored. Shrinking always
  // succeeds: LuaJIT shrinks during collection, where a failure would be raised mid-GC.
  static void* Allocate(void* ud, void* ptr, std::size_t old_size, std::size_t new_size) {
    auto* self = static_cast<LuaInstance*>(ud);
    if (ptr == nullptr) old_size = 0;
    if (new_size == 0) {
      std::free(ptr);
      self->used_ -= old_size;
      return nullptr;
    }
    if (new_size > old_size && new_size - old_size > self->limit_ - self->used_) {
      if (self->abort_ == Abort::kNone) self->abort_ = Abort::kMemory;
      return nullptr;
    }
    void* result = std::realloc(ptr, new_size);
    if (result == nullptr) {
      if (self->abort_ == Abort::kNone) self->abort_ = Abort::kMemory;
      return nullptr;
    }
    self->used_ = self->used_ - old_size + new_size;
    return result;
  }

  [[noreturn]] static void RaiseAbort(lua_State* L) {
    // A string made at setup: raising must not allocate, the heap may be full.
    lua_rawgeti(L, LUA_REGISTRYINDEX, From(L)->abort_message_ref_);
    lua_error(L);
    std::abort();  // lua_error does not return
  }

  // Once past the deadline, raises on every run for the rest of the instance's life, so a
  // handler that catches the error only gets another one 1000 instructions later.
  static void Hook(lua_State* L, lua_Debug*) { CheckLimits(L); }

  // Raises the abort once the call is past its deadline or already aborted. The hook and the
  // long-running C functions (the pattern matcher, the JSON writer) share it.
  static void CheckLimits(lua_State* L) {
    LuaInstance* self = From(L);
    if (self->abort_ == Abort::kNone) {
      if (Clock::now() < self->deadline_) return;
      self->abort_ = Abort::kTimeout;
    }
    RaiseAbort(L);
  }

  // `pass` and `aborted` of kWrapCatchers.
  static int PassUnlessAborted(lua_State* L) {
    if (From(L)->abort_ != Abort::kNone) RaiseAbort(L);
    return lua_gettop(L);
  }
  static int IsAborted(lua_State* L) {
    lua_pushboolean(L, From(L)->abort_ != Abort::kNone);
    return 1;
  }

  // Runs under lua_cpcall from Load.
  static int Setup(lua_State* L) {
    LuaInstance* self = From(L);
    lua_pushliteral(L, "wisp: call stopped (timeout or memory limit)");
    self->abort_message_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_createtable(L, 0, 0);
    for (const char* name : kAnchoredNames) {
      lua_pushstring(L, name);
      lua_rawseti(L, -2, static_cast<int>(lua_objlen(L, -2) + 1));
    }
    luaL_ref(L, LUA_REGISTRYINDEX);

    OpenSandbox(L);
    self->event_metatable_ref_ = MakeEventMetatable(L);
    self->ctx_ref_ = MakeContext(L, *self->spec_);
    lua_pushcfunction(L, &LuaInstance::CallHandler);
    self->call_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
    self->handler_ref_ = LoadHandler(L, *self);
    return 0;
  }

  static void OpenSandbox(lua_State* L) {
    const luaL_Reg libraries[] = {{"", luaopen_base},
                                  {LUA_TABLIBNAME, luaopen_table},
                                  {LUA_STRLIBNAME, luaopen_string},
                                  {LUA_MATHLIBNAME, luaopen_math},
                                  {LUA_BITLIBNAME, luaopen_bit}};
    for (const luaL_Reg& library : libraries) {
      lua_pushcfunction(L, library.func);
      lua_pushstring(L, library.name);
      lua_call(L, 1, 0);
    }
    // Clearing existing fields during lua_next is allowed.
    lua_pushnil(L);
    while (lua_next(L, LUA_GLOBALSINDEX) != 0) {
      lua_pop(L, 1);
      bool keep = false;
      if (lua_type(L, -1) == LUA_TSTRING) {
        std::size_t len = 0;
        const char* name = lua_tolstring(L, -1, &len);
        keep = std::find(std::begin(kAllowedGlobals), std::end(kAllowedGlobals),
                         std::string_view(name, len)) != std::end(kAllowedGlobals);
      }
      if (!keep) {
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, LUA_GLOBALSINDEX);
      }
    }
    // string.dump makes bytecode, and loading crafted bytecode escapes any Lua sandbox.
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    // LuaJIT's pattern functions cannot be stopped by the hook; ours check the deadline.
    using Patterns = PatternFunctions<&LuaInstance::CheckLimits>;
    const luaL_Reg patterns[] = {{"find", &Patterns::Find},
                                 {"match", &Patterns::Match},
                                 {"gmatch", &Patterns::Gmatch},
                                 {"gsub", &Patterns::Gsub}};
    for (const luaL_Reg& f : patterns) {
      lua_pushcfunction(L, f.func);
      lua_setfield(L, -2, f.name);
    }
    // Method calls (("x"):find(p)) look up the strings' metatable __index. LuaJIT points it at
    // this same table; setting it says so and keeps the originals unreachable regardless.
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1) == 0) luaL_error(L, "strings have no metatable");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 3);

    lua_pushcfunction(L, &LuaInstance::Print);
    lua_setglobal(L, "print");
    lua_pushcfunction(L, &LuaInstance::CollectGarbage);
    lua_setglobal(L, "collectgarbage");
    lua_createtable(L, 0, 0);  // this instance's loaded modules
    lua_pushcclosure(L, &LuaInstance::Require, 1);
    lua_setglobal(L, "require");

    if (luaL_loadbuffer(L, kWrapCatchers.data(), kWrapCatchers.size(), "=wisp") != 0) {
      lua_error(L);
    }
    lua_getglobal(L, "pcall");
    lua_getglobal(L, "xpcall");
    lua_getglobal(L, LUA_COLIBNAME);
    lua_getfield(L, -1, "resume");
    lua_remove(L, -2);
    lua_pushcfunction(L, &LuaInstance::PassUnlessAborted);
    lua_pushcfunction(L, &LuaInstance::IsAborted);
    lua_getglobal(L, "type");
    lua_getglobal(L, "error");
    lua_call(L, 7, 0);
  }

  // Replaces the table on top of the stack by an empty proxy that reads from it and refuses
  // writes: ctx lives as long as the instance, so a handler assigning ctx.state = nil would
  // otherwise break every later call.
  static void MakeReadOnlyProxy(lua_State* L) {
    lua_createtable(L, 0, 0);
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, &LuaInstance::RefuseWrite);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
  }

  static int RefuseWrite(lua_State* L) {
    return luaL_error(L, "ctx is read-only (keep your own values in locals or globals)");
  }

  static int MakeEventMetatable(lua_State* L) {
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, &LuaInstance::EventIndex);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    return luaL_ref(L, LUA_REGISTRYINDEX);
  }

  // ctx is built once per instance and passed to every call. Log levels: ctx.log (info),
  // ctx.warn, ctx.error, one function per level because that reads best at the call site and
  // matches console.log/warn/error that most users know.
  static int MakeContext(lua_State* L, const FunctionSpec& spec) {
    lua_createtable(L, 0, 8);

    lua_createtable(L, 0, static_cast<int>(spec.environment.size()));
    for (const auto& [name, value] : spec.environment) {
      lua_pushlstring(L, name.data(), name.size());
      lua_pushlstring(L, value.data(), value.size());
      lua_rawset(L, -3);
    }
    lua_pushcclosure(L, &LuaInstance::CtxEnv, 1);
    lua_setfield(L, -2, "env");

    const luaL_Reg functions[] = {{"log", &LuaInstance::CtxLog<LogLevel::kInfo>},
                                  {"warn", &LuaInstance::CtxLog<LogLevel::kWarn>},
                                  {"error", &LuaInstance::CtxLog<LogLevel::kError>},
                                  {"now", &LuaInstance::CtxNow},
                                  {"emit", &LuaInstance::CtxEmit},
                                  {"http_post", &LuaInstance::CtxHttpPost},
                                  {"infer", &LuaInstance::CtxInfer},
                                  {"detect", &LuaInstance::CtxDetect}};
    for (const luaL_Reg& f : functions) {
      lua_pushcfunction(L, f.func);
      lua_setfield(L, -2, f.name);
    }

    const luaL_Reg state_methods[] = {{"get", &LuaInstance::StateGet},
                                      {"put", &LuaInstance::StatePut},
                                      {"delete", &LuaInstance::StateDelete},
                                      {"incr", &LuaInstance::StateIncr}};
    lua_createtable(L, 0, 4);
    for (const luaL_Reg& f : state_methods) {
      lua_pushcfunction(L, f.func);
      lua_setfield(L, -2, f.name);
    }
    MakeReadOnlyProxy(L);
    lua_setfield(L, -2, "state");

    MakeReadOnlyProxy(L);
    return luaL_ref(L, LUA_REGISTRYINDEX);
  }

  // Loads the handler file and returns a registry reference to the entry function.
  static int LoadHandler(lua_State* L, LuaInstance& self) {
    const std::string file =
        self.spec_->handler_file.empty() ? "handler.lua" : self.spec_->handler_file;
    const std::string entry =
        self.spec_->handler_entry.empty() ? "handle" : self.spec_->handler_entry;
    if (!IsSafeRelativePath(file)) {
      luaL_error(L, "%s: the handler file must be a path inside the function directory",
                 file.c_str());
    }
    std::string source;
    std::string error = ReadSourceFile(self.dir_ + "/" + file, self.limit_, &source);
    if (!error.empty())
      luaL_error(L, "%s: cannot read the handler file: %s", file.c_str(), error.c_str());
    if (!source.empty() && source[0] == LUA_SIGNATURE[0]) {
      luaL_error(L, "%s: is precompiled bytecode; deploy the Lua source", file.c_str());
    }
    std::string chunk_name = "@" + file;
    // Mode "t": text only, bytecode is refused even if the check above were bypassed.
    if (luaL_loadbufferx(L, source.data(), source.size(), chunk_name.c_str(), "t") != 0) {
      lua_error(L);
    }
    source = std::string();  // the text can be large; Lua holds the compiled form now
    lua_call(L, 0, 1);
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, entry.c_str());
      if (lua_isfunction(L, -1)) return luaL_ref(L, LUA_REGISTRYINDEX);
      lua_pop(L, 1);
    }
    lua_getglobal(L, entry.c_str());
    if (lua_isfunction(L, -1)) return luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_error(L,
               "%s: no function '%s' (return a table holding it, e.g. `local M = {} function "
               "M.%s(event, ctx) ... end return M`, or define a global function '%s')",
               file.c_str(), entry.c_str(), entry.c_str(), entry.c_str());
    return LUA_NOREF;
  }

  // The function Invoke calls in protected mode: builds the event, calls the handler and
  // converts its result. Converting here (and not after lua_pcall) keeps every allocation of
  // the call protected.
  static int CallHandler(lua_State* L) {
    LuaInstance* self = From(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->handler_ref_);
    // The only table made per call. Its fields are filled in on first access (EventIndex), so
    // a handler that ignores the headers never pays for them.
    lua_createtable(L, 0, 0);
    self->event_table_ = lua_topointer(L, -1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->event_metatable_ref_);
    lua_setmetatable(L, -2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, self->ctx_ref_);
    lua_call(L, 2, 1);
    self->reply_status_ = ConvertReply(L, lua_gettop(L), self->reply_);
    return 0;
  }

  // event.<key>: materialises the field from the current Event and caches it in the table.
  // An event table kept from an earlier call (or touched outside a call) yields nil: its Event
  // is gone, and the pointer check keeps a stale table from reading the current one.
  static int EventIndex(lua_State* L) {
    LuaInstance* self = From(L);
    const Event* event = self->event_;
    if (event == nullptr || lua_topointer(L, 1) != self->event_table_ ||
        lua_type(L, 2) != LUA_TSTRING) {
      return 0;
    }
    std::size_t len = 0;
    const char* k = lua_tolstring(L, 2, &len);
    std::string_view key(k, len);
    // Empty method, path and topic mean "not this kind of trigger" and read as nil; query,
    // content_type and body are always strings so handlers need no nil checks for them.
    auto push_optional = [L](std::string_view s) {
      if (s.empty()) return false;
      lua_pushlstring(L, s.data(), s.size());
      return true;
    };
    bool found = true;
    if (key == "body") {
      lua_pushlstring(L, event->body.data(), event->body.size());
    } else if (key == "json") {
      if (event->json == nullptr) return 0;
      PushJson(L, *event->json, 0);
    } else if (key == "headers") {
      PushHeaders(L, *self, *event);
    } else if (key == "method") {
      found = push_optional(event->method);
    } else if (key == "path") {
      found = push_optional(event->path);
    } else if (key == "query") {
      lua_pushlstring(L, event->query.data(), event->query.size());
    } else if (key == "content_type") {
      lua_pushlstring(L, event->content_type.data(), event->content_type.size());
    } else if (key == "trigger") {
      std::string_view name = TriggerKindName(event->trigger);
      lua_pushlstring(L, name.data(), name.size());
    } else if (key == "topic") {
      found = push_optional(event->topic);
    } else if (key == "id") {
      char hex[17];
      auto end = fmt::format_to_n(hex, sizeof(hex), "{:016x}", event->id).out;
      lua_pushlstring(L, hex, static_cast<std::size_t>(end - hex));
    } else if (key == "timestamp") {
      lua_pushnumber(L, SecondsSinceEpoch(event->timestamp));
    } else {
      found = false;
    }
    if (!found) return 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
  }

  // Header names are case-insensitive and arrive as sent, so they are lower-cased here; repeated
  // headers are joined with ", " as HTTP allows.
  static void PushHeaders(lua_State* L, LuaInstance& self, const Event& event) {
    lua_createtable(L, 0, static_cast<int>(event.headers.size()));
    std::string& name = self.scratch_;
    for (const HeaderView& header : event.headers) {
      name.assign(header.name);
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      lua_pushlstring(L, name.data(), name.size());
      lua_pushvalue(L, -1);
      lua_rawget(L, -3);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlstring(L, header.value.data(), header.value.size());
      } else {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, header.value.data(), header.value.size());
        lua_concat(L, 3);
      }
      lua_rawset(L, -3);
    }
  }

  static Status ConvertReply(lua_State* L, int index, Reply* reply) {
    switch (lua_type(L, index)) {
      case LUA_TNIL:
        return Status::Ok();
      case LUA_TSTRING: {
        std::size_t len = 0;
        const char* s = lua_tolstring(L, index, &len);
        reply->body.assign(s, len);
        reply->content_type = kTextPlain;
        return Status::Ok();
      }
      case LUA_TNUMBER:
      case LUA_TBOOLEAN:
      case LUA_TTABLE:
        break;
      default:
        return FunctionError(fmt::format("handler returned a {} value, which is not a reply",
                                         luaL_typename(L, index)));
    }
    if (lua_type(L, index) != LUA_TTABLE || !IsReplyTable(L, index)) {
      return EncodeBody(L, index, reply);
    }

    lua_pushliteral(L, "status");
    lua_rawget(L, index);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "statusCode");
      lua_rawget(L, index);
    }
    if (!lua_isnil(L, -1)) {
      // 1xx are interim responses: the server would send one and then no final reply.
      if (lua_type(L, -1) != LUA_TNUMBER) {
        return FunctionError(
            fmt::format("handler returned a status of type {} (use a number, "
                        "200-599)",
                        luaL_typename(L, -1)));
      }
      double status = lua_tonumber(L, -1);
      if (!(status >= 200 && status <= 599 && status == std::floor(status))) {
        std::string shown;
        AppendNumber(status, &shown);
        return FunctionError(
            fmt::format("handler returned invalid status {} (use 200-599)", shown));
      }
      reply->status = static_cast<int>(status);
    }
    lua_pop(L, 1);

    lua_pushliteral(L, "headers");
    lua_rawget(L, index);
    if (!lua_isnil(L, -1)) {
      if (!lua_istable(L, -1)) {
        return FunctionError("handler returned invalid headers (want a table of name = value)");
      }
      int headers = lua_gettop(L);
      lua_pushnil(L);
      while (lua_next(L, headers) != 0) {
        int value_type = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING ||
            (value_type != LUA_TSTRING && value_type != LUA_TNUMBER)) {
          return FunctionError("handler returned invalid headers (want a table of name = value)");
        }
        std::size_t name_len = 0, value_len = 0;
        const char* name = lua_tolstring(L, -2, &name_len);
        const char* value = lua_tolstring(L, -1, &value_len);  // converts the value, not the key
        std::string_view name_view(name, name_len), value_view(value, value_len);
        if (!IsValidHeaderName(name_view) || !IsValidHeaderValue(value_view)) {
          return FunctionError(
              fmt::format("handler returned invalid header {}", QuoteUntrusted(name_view)));
        }
        if (EqualsIgnoreCase(name_view, "content-type")) {
          reply->content_type.assign(value_view);
        } else {
          reply->headers.emplace_back(name_view, value_view);
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);

    lua_pushliteral(L, "body");
    lua_rawget(L, index);
    int body = lua_gettop(L);
    switch (lua_type(L, body)) {
      case LUA_TNIL:
        return Status::Ok();
      case LUA_TSTRING: {
        std::size_t len = 0;
        const char* s = lua_tolstring(L, body, &len);
        reply->body.assign(s, len);
        if (reply->content_type.empty()) reply->content_type = kTextPlain;
        return Status::Ok();
      }
      case LUA_TTABLE:
      case LUA_TNUMBER:
      case LUA_TBOOLEAN:
        return EncodeBody(L, body, reply);
      default:
        return FunctionError(
            fmt::format("handler returned a body of type {}", luaL_typename(L, body)));
    }
  }

  // A table with any of these keys is a reply ({status=, body=, ...}); any other is data.
  static bool IsReplyTable(lua_State* L, int index) {
    for (const char* key : kAnchoredNames) {
      lua_pushstring(L, key);
      lua_rawget(L, index);
      bool present = !lua_isnil(L, -1);
      lua_pop(L, 1);
      if (present) return true;
    }
    return false;
  }

  static Status EncodeBody(lua_State* L, int index, Reply* reply) {
    std::string error;
    if (!WriteJson(L, index, &reply->body, &error)) {
      reply->body.clear();
      return FunctionError("handler returned a body that is not JSON: " + error);
    }
    if (reply->content_type.empty()) reply->content_type = kApplicationJson;
    return Status::Ok();
  }

  // Appends the value at `index` as JSON to *out; false (with *error) when it has no JSON form.
  // The text lives outside the Lua heap, so it may take only the memory the instance has left;
  // past that, or past the deadline, the call is aborted as by the allocator or the hook (the
  // instance is then replaced): a few shared subtables can make gigabytes of text.
  static bool WriteJson(lua_State* L, int index, std::string* out, std::string* error) {
    LuaInstance* self = From(L);
    JsonWriter::Stop stop;
    {  // the writer (and its strings) is gone before anything raises
      JsonWriter writer(L, out, self->limit_ - self->used_, self->deadline_);
      if (writer.Write(index)) return true;
      stop = writer.stop();
      if (stop == JsonWriter::Stop::kInvalid) *error = writer.error();
    }
    if (stop == JsonWriter::Stop::kInvalid) return false;
    std::string().swap(*out);  // give the partial text back now, not at the next call
    if (self->abort_ == Abort::kNone) {
      self->abort_ = stop == JsonWriter::Stop::kTimeout ? Abort::kTimeout : Abort::kMemory;
    }
    RaiseAbort(L);
  }

  static HostApi& RequireHost(lua_State* L, const char* what) {
    HostApi* host = From(L)->host_;
    if (host == nullptr) luaL_error(L, "%s is only available while the handler runs", what);
    return *host;
  }

  // Joins the arguments like print does, with spaces, into one log line.
  static void LogArguments(lua_State* L, LogLevel level) {
    LuaInstance* self = From(L);
    int n = lua_gettop(L);
    luaL_Buffer buffer;
    luaL_buffinit(L, &buffer);
    for (int i = 1; i <= n; ++i) {
      if (i > 1) luaL_addchar(&buffer, ' ');
      PushDisplayString(L, i);
      luaL_addvalue(&buffer);
    }
    luaL_pushresult(&buffer);
    std::size_t len = 0;
    const char* text = lua_tolstring(L, -1, &len);
    if (self->host_ != nullptr) {
      self->host_->Log(level, std::string_view(text, len));
    } else {
      // Only while the handler file loads; there is no call to attribute the line to.
      spdlog::info("function {}: {}", self->spec_->name, std::string_view(text, len));
    }
  }

  template <LogLevel level>
  static int CtxLog(lua_State* L) {
    LogArguments(L, level);
    return 0;
  }

  // print() goes to the function's log at info level, like ctx.log: stdout is the node's.
  static int Print(lua_State* L) {
    LogArguments(L, LogLevel::kInfo);
    return 0;
  }

  // Decision: "count" (watch your memory), "collect" and "step" are allowed; "stop",
  // "restart", "setpause" and "setstepmul" are refused because they let a handler switch its
  // collector off or starve it, and the instance then dies of its memory limit instead.
  static int CollectGarbage(lua_State* L) {
    const char* option = luaL_optstring(L, 1, "collect");
    std::string_view opt(option);
    if (opt == "count") {
      lua_pushnumber(L, lua_gc(L, LUA_GCCOUNT, 0) + lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0);
      return 1;
    }
    if (opt == "collect") {
      lua_gc(L, LUA_GCCOLLECT, 0);
      lua_pushinteger(L, 0);
      return 1;
    }
    if (opt == "step") {
      lua_pushboolean(L, lua_gc(L, LUA_GCSTEP, static_cast<int>(luaL_optinteger(L, 2, 0))));
      return 1;
    }
    return luaL_error(L,
                      "collectgarbage: option '%s' is not allowed here (use count, collect "
                      "or step)",
                      option);
  }

  // require(name): Lua source files of the function's directory only. "a.b" is a/b.lua. Loaded
  // modules are cached per instance (upvalue 1); false marks one being loaded, to catch loops.
  static int Require(lua_State* L) {
    LuaInstance* self = From(L);
    std::size_t len = 0;
    const char* name = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    if (!IsValidModuleName(std::string_view(name, len))) return ModuleNotFound(L, name);
    lua_pushvalue(L, 1);
    lua_rawget(L, lua_upvalueindex(1));
    if (lua_toboolean(L, -1)) return 1;
    if (!lua_isnil(L, -1)) {
      return luaL_error(L, "require: module '%s' requires itself while loading", name);
    }
    lua_pop(L, 1);

    std::string relative(name, len);
    std::replace(relative.begin(), relative.end(), '.', '/');
    relative += ".lua";
    std::string source;
    if (!ReadSourceFile(self->dir_ + "/" + relative, self->limit_, &source).empty()) {
      return ModuleNotFound(L, name);
    }
    std::string chunk_name = "@" + relative;
    // Text only: loading bytecode is a known way out of any Lua sandbox.
    if (luaL_loadbufferx(L, source.data(), source.size(), chunk_name.c_str(), "t") != 0) {
      return luaL_error(L, "require: module '%s': %s", name, lua_tostring(L, -1));
    }
    source = std::string();

    lua_pushvalue(L, 1);
    lua_pushboolean(L, 0);
    lua_rawset(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) != 0) {
      // Forget the "loading" mark so the next call reports this error again, not a loop.
      lua_pushvalue(L, 1);
      lua_pushnil(L);
      lua_rawset(L, lua_upvalueindex(1));
      if (self->abort_ != Abort::kNone) RaiseAbort(L);
      return lua_error(L);
    }
    if (!lua_toboolean(L, -1)) {
      lua_pop(L, 1);
      lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, lua_upvalueindex(1));
    return 1;
  }

  static int ModuleNotFound(lua_State* L, const char* name) {
    return luaL_error(L, "require: module '%s' not found in the function directory", name);
  }

  static int CtxEnv(lua_State* L) {
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
  }

  static int CtxNow(lua_State* L) {
    lua_pushnumber(L, SecondsSinceEpoch(RequireHost(L, "ctx.now").Now()));
    return 1;
  }

  // Values that are not strings are sent as JSON text. A table is encoded into the instance's
  // scratch buffer, which is reused across calls.
  static std::string_view PayloadArgument(lua_State* L, int index, const char* what) {
    int type = lua_type(L, index);
    if (type == LUA_TSTRING) {
      std::size_t len = 0;
      const char* s = lua_tolstring(L, index, &len);
      return {s, len};
    }
    if (type != LUA_TTABLE && type != LUA_TNUMBER && type != LUA_TBOOLEAN) {
      luaL_error(L, "%s: want a string or a table, got %s", what, luaL_typename(L, index));
    }
    std::string& out = From(L)->scratch_;
    out.clear();
    std::string error;
    if (!WriteJson(L, index, &out, &error)) luaL_error(L, "%s: %s", what, error.c_str());
    return out;
  }

  // ctx.detect(algorithm, key, value [, params]): scores `value` (a number or an array of
  // numbers) with the named anomaly detector kept for `key` in the function's state; returns
  // score (0..1) and anomaly (boolean). `params` maps detector parameters to values. A bad
  // algorithm, parameter or value raises; so does a store failure.
  static int CtxDetect(lua_State* L) {
    HostApi& host = RequireHost(L, "ctx.detect");
    const char* algorithm = luaL_checkstring(L, 1);
    std::size_t key_len = 0;
    const char* key = luaL_checklstring(L, 2, &key_len);
    std::vector<double> values;
    if (lua_type(L, 3) == LUA_TNUMBER) {
      values.push_back(lua_tonumber(L, 3));
    } else if (lua_type(L, 3) == LUA_TTABLE) {
      for (int i = 1;; ++i) {
        lua_rawgeti(L, 3, i);
        if (lua_isnil(L, -1)) {
          lua_pop(L, 1);
          break;
        }
        if (lua_type(L, -1) != LUA_TNUMBER)
          return luaL_error(L, "ctx.detect: value[%d] is not a number", i);
        values.push_back(lua_tonumber(L, -1));
        lua_pop(L, 1);
      }
    }
    if (values.empty())
      return luaL_error(L, "ctx.detect: value must be a number or an array of numbers");
    DetectorParams params;
    if (!lua_isnoneornil(L, 4)) {
      luaL_checktype(L, 4, LUA_TTABLE);
      lua_pushnil(L);
      while (lua_next(L, 4) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING ||
            (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)) {
          return luaL_error(L, "ctx.detect: params must map names to strings or numbers");
        }
        lua_pushvalue(L, -1);  // lua_tostring converts in place: work on a copy
        params[lua_tostring(L, -3)] = lua_tostring(L, -1);
        lua_pop(L, 2);
      }
    }
    double now = SecondsSinceEpoch(host.Now());
    auto score = From(L)->detectors_.Update(host.State(), host.Namespace(), algorithm, params,
                                            std::string_view(key, key_len), now, values);
    if (!score.ok()) return luaL_error(L, "ctx.detect: %s", score.status().message().c_str());
    lua_pushnumber(L, score->score);
    lua_pushboolean(L, score->anomaly);
    return 2;
  }

  static int CtxEmit(lua_State* L) {
    HostApi& host = RequireHost(L, "ctx.emit");
    std::size_t topic_len = 0;
    const char* topic = luaL_checklstring(L, 1, &topic_len);
    EmitOptions options;
    if (!lua_isnoneornil(L, 3)) {
      luaL_checktype(L, 3, LUA_TTABLE);
      lua_getfield(L, 3, "qos");
      if (!lua_isnil(L, -1)) {
        double qos = lua_tonumber(L, -1);
        if (lua_type(L, -1) != LUA_TNUMBER || !(qos == 0 || qos == 1 || qos == 2)) {
          return luaL_error(L, "ctx.emit: qos must be 0, 1 or 2");
        }
        options.qos = static_cast<int>(qos);
      }
      lua_getfield(L, 3, "retain");
      options.retain = lua_toboolean(L, -1) != 0;
      lua_pop(L, 2);
    }
    std::string_view payload = PayloadArgument(L, 2, "ctx.emit");
    Status status = host.Emit(std::string_view(topic, topic_len), payload, options);
    if (!status.ok()) return luaL_error(L, "ctx.emit: %s", status.message().c_str());
    return 0;
  }

  // ctx.infer(model, tensor): runs a registry model (NAME or NAME@VERSION) with the shard's
  // session; `tensor` is nested arrays, or {input_name = nested arrays}. Returns
  // {output_name = nested arrays}; raises with the reason when the model or inputs are wrong.
  static int CtxInfer(lua_State* L) {
    HostApi& host = RequireHost(L, "ctx.infer");
    std::size_t model_len = 0;
    const char* model = luaL_checklstring(L, 1, &model_len);
    luaL_checktype(L, 2, LUA_TTABLE);
    std::string inputs(PayloadArgument(L, 2, "ctx.infer"));
    Result<std::string> outputs = host.Infer(std::string_view(model, model_len), inputs);
    if (!outputs.ok()) return luaL_error(L, "ctx.infer: %s", outputs.status().message().c_str());
    nlohmann::json doc = nlohmann::json::parse(*outputs, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return luaL_error(L, "ctx.infer: the host returned no JSON");
    PushJson(L, doc, 0);
    return 1;
  }

  // ctx.http_post(url, body [, {content_type = ..., headers = {name = value}}]): true once
  // queued; nil and a message when the node cannot queue it now. A URL that is malformed or
  // not allowed is a bug in the function or its node's config, so it raises.
  static int CtxHttpPost(lua_State* L) {
    HostApi& host = RequireHost(L, "ctx.http_post");
    std::size_t url_len = 0;
    const char* url = luaL_checklstring(L, 1, &url_len);
    HttpPostOptions options;
    std::string content_type;
    if (!lua_isnoneornil(L, 3)) {
      luaL_checktype(L, 3, LUA_TTABLE);
      lua_getfield(L, 3, "content_type");
      if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) {
          return luaL_error(L, "ctx.http_post: content_type must be a string");
        }
        content_type = lua_tostring(L, -1);
      }
      lua_pop(L, 1);
      lua_getfield(L, 3, "headers");
      if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1)) return luaL_error(L, "ctx.http_post: headers must be a table");
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
          if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
            return luaL_error(L, "ctx.http_post: headers must map names to strings");
          }
          options.headers.emplace_back(lua_tostring(L, -2), lua_tostring(L, -1));
          lua_pop(L, 1);
        }
      }
      lua_pop(L, 1);
    }
    if (content_type.empty()) {
      content_type =
          lua_type(L, 2) == LUA_TSTRING ? "text/plain; charset=utf-8" : "application/json";
    }
    options.content_type = content_type;
    std::string_view body = PayloadArgument(L, 2, "ctx.http_post");
    Status status = host.HttpPost(std::string_view(url, url_len), body, options);
    if (status.code() == StatusCode::kInvalidArgument ||
        status.code() == StatusCode::kPermissionDenied) {
      return luaL_error(L, "ctx.http_post: %s", status.message().c_str());
    }
    if (!status.ok()) {
      lua_pushnil(L);
      lua_pushstring(L, status.message().c_str());
      return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
  }

  // ctx.state:method(key, ...): argument 1 is ctx.state itself.
  static std::string_view StateKey(lua_State* L, const char* what) {
    if (lua_type(L, 1) != LUA_TTABLE) {
      luaL_error(L, "%s: call it with a colon, e.g. ctx.state:get(key)", what);
    }
    std::size_t len = 0;
    const char* key = luaL_checklstring(L, 2, &len);
    if (len == 0) luaL_error(L, "%s: the key must not be empty", what);
    return {key, len};
  }

  static int StateGet(lua_State* L) {
    HostApi& host = RequireHost(L, "ctx.state:get");
    std::string_view key = StateKey(L, "ctx.state:get");
    Result<std::optional<std::string>> value = host.State().Get(host.Namespace(), key);
    if (!value.ok()) return luaL_error(L, "ctx.state:get: %s", value.status().message().c_str());
    // nil, not nothing: tonumber(ctx.state:get(k)) must work for a missing key.
    if (!value->has_value()) {
      lua_pushnil(L);
      return 1;
    }
    lua_pushlstring(L, (*value)->data(), (*value)->size());
    return 1;
  }

  static int StatePut(lua_State* L) {
    HostApi& host = RequireHost(L, "ctx.state:put");
    std::string_view key = StateKey(L, "ctx.state:put");
    Ttl ttl = OptionalTtl(L, 4, "ctx.state:put");
    std::string_view value;
    switch (lua_type(L, 3)) {
      case LUA_TSTRING:
      case LUA_TNUMBER: {
        std::size_t len = 0;
        const char* s = lua_tolstring(L, 3, &len);  // numbers are stored as their text
        value = {s, len};
        break;
      }
      case LUA_TBOOLEAN:
      case LUA_TTABLE:
        value = PayloadArgument(L, 3, "ctx.state:put");
        break;
      case LUA_TNIL:
      case LUA_TNONE:
        return luaL_error(L, "ctx.state:put: missing value (use ctx.state:delete to remove a key)");
      default:
        return luaL_error(L, "ctx.state:put: cannot store a %s", luaL_typename(L, 3));
    }
    Status status = host.State().Put(host.Namespace(), key, value, ttl);
    if (!status.ok()) return luaL_error(L, "ctx.state:put: %s", status.message().c_str());
    return 0;
  }

  static int StateDelete(lua_State* L) {
    HostApi& host = RequireHost(L, "ctx.state:delete");
    std::string_view key = StateKey(L, "ctx.state:delete");
    Result<bool> removed = host.State().Delete(host.Namespace(), key);
    if (!removed.ok()) {
      return luaL_error(L, "ctx.state:delete: %s", removed.status().message().c_str());
    }
    lua_pushboolean(L, *removed);
    return 1;
  }

  static int StateIncr(lua_State* L) {
    HostApi& host = RequireHost(L, "ctx.state:incr");
    std::string_view key = StateKey(L, "ctx.state:incr");
    double delta = luaL_optnumber(L, 3, 1);
    if (delta != std::floor(delta) || std::fabs(delta) > kMaxExactInteger) {
      return luaL_error(L, "ctx.state:incr: delta must be an integer");
    }
    Ttl ttl = OptionalTtl(L, 4, "ctx.state:incr");
    Result<std::int64_t> value =
        host.State().Incr(host.Namespace(), key, static_cast<std::int64_t>(delta), ttl);
    if (!value.ok()) return luaL_error(L, "ctx.state:incr: %s", value.status().message().c_str());
    lua_pushnumber(L, static_cast<lua_Number>(*value));
    return 1;
  }

  lua_State* L_ = nullptr;
  const FunctionSpecPtr spec_;
  const std::string dir_;
  const std::uint64_t limit_;
  std::uint64_t used_ = 0;  // bytes the allocator handed out; never above limit_
  Abort abort_ = Abort::kNone;
  Clock::time_point deadline_;

  // Registry references made at Load.
  int abort_message_ref_ = LUA_NOREF;
  int event_metatable_ref_ = LUA_NOREF;
  int ctx_ref_ = LUA_NOREF;
  int call_ref_ = LUA_NOREF;
  int handler_ref_ = LUA_NOREF;

  // Set only during Invoke. event_table_ identifies the one event table of the current call.
  const Event* event_ = nullptr;
  const void* event_table_ = nullptr;
  HostApi* host_ = nullptr;
  Reply* reply_ = nullptr;
  Status reply_status_;

  std::string scratch_;  // reused buffer (JSON payloads, header names) so calls need no malloc
  detect::KeyedDetectors detectors_;  // ctx.detect's detectors, state in the store
};

class LuaRuntime final : public Runtime {
 public:
  Result<InstancePtr> CreateInstance(const FunctionSpecPtr& spec,
                                     const std::string& function_dir) override {
    if (spec == nullptr) return InvalidArgument("no function spec");
    auto instance = std::make_unique<LuaInstance>(spec, function_dir);
    Status status = instance->Load();
    if (!status.ok()) return status;
    return InstancePtr(std::move(instance));
  }
};

}  // namespace

RuntimePtr MakeLuaRuntime() { return std::make_shared<LuaRuntime>(); }

void RegisterLuaRuntime() {
  RuntimeRegistry::Get().Register("lua", [] { return MakeLuaRuntime(); });
}

}  // namespace wisp
