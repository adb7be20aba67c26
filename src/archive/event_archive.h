// The event archive: an append-only local log of what the node did (each function run, each
// action a function emitted, each dead letter), kept in segment files per shard and queried by
// function and time (docs/decisions.md, "Event archive").
//
// Layout: <data>/archive/shard-<k>/<index:012>-<created unix ms>.seg, format in
// archive_format.h. Each shard writes only its own directory, so appending takes no lock.
//
// Durability: records are buffered per shard and written (write(2), no fsync) when the buffer
// passes flush_bytes, every flush_interval, and when the shard drains. A node crash loses at
// most the last flush_interval of records; a power loss may lose what the kernel had not
// written. The archive is a record of what happened, not part of the data path: a write error
// is counted (wisp_archive_write_errors_total) and logged, the records are dropped, and the
// event itself is unaffected.
//
// Threads: a ShardArchive belongs to its shard's thread (Start/Stop/Record*/Flush), except that
// the destructor may run on another thread once that one has stopped. QueryArchive reads files
// only and may run on any thread, also while the writers write; it sees what they flushed.
#pragma once

#include <utility>  // before Asio (see http/server.h)

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "archive/archive_format.h"
#include "metrics/metrics.h"
#include "wisp/event.h"
#include "wisp/status.h"

namespace wisp {

struct ArchiveOptions {
  std::string dir;                                   // <data>/archive
  std::uint64_t segment_bytes = 16ull << 20;         // a segment is closed past this size
  std::chrono::milliseconds segment_age{3'600'000};  // ... or once it is this old
  std::uint64_t retention_bytes = 256ull << 20;      // whole archive; each shard keeps 1/N
  std::chrono::milliseconds retention_age{7 * 86'400'000ll};
  std::size_t payload_preview_bytes = 256;        // first bytes of each payload kept
  std::size_t flush_bytes = 64 << 10;             // buffer size that triggers a write
  std::chrono::milliseconds flush_interval{200};  // and the longest a record waits
  // The time records and segments are stamped with; empty: the system clock. Tests inject one.
  std::function<std::chrono::system_clock::time_point()> clock;
};

// One shard's writer.
class ShardArchive {
 public:
  // `metrics` may be null. Nothing touches the disk before Open().
  ShardArchive(int shard, int shard_count, const ArchiveOptions& options,
               ArchiveShardMetrics* metrics);
  ~ShardArchive();  // writes what is buffered
  ShardArchive(const ShardArchive&) = delete;
  ShardArchive& operator=(const ShardArchive&) = delete;

  // Creates the shard's directory, takes stock of its segments and applies retention. A new
  // run always starts a new segment, so a tail torn by a crash is never appended to.
  // IoError when the directory cannot be made or listed.
  Status Open();

  // Flushes every flush_interval on `io` until Stop(). The shard's loop calls both.
  void Start(boost::asio::io_context& io);
  void Stop();  // cancels the timer (so the loop can run dry) and flushes

  // The hooks: each encodes one record into the buffer; no I/O unless the buffer is full.
  void RecordEvent(const Event& event, std::string_view function, const Status& outcome,
                   std::chrono::nanoseconds duration);
  void RecordAction(const Event* cause, std::string_view function, std::string_view topic,
                    std::string_view payload, int qos, const Status& outcome);
  void RecordDeadLetter(std::string_view function, std::string_view topic, std::string_view payload,
                        int qos, const Status& why);
  // Any record; time_us 0 is stamped with the clock.
  void Append(ArchiveRecord record);

  // Writes the buffer, then closes the segment if it is over size or age and applies
  // retention. A failure drops the buffered records and is counted; the next call tries a
  // new segment.
  Status Flush();

  std::string directory() const;
  std::uint64_t bytes_on_disk() const;  // this shard's segments, the open one included

 private:
  struct Segment {
    std::uint64_t index = 0;
    std::int64_t created_ms = 0;
    std::uint64_t bytes = 0;
    std::string path;
  };
  std::chrono::system_clock::time_point Now() const;
  Status OpenSegment();
  void CloseSegment();
  void ApplyRetention();
  void ArmTimer();

  const int shard_;
  const ArchiveOptions options_;
  const std::uint64_t retention_bytes_;  // this shard's share
  ArchiveShardMetrics* metrics_;
  std::string buffer_;
  std::vector<Segment> segments_;  // oldest first; the open one, if any, is last
  std::uint64_t next_index_ = 1;
  int fd_ = -1;  // the open segment
  bool opened_ = false;
  std::uint64_t errors_logged_ = 0;
  std::unique_ptr<boost::asio::steady_timer> timer_;
};

// A record read back, owning its strings.
struct ArchiveEntry {
  std::int64_t time_us = 0;
  ArchiveKind kind = ArchiveKind::kEvent;
  std::uint8_t trigger = 0, status = 0, qos = 0;
  std::uint64_t event_id = 0;
  std::uint32_t duration_us = 0, payload_size = 0;
  std::string function, target, error, preview;
  int shard = 0;
};

struct ArchiveQuery {
  std::string function;                                               // empty: every function
  std::optional<std::chrono::system_clock::time_point> since, until;  // inclusive
  std::vector<ArchiveKind> kinds;                                     // empty: all
  std::size_t limit = 100;  // oldest first from `since` (or the cursor)
  std::size_t tail = 0;     // > 0: the newest `tail` records instead (limit ignored)
  std::string after;        // a cursor from an earlier page: continue after it
};

struct ArchivePage {
  std::vector<ArchiveEntry> records;  // in time order, merged across shards
  // Where the next query with `after` continues: after the last record returned, and for
  // shards that had no match, after everything read. Polling with it ("tail -f") sees each
  // record once, also one that a shard flushed late.
  std::string next;
  std::size_t bad_records = 0;  // segments that ended early at a corrupt or torn record
};

// Reads the archive under `dir` (the layout above). InvalidArgument for a cursor this format
// did not make; a missing archive directory is an empty page.
Result<ArchivePage> QueryArchive(const std::string& dir, const ArchiveQuery& query);

// The writers of all shards, and the options they share. Owned by RunNode.
class EventArchive {
 public:
  // Opens every shard's writer; IoError when the archive directory is unusable.
  static Result<std::unique_ptr<EventArchive>> Open(const ArchiveOptions& options, int shard_count,
                                                    MetricsRegistry* metrics);
  ShardArchive& shard(int k) { return *shards_[k]; }
  const ArchiveOptions& options() const { return options_; }
  // Stops every writer's timer and flushes; call once the shards' threads have ended.
  void Close();
  Result<ArchivePage> Query(const ArchiveQuery& query) const {
    return QueryArchive(options_.dir, query);
  }

 private:
  explicit EventArchive(ArchiveOptions options) : options_(std::move(options)) {}
  ArchiveOptions options_;
  std::vector<std::unique_ptr<ShardArchive>> shards_;
};

}  // namespace wisp
