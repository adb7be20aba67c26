#include "archive/event_archive.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <queue>
#include <tuple>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace wisp {
namespace fs = std::filesystem;
namespace {

std::int64_t ToMicros(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::int64_t ToMillis(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

template <typename Int>
bool ParseWhole(std::string_view s, Int* out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

struct SegmentName {
  std::uint64_t index = 0;
  std::int64_t created_ms = 0;
};

// "<index>-<created ms>.seg"; anything else in the directory is not ours and is left alone.
std::optional<SegmentName> ParseSegmentName(std::string_view name) {
  if (!name.ends_with(".seg")) return std::nullopt;
  name.remove_suffix(4);
  const auto dash = name.find('-');
  SegmentName out;
  if (dash == std::string_view::npos || !ParseWhole(name.substr(0, dash), &out.index) ||
      !ParseWhole(name.substr(dash + 1), &out.created_ms) || out.created_ms < 0) {
    return std::nullopt;
  }
  return out;
}

std::uint32_t Clamp32(std::uint64_t v) {
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(v, 0xffffffffu));
}

// Calls `visit` for each entry of `dir`; stops quietly at an error (a reader must not throw).
template <typename Visit>
void ForEachEntry(const fs::path& dir, Visit&& visit) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  while (!ec && it != end) {
    visit(*it);
    it.increment(ec);
  }
}

Status WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(std::strerror(errno));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

ShardArchive::ShardArchive(int shard, int shard_count, const ArchiveOptions& options,
                           ArchiveShardMetrics* metrics)
    : shard_(shard),
      options_(options),
      retention_bytes_(options.retention_bytes /
                       static_cast<std::uint64_t>(std::max(1, shard_count))),
      metrics_(metrics) {}

ShardArchive::~ShardArchive() {
  if (opened_) (void)Flush();
  CloseSegment();
}

std::string ShardArchive::directory() const {
  return (fs::path(options_.dir) / fmt::format("shard-{}", shard_)).string();
}

std::chrono::system_clock::time_point ShardArchive::Now() const {
  return options_.clock ? options_.clock() : std::chrono::system_clock::now();
}

std::uint64_t ShardArchive::bytes_on_disk() const {
  std::uint64_t total = 0;
  for (const Segment& s : segments_) total += s.bytes;
  return total;
}

Status ShardArchive::Open() {
  const std::string dir = directory();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return IoError(fmt::format("cannot create the archive directory {}: {}", dir, ec.message()));
  segments_.clear();
  ForEachEntry(dir, [&](const fs::directory_entry& entry) {
    std::error_code file_ec;
    const auto name = ParseSegmentName(entry.path().filename().string());
    if (!name || !entry.is_regular_file(file_ec)) return;
    Segment s;
    s.index = name->index;
    s.created_ms = name->created_ms;
    s.bytes = entry.file_size(file_ec);
    if (file_ec) s.bytes = 0;
    s.path = entry.path().string();
    segments_.push_back(std::move(s));
  });
  std::sort(segments_.begin(), segments_.end(),
            [](const Segment& a, const Segment& b) { return a.index < b.index; });
  next_index_ = segments_.empty() ? 1 : segments_.back().index + 1;
  opened_ = true;
  ApplyRetention();
  return Status::Ok();
}

void ShardArchive::Start(boost::asio::io_context& io) {
  timer_ = std::make_unique<boost::asio::steady_timer>(io);
  ArmTimer();
}

void ShardArchive::ArmTimer() {
  timer_->expires_after(options_.flush_interval);
  timer_->async_wait([this](boost::system::error_code ec) {
    // A wait that completed before Stop() may still run after it: Stop() dropped the timer.
    if (ec || timer_ == nullptr) return;
    (void)Flush();  // a failure is counted and logged by Flush
    ArmTimer();
  });
}

void ShardArchive::Stop() {
  if (timer_) timer_->cancel();
  timer_.reset();  // it belongs to the shard's io_context, which may go before this object
  (void)Flush();
}

void ShardArchive::Append(ArchiveRecord record) {
  if (record.time_us == 0) record.time_us = ToMicros(Now());
  record.preview = record.preview.substr(0, options_.payload_preview_bytes);
  EncodeRecord(record, &buffer_);
  if (metrics_) metrics_->records.Add();
  if (buffer_.size() >= options_.flush_bytes) (void)Flush();
}

void ShardArchive::RecordEvent(const Event& event, std::string_view function, const Status& outcome,
                               std::chrono::nanoseconds duration) {
  ArchiveRecord r;
  r.kind = ArchiveKind::kEvent;
  r.trigger = static_cast<std::uint8_t>(event.trigger);
  r.status = static_cast<std::uint8_t>(outcome.code());
  r.event_id = event.id;
  r.duration_us = Clamp32(static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(duration).count()));
  r.payload_size = Clamp32(event.body.size());
  r.function = function;
  r.target = event.trigger == TriggerKind::kMqtt ? event.topic : event.path;
  r.error = outcome.message();
  r.preview = event.body;
  Append(r);
}

void ShardArchive::RecordAction(const Event* cause, std::string_view function,
                                std::string_view topic, std::string_view payload, int qos,
                                const Status& outcome) {
  ArchiveRecord r;
  r.kind = ArchiveKind::kAction;
  if (cause) {
    r.trigger = static_cast<std::uint8_t>(cause->trigger);
    r.event_id = cause->id;
  }
  r.status = static_cast<std::uint8_t>(outcome.code());
  r.qos = static_cast<std::uint8_t>(std::clamp(qos, 0, 2));
  r.payload_size = Clamp32(payload.size());
  r.function = function;
  r.target = topic;
  r.error = outcome.message();
  r.preview = payload;
  Append(r);
}

void ShardArchive::RecordDeadLetter(std::string_view function, std::string_view topic,
                                    std::string_view payload, int qos, const Status& why) {
  ArchiveRecord r;
  r.kind = ArchiveKind::kDeadLetter;
  r.trigger = static_cast<std::uint8_t>(TriggerKind::kMqtt);
  r.status = static_cast<std::uint8_t>(why.code());
  r.qos = static_cast<std::uint8_t>(std::clamp(qos, 0, 2));
  r.payload_size = Clamp32(payload.size());
  r.function = function;
  r.target = topic;
  r.error = why.message();
  r.preview = payload;
  Append(r);
}

Status ShardArchive::OpenSegment() {
  const auto now = Now();
  Segment s;
  s.index = next_index_++;
  s.created_ms = ToMillis(now);
  s.path = (fs::path(directory()) / fmt::format("{:012}-{}.seg", s.index, s.created_ms)).string();
  fd_ = ::open(s.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    return IoError(
        fmt::format("cannot create archive segment {}: {}", s.path, std::strerror(errno)));
  }
  if (Status written = WriteAll(fd_, kSegmentMagic); !written.ok()) {
    ::close(fd_);
    fd_ = -1;
    return written.WithContext("cannot write archive segment " + s.path);
  }
  s.bytes = kSegmentMagic.size();
  segments_.push_back(std::move(s));
  ApplyRetention();
  return Status::Ok();
}

void ShardArchive::CloseSegment() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Status ShardArchive::Flush() {
  Status result;
  if (!buffer_.empty()) {
    if (fd_ < 0) result = opened_ ? OpenSegment() : Internal("archive not opened");
    if (result.ok()) {
      result = WriteAll(fd_, buffer_);
      if (result.ok()) {
        segments_.back().bytes += buffer_.size();
        if (metrics_) metrics_->bytes.Add(buffer_.size());
      } else {
        result = result.WithContext("cannot write archive segment " + segments_.back().path);
        CloseSegment();  // the next batch starts a new segment after the damaged tail
      }
    }
    buffer_.clear();
    if (!result.ok()) {
      if (metrics_) metrics_->write_errors.Add();
      // One line per hundred failures: a full disk must not also flood the log.
      if (errors_logged_++ % 100 == 0) spdlog::warn("event archive: {}", result.message());
      return result;
    }
  }
  if (fd_ >= 0) {
    const Segment& open = segments_.back();
    const bool too_big = open.bytes >= options_.segment_bytes;
    const bool too_old = ToMillis(Now()) - open.created_ms >= options_.segment_age.count();
    if (too_big || too_old) CloseSegment();  // the next record starts a new one
  }
  if (opened_) ApplyRetention();  // also when idle: age alone can expire segments
  return result;
}

void ShardArchive::ApplyRetention() {
  const std::int64_t now_ms = ToMillis(Now());
  const std::size_t keep_open = fd_ >= 0 ? 1 : 0;
  std::uint64_t total = bytes_on_disk();
  std::size_t drop = 0;
  while (drop + keep_open < segments_.size()) {
    // Everything in a segment was written before its successor was created, so once the
    // successor is older than retention_age the whole segment is.
    const bool over_size = total > retention_bytes_;
    const bool over_age = drop + 1 < segments_.size() &&
                          now_ms - segments_[drop + 1].created_ms > options_.retention_age.count();
    if (!over_size && !over_age) break;
    std::error_code ec;
    fs::remove(segments_[drop].path, ec);
    if (ec) spdlog::warn("event archive: cannot delete {}: {}", segments_[drop].path, ec.message());
    total -= segments_[drop].bytes;
    ++drop;
  }
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<std::ptrdiff_t>(drop));
}

Result<std::unique_ptr<EventArchive>> EventArchive::Open(const ArchiveOptions& options,
                                                         int shard_count,
                                                         MetricsRegistry* metrics) {
  std::unique_ptr<EventArchive> archive(new EventArchive(options));
  for (int k = 0; k < shard_count; ++k) {
    auto shard = std::make_unique<ShardArchive>(k, shard_count, archive->options_,
                                                metrics ? &metrics->archive(k) : nullptr);
    RETURN_IF_ERROR(shard->Open());
    archive->shards_.push_back(std::move(shard));
  }
  return archive;
}

void EventArchive::Close() {
  for (auto& shard : shards_) shard->Stop();
}

// ---- Reading ----

namespace {

struct SegmentFile {
  std::uint64_t index = 0;
  std::int64_t created_ms = 0;
  std::string path;
};

struct ShardFiles {
  int shard = 0;
  std::vector<SegmentFile> segments;  // by index
};

std::vector<ShardFiles> ListShards(const std::string& dir) {
  std::vector<ShardFiles> shards;
  ForEachEntry(dir, [&](const fs::directory_entry& entry) {
    const std::string name = entry.path().filename().string();
    ShardFiles files;
    if (!name.starts_with("shard-") ||
        !ParseWhole(std::string_view(name).substr(6), &files.shard) || files.shard < 0) {
      return;
    }
    ForEachEntry(entry.path(), [&](const fs::directory_entry& file) {
      if (auto parsed = ParseSegmentName(file.path().filename().string())) {
        files.segments.push_back({parsed->index, parsed->created_ms, file.path().string()});
      }
    });
    std::sort(files.segments.begin(), files.segments.end(),
              [](const SegmentFile& a, const SegmentFile& b) { return a.index < b.index; });
    shards.push_back(std::move(files));
  });
  std::sort(shards.begin(), shards.end(),
            [](const ShardFiles& a, const ShardFiles& b) { return a.shard < b.shard; });
  return shards;
}

// A segment's bytes; empty when it vanished (retention) or cannot be read.
std::string ReadSegment(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return {};
  const std::streamoff size = in.tellg();
  if (size <= 0) return {};
  std::string data(static_cast<std::size_t>(size), '\0');
  in.seekg(0);
  in.read(data.data(), size);
  data.resize(static_cast<std::size_t>(in.gcount()));
  return data;
}

struct Position {
  std::uint64_t segment = 0;  // 0: before the first segment
  std::uint64_t offset = 0;
};

// Cursor text: "c1" then "_<shard>-<segment>-<offset>" per shard; URL-safe as it is.
std::string FormatCursor(const std::vector<std::pair<int, Position>>& positions) {
  std::string out = "c1";
  for (const auto& [shard, p] : positions)
    out += fmt::format("_{}-{}-{}", shard, p.segment, p.offset);
  return out;
}

Result<std::vector<std::pair<int, Position>>> ParseCursor(std::string_view text) {
  auto bad = [&] {
    return InvalidArgument(fmt::format(
        "cursor '{}' is not one this node gave out (use the \"next\" of an earlier reply)",
        text.substr(0, 64)));
  };
  if (!text.starts_with("c1")) return bad();
  text.remove_prefix(2);
  std::vector<std::pair<int, Position>> out;
  while (!text.empty()) {
    if (text.front() != '_' || out.size() >= 4096) return bad();
    text.remove_prefix(1);
    const std::string_view item = text.substr(0, text.find('_'));
    text.remove_prefix(item.size());
    const auto d1 = item.find('-');
    const auto d2 = d1 == std::string_view::npos ? d1 : item.find('-', d1 + 1);
    int shard = 0;
    Position p;
    if (d2 == std::string_view::npos || !ParseWhole(item.substr(0, d1), &shard) || shard < 0 ||
        !ParseWhole(item.substr(d1 + 1, d2 - d1 - 1), &p.segment) ||
        !ParseWhole(item.substr(d2 + 1), &p.offset)) {
      return bad();
    }
    out.emplace_back(shard, p);
  }
  return out;
}

class Filter {
 public:
  explicit Filter(const ArchiveQuery& q) : q_(q) {
    if (q.since) since_us_ = ToMicros(*q.since);
    if (q.until) until_us_ = ToMicros(*q.until);
  }
  bool AfterUntil(const ArchiveRecord& r) const { return r.time_us > until_us_; }
  bool Matches(const ArchiveRecord& r) const {
    if (r.time_us < since_us_ || r.time_us > until_us_) return false;
    if (!q_.function.empty() && r.function != q_.function) return false;
    return q_.kinds.empty() ||
           std::find(q_.kinds.begin(), q_.kinds.end(), r.kind) != q_.kinds.end();
  }
  std::int64_t since_us() const { return since_us_; }

 private:
  const ArchiveQuery& q_;
  std::int64_t since_us_ = std::numeric_limits<std::int64_t>::min();
  std::int64_t until_us_ = std::numeric_limits<std::int64_t>::max();
};

ArchiveEntry ToEntry(const ArchiveRecord& r, int shard) {
  ArchiveEntry e;
  e.time_us = r.time_us;
  e.kind = r.kind;
  e.trigger = r.trigger;
  e.status = r.status;
  e.qos = r.qos;
  e.event_id = r.event_id;
  e.duration_us = r.duration_us;
  e.payload_size = r.payload_size;
  e.function = std::string(r.function);
  e.target = std::string(r.target);
  e.error = std::string(r.error);
  e.preview = std::string(r.preview);
  e.shard = shard;
  return e;
}

// One shard's records in file order, from a position, filtered.
class ShardStream {
 public:
  ShardStream(ShardFiles files, const Filter& filter, std::optional<Position> from,
              std::size_t* bad_records)
      : files_(std::move(files)), filter_(filter), bad_records_(bad_records) {
    if (from) {
      // The cursor's segment, or the first after it when retention removed it.
      while (next_segment_ < files_.segments.size() &&
             files_.segments[next_segment_].index < from->segment) {
        ++next_segment_;
      }
      if (next_segment_ < files_.segments.size() &&
          files_.segments[next_segment_].index == from->segment) {
        start_offset_ = from->offset;
      }
      position_ = *from;
    } else {
      // Skip segments that were closed before `since`: their successor began before it.
      while (next_segment_ + 1 < files_.segments.size() &&
             files_.segments[next_segment_ + 1].created_ms < filter_.since_us() / 1000) {
        ++next_segment_;
      }
    }
  }

  int shard() const { return files_.shard; }
  const std::optional<ArchiveEntry>& head() const { return head_; }
  // Where reading resumes: at the head when there is one, else after everything read.
  Position position() const { return head_ ? head_position_ : position_; }

  // Moves to the next matching record; false at the end (or past `until`).
  bool Advance() {
    head_.reset();
    while (!stopped_) {
      if (!loaded_ && !LoadNext()) return false;
      ArchiveRecord record;
      std::size_t next = 0;
      const DecodeOutcome outcome = DecodeRecord(data_, offset_, &record, &next);
      if (outcome == DecodeOutcome::kRecord) {
        if (filter_.AfterUntil(record)) {
          stopped_ = true;  // records are in time order within a shard
          position_ = {current_index_, offset_};
          return false;
        }
        const std::size_t at = offset_;
        offset_ = next;
        position_ = {current_index_, offset_};
        if (filter_.Matches(record)) {
          head_ = ToEntry(record, files_.shard);
          head_position_ = {current_index_, at};
          return true;
        }
        continue;
      }
      const bool last = next_segment_ >= files_.segments.size();
      if (last) {
        // The newest segment may still be growing: a torn record there is probably one being
        // written, so stay before it and look again next time.
        stopped_ = true;
        return false;
      }
      if (outcome != DecodeOutcome::kEnd) ++*bad_records_;
      loaded_ = false;
    }
    return false;
  }

 private:
  bool LoadNext() {
    while (next_segment_ < files_.segments.size()) {
      const SegmentFile& file = files_.segments[next_segment_++];
      data_ = ReadSegment(file.path);
      current_index_ = file.index;
      if (data_.empty()) continue;  // deleted by retention meanwhile
      if (!HasSegmentHeader(data_)) {
        if (next_segment_ < files_.segments.size()) ++*bad_records_;
        position_ = {file.index, 0};
        continue;
      }
      offset_ = std::max<std::size_t>(kSegmentMagic.size(), start_offset_);
      start_offset_ = 0;
      position_ = {file.index, offset_};
      loaded_ = true;
      return true;
    }
    stopped_ = true;
    return false;
  }

  ShardFiles files_;
  const Filter& filter_;
  std::size_t* bad_records_;
  std::size_t next_segment_ = 0;
  std::size_t start_offset_ = 0;
  bool loaded_ = false;
  bool stopped_ = false;
  std::string data_;
  std::uint64_t current_index_ = 0;
  std::size_t offset_ = 0;
  Position position_;
  std::optional<ArchiveEntry> head_;
  Position head_position_;
};

bool EarlierEntry(const ArchiveEntry& a, const ArchiveEntry& b) {
  return std::tie(a.time_us, a.shard) < std::tie(b.time_us, b.shard);
}

// The newest `tail` matching records of one shard, oldest first, and the end of its data.
std::vector<ArchiveEntry> TailOfShard(const ShardFiles& files, const Filter& filter,
                                      std::size_t tail, Position* end, std::size_t* bad_records) {
  std::vector<ArchiveEntry> out;  // newest segment's records first, reversed at the end
  for (std::size_t i = files.segments.size(); i-- > 0 && out.size() < tail;) {
    const SegmentFile& file = files.segments[i];
    const std::string data = ReadSegment(file.path);
    std::vector<ArchiveEntry> matches;
    const SegmentScan scan = ScanSegment(data, 0, [&](const ArchiveRecord& r, std::size_t) {
      if (filter.Matches(r)) matches.push_back(ToEntry(r, files.shard));
      return true;
    });
    const bool newest = i + 1 == files.segments.size();
    if (newest) *end = {file.index, std::max(scan.end, kSegmentMagic.size())};
    if (!newest && scan.stopped_by != DecodeOutcome::kEnd && !data.empty()) ++*bad_records;
    for (auto it = matches.rbegin(); it != matches.rend(); ++it) out.push_back(std::move(*it));
  }
  if (out.size() > tail) out.resize(tail);
  std::reverse(out.begin(), out.end());
  return out;
}

}  // namespace

Result<ArchivePage> QueryArchive(const std::string& dir, const ArchiveQuery& query) {
  std::vector<std::pair<int, Position>> from;
  if (!query.after.empty()) {
    ASSIGN_OR_RETURN(from, ParseCursor(query.after));
  }
  const Filter filter(query);
  ArchivePage page;
  std::vector<ShardFiles> shards = ListShards(dir);
  std::vector<std::pair<int, Position>> positions;

  if (query.tail > 0) {
    for (const ShardFiles& files : shards) {
      Position end;
      auto records = TailOfShard(files, filter, query.tail, &end, &page.bad_records);
      std::move(records.begin(), records.end(), std::back_inserter(page.records));
      positions.emplace_back(files.shard, end);
    }
    std::stable_sort(page.records.begin(), page.records.end(), EarlierEntry);
    if (page.records.size() > query.tail) {
      page.records.erase(page.records.begin(),
                         page.records.end() - static_cast<std::ptrdiff_t>(query.tail));
    }
    page.next = FormatCursor(positions);
    return page;
  }

  std::vector<std::unique_ptr<ShardStream>> streams;
  for (ShardFiles& files : shards) {
    std::optional<Position> start;
    for (const auto& [shard, p] : from) {
      if (shard == files.shard) start = p;
    }
    streams.push_back(
        std::make_unique<ShardStream>(std::move(files), filter, start, &page.bad_records));
  }
  auto later = [](const ShardStream* a, const ShardStream* b) {
    return EarlierEntry(*b->head(), *a->head());
  };
  std::priority_queue<ShardStream*, std::vector<ShardStream*>, decltype(later)> heads(later);
  for (auto& stream : streams) {
    if (stream->Advance()) heads.push(stream.get());
  }
  while (!heads.empty() && page.records.size() < query.limit) {
    ShardStream* stream = heads.top();
    heads.pop();
    page.records.push_back(*stream->head());
    if (stream->Advance()) heads.push(stream);
  }
  for (const auto& stream : streams) positions.emplace_back(stream->shard(), stream->position());
  // Shards named by the cursor but gone from disk keep their place.
  for (const auto& [shard, p] : from) {
    if (std::none_of(positions.begin(), positions.end(),
                     [&](const auto& kv) { return kv.first == shard; })) {
      positions.emplace_back(shard, p);
    }
  }
  page.next = FormatCursor(positions);
  return page;
}

}  // namespace wisp
