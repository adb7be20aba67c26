#include "node/mqtt_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "node/framed_log.h"

namespace wisp {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kJournalMagic{"WISPJR\x01\n", 8};
// seq, qos, retain, time, lengths of topic, content type and function list
constexpr std::size_t kFixedBodyBytes = 8 + 1 + 1 + 8 + 2 + 2 + 2;
constexpr std::uint32_t kMaxEntryBytes = 300u << 20;  // > the largest MQTT payload (256 MiB)

using framed_log::Get;
using framed_log::Put;

Status WriteAll(int fd, std::string_view bytes, const std::string& path) {
  return framed_log::WriteAll(fd, bytes, path, "mqtt journal");
}

std::string ReadFile(const fs::path& path) { return framed_log::ReadWholeFile(path); }

std::uint64_t SegmentFirstSeq(const fs::path& path) {
  return framed_log::SegmentFirstSeq(path, ".jnl");
}

}  // namespace

void EncodeJournalEntry(std::uint64_t seq, const MqttDelivery& delivery,
                        const std::vector<std::string>& function_names, std::string* out) {
  std::string functions;  // names are DNS labels: ',' never occurs in one
  for (const std::string& name : function_names) {
    if (!functions.empty()) functions += ',';
    functions += name;
  }
  const std::size_t topic = std::min<std::size_t>(delivery.topic.size(), 0xffff);
  const std::size_t ct = std::min<std::size_t>(delivery.content_type.size(), 0xffff);
  const std::size_t fns = std::min<std::size_t>(functions.size(), 0xffff);
  const std::size_t start = framed_log::BeginFrame(out);
  Put<std::uint64_t>(out, seq);
  out->push_back(static_cast<char>(delivery.qos));
  out->push_back(static_cast<char>(delivery.retain ? 1 : 0));
  Put<std::int64_t>(out, std::chrono::duration_cast<std::chrono::microseconds>(
                             delivery.received_at.time_since_epoch())
                             .count());
  Put<std::uint16_t>(out, static_cast<std::uint16_t>(topic));
  Put<std::uint16_t>(out, static_cast<std::uint16_t>(ct));
  Put<std::uint16_t>(out, static_cast<std::uint16_t>(fns));
  out->append(delivery.topic, 0, topic);
  out->append(delivery.content_type, 0, ct);
  out->append(functions, 0, fns);
  out->append(delivery.payload);
  framed_log::EndFrame(out, start);
}

bool DecodeJournalEntry(std::string_view bytes, std::size_t offset, std::uint64_t* seq,
                        JournalEntry* entry, std::size_t* next) {
  std::string_view body;
  std::size_t end = 0;
  if (!framed_log::ReadFrame(bytes, offset, kFixedBodyBytes, kMaxEntryBytes, &body, &end)) {
    return false;
  }
  const std::size_t body_size = body.size();
  const char* b = body.data();
  const std::size_t topic = Get<std::uint16_t>(b + 18);
  const std::size_t ct = Get<std::uint16_t>(b + 20);
  const std::size_t fns = Get<std::uint16_t>(b + 22);
  if (kFixedBodyBytes + topic + ct + fns > body_size) return false;
  MqttDelivery& delivery = entry->delivery;
  *seq = Get<std::uint64_t>(b);
  delivery.qos = static_cast<unsigned char>(b[8]);
  delivery.retain = b[9] != 0;
  delivery.received_at =
      std::chrono::system_clock::time_point(std::chrono::microseconds(Get<std::int64_t>(b + 10)));
  std::size_t at = kFixedBodyBytes;
  delivery.topic.assign(body.substr(at, topic));
  at += topic;
  delivery.content_type.assign(body.substr(at, ct));
  at += ct;
  std::string_view functions = body.substr(at, fns);
  at += fns;
  delivery.payload.assign(body.substr(at));
  entry->functions.clear();
  while (!functions.empty()) {
    const auto comma = functions.find(',');
    entry->functions.emplace_back(functions.substr(0, comma));
    functions = comma == std::string_view::npos ? std::string_view() : functions.substr(comma + 1);
  }
  *next = end;
  return true;
}

struct MqttJournal::ShardFiles {
  fs::path dir;
  int fd = -1;  // the segment being appended to
  fs::path segment;
  std::uint64_t segment_bytes = 0;
  std::uint64_t last_seq = 0;  // of the segment being appended to
  struct Closed {
    fs::path path;
    std::uint64_t last_seq;
  };
  std::vector<Closed> closed;  // network thread only
  int done_fd = -1;
  std::atomic<std::uint64_t> done{0};
  std::uint64_t done_written = 0;  // shard thread only
  bool flush_pending = false;      // shard thread only

  ~ShardFiles() {
    if (fd >= 0) ::close(fd);
    if (done_fd >= 0) ::close(done_fd);
  }
};

MqttJournal::MqttJournal(std::string dir, bool sync, std::uint64_t segment_bytes)
    : dir_(std::move(dir)), sync_(sync), segment_bytes_(segment_bytes) {}

MqttJournal::~MqttJournal() {
  // The shards have stopped: what they marked done and did not flush yet is flushed now, so a
  // clean stop replays nothing.
  for (std::size_t k = 0; k < shards_.size(); ++k) FlushDone(static_cast<int>(k));
}

Result<std::unique_ptr<MqttJournal>> MqttJournal::Open(const std::string& dir, int shards,
                                                       bool sync, std::uint64_t segment_bytes) {
  std::unique_ptr<MqttJournal> journal(new MqttJournal(dir, sync, segment_bytes));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return IoError(fmt::format("mqtt journal: cannot create {}: {}", dir, ec.message()));

  // What an earlier run left: every shard-* directory, whatever the shard count was then.
  std::uint64_t max_seq = 0;
  std::vector<std::pair<std::uint64_t, JournalEntry>> unfinished;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_directory() || !entry.path().filename().string().starts_with("shard-")) continue;
    std::uint64_t done = 0;
    const std::string done_bytes = ReadFile(entry.path() / "done");
    if (done_bytes.size() == 8) done = Get<std::uint64_t>(done_bytes.data());
    std::map<std::uint64_t, fs::path> segments;
    for (const auto& file : fs::directory_iterator(entry.path(), ec)) {
      if (const std::uint64_t first = SegmentFirstSeq(file.path()); first > 0) {
        segments.emplace(first, file.path());
      }
    }
    for (const auto& [first, path] : segments) {
      const std::string bytes = ReadFile(path);
      journal->recovered_files_.push_back(path.string());
      if (!bytes.starts_with(kJournalMagic)) continue;
      std::size_t offset = kJournalMagic.size();
      std::uint64_t seq = 0;
      JournalEntry entry;
      std::size_t next = 0;
      while (DecodeJournalEntry(bytes, offset, &seq, &entry, &next)) {
        max_seq = std::max(max_seq, seq);
        if (seq > done) unfinished.emplace_back(seq, std::move(entry));
        offset = next;
      }
      if (offset != bytes.size()) {
        spdlog::warn(
            "mqtt journal: {} ends in a torn or damaged entry at byte {}; "
            "the rest of it is skipped",
            path.string(), offset);
      }
    }
    max_seq = std::max(max_seq, done);
  }
  if (ec) return IoError(fmt::format("mqtt journal: cannot read {}: {}", dir, ec.message()));
  std::sort(unfinished.begin(), unfinished.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  journal->recovered_.reserve(unfinished.size());
  for (auto& [seq, entry] : unfinished) journal->recovered_.push_back(std::move(entry));
  journal->next_seq_ = max_seq + 1;

  for (int k = 0; k < shards; ++k) {
    auto files = std::make_unique<ShardFiles>();
    files->dir = fs::path(dir) / fmt::format("shard-{}", k);
    fs::create_directories(files->dir, ec);
    if (ec) {
      return IoError(
          fmt::format("mqtt journal: cannot create {}: {}", files->dir.string(), ec.message()));
    }
    // The earlier run's mark stays until this run marks something: until then its entries
    // are in both runs' files, and a crash replays them twice rather than never.
    const fs::path done_path = files->dir / "done";
    files->done_fd = ::open(done_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (files->done_fd < 0) {
      return IoError(fmt::format("mqtt journal: cannot open {}: {}", done_path.string(),
                                 std::strerror(errno)));
    }
    journal->shards_.push_back(std::move(files));
  }
  return journal;
}

std::vector<JournalEntry> MqttJournal::Recover() { return std::move(recovered_); }

void MqttJournal::DropRecovered() {
  std::error_code ec;
  for (const std::string& path : recovered_files_) fs::remove(path, ec);
  recovered_files_.clear();
  // Directories of shards that this run does not have.
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("shard-")) continue;
    const bool ours = std::any_of(shards_.begin(), shards_.end(),
                                  [&](const auto& files) { return files->dir == entry.path(); });
    if (!ours) fs::remove_all(entry.path(), ec);
  }
}

Status MqttJournal::Roll(ShardFiles& files, std::uint64_t first_seq) {
  if (files.fd >= 0) {
    ::close(files.fd);
    files.closed.push_back({files.segment, files.last_seq});
  }
  files.segment = files.dir / fmt::format("{}.jnl", first_seq);
  files.fd =
      ::open(files.segment.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (files.fd < 0) {
    return IoError(fmt::format("mqtt journal: cannot create {}: {}", files.segment.string(),
                               std::strerror(errno)));
  }
  files.segment_bytes = kJournalMagic.size();
  RETURN_IF_ERROR(WriteAll(files.fd, kJournalMagic, files.segment.string()));
  // Segments whose every entry is done are not needed any more.
  const std::uint64_t done = files.done.load(std::memory_order_acquire);
  std::error_code ec;
  std::erase_if(files.closed, [&](const ShardFiles::Closed& c) {
    if (c.last_seq > done) return false;
    fs::remove(c.path, ec);
    return true;
  });
  return Status::Ok();
}

Result<std::uint64_t> MqttJournal::Append(int shard, const MqttDelivery& delivery,
                                          const std::vector<std::string>& functions) {
  ShardFiles& files = *shards_[static_cast<std::size_t>(shard)];
  const std::uint64_t seq = next_seq_++;
  scratch_.clear();
  EncodeJournalEntry(seq, delivery, functions, &scratch_);
  if (files.fd < 0 || files.segment_bytes + scratch_.size() > segment_bytes_) {
    RETURN_IF_ERROR(Roll(files, seq));
  }
  RETURN_IF_ERROR(WriteAll(files.fd, scratch_, files.segment.string()));
  if (sync_ && ::fdatasync(files.fd) != 0) {
    return IoError(fmt::format("mqtt journal: cannot sync {}: {}", files.segment.string(),
                               std::strerror(errno)));
  }
  files.segment_bytes += scratch_.size();
  files.last_seq = seq;
  backlog_.fetch_add(1, std::memory_order_relaxed);
  return seq;
}

bool MqttJournal::MarkDone(int shard, std::uint64_t seq) {
  ShardFiles& files = *shards_[static_cast<std::size_t>(shard)];
  files.done.store(seq, std::memory_order_release);
  backlog_.fetch_sub(1, std::memory_order_relaxed);
  const bool first = !files.flush_pending;
  files.flush_pending = true;
  return first;
}

void MqttJournal::FlushDone(int shard) {
  ShardFiles& files = *shards_[static_cast<std::size_t>(shard)];
  files.flush_pending = false;
  const std::uint64_t seq = files.done.load(std::memory_order_acquire);
  if (seq == files.done_written) return;
  char bytes[8];
  for (std::size_t i = 0; i < 8; ++i) bytes[i] = static_cast<char>(seq >> (8 * i));
  if (::pwrite(files.done_fd, bytes, sizeof(bytes), 0) != 8) {
    // The entries would only run again after a restart: at least once still holds.
    spdlog::warn("mqtt journal: cannot mark {} done: {}", seq, std::strerror(errno));
    return;
  }
  files.done_written = seq;
}

}  // namespace wisp
