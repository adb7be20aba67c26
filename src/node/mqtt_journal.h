// The MQTT journal: QoS 1 messages written to disk before the broker gets their PUBACK, so the
// network thread can acknowledge at once instead of waiting for the functions to run.
//
// Why: libmosquitto writes a PUBACK when on_message returns, and without a journal on_message
// must wait for the functions (docs/decisions.md), which makes a node handle QoS 1 messages one
// at a time with two thread hand-offs each. With the journal a message is "durably queued"
// (the other allowed point of acknowledgement): on_message appends it here and hands
// it to a shard; the shard marks it done after its functions ran. At start, what the last run
// appended and did not finish is run again, so killing the node loses no acknowledged message
// (delivery stays at least once).
//
// Durability: an append is a write(2) into the page cache, which outlives the process (kill
// -9, a crash) but not the machine; `sync: true` adds an fdatasync per append for power loss,
// at the cost of a disk flush per message.
//
// Layout: <dir>/shard-<k>/<first seq>.jnl segments, one appender (the network thread) and one
// "done" mark per shard (<dir>/shard-<k>/done, an 8-byte sequence number rewritten in place,
// batched while the shard is busy).
// Shard k's messages are done in the order they were appended, so one number says what is
// done. A segment is deleted once everything in it is done.
//
// Threads: Append and Recover on the network thread (or before it starts); MarkDone(k) and
// FlushDone(k) on shard k's thread only; the destructor after the shards stopped.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "node/shard.h"  // MqttDelivery
#include "wisp/status.h"

namespace wisp {

// A message and the functions of one shard that it goes to.
struct JournalEntry {
  MqttDelivery delivery;
  std::vector<std::string> functions;
};

// Encodes one journal entry (framed, checksummed) into `out`.
void EncodeJournalEntry(std::uint64_t seq, const MqttDelivery& delivery,
                        const std::vector<std::string>& functions, std::string* out);
// Decodes the entry at `offset`; false at the end, on a torn tail or a bad checksum. Never reads
// outside `bytes`.
bool DecodeJournalEntry(std::string_view bytes, std::size_t offset, std::uint64_t* seq,
                        JournalEntry* entry, std::size_t* next);

class MqttJournal {
 public:
  // Opens (creating) <dir> for `shards` shards. What an earlier run left unfinished is read
  // by Recover(); appends start after it.
  static Result<std::unique_ptr<MqttJournal>> Open(const std::string& dir, int shards, bool sync,
                                                   std::uint64_t segment_bytes = 64ull << 20);
  ~MqttJournal();

  // Messages appended by an earlier run and never marked done, oldest first per shard of that
  // run. The caller appends them again (so a crash during the replay loses nothing) and runs
  // them; then it calls DropRecovered() to delete the earlier run's files.
  std::vector<JournalEntry> Recover();
  void DropRecovered();

  // Appends a message for `functions` on shard `shard` and returns its sequence number. IoError
  // when the disk refused: the caller must then fall back to running before acknowledging.
  Result<std::uint64_t> Append(int shard, const MqttDelivery& delivery,
                               const std::vector<std::string>& functions);

  // Shard `shard` has run every message of its own up to `seq`. The mark reaches the disk at
  // FlushDone; true when this is the first mark since the last flush, so the caller schedules
  // one (the shard posts it to its own loop: it runs once the shard has caught up, so a busy
  // shard writes one mark per batch and an idle one at once). A crash before the flush replays
  // those messages: at least once still holds.
  bool MarkDone(int shard, std::uint64_t seq);
  void FlushDone(int shard);

  // Appended and not yet done, over all shards.
  std::int64_t backlog() const { return backlog_.load(std::memory_order_relaxed); }

 private:
  struct ShardFiles;
  MqttJournal(std::string dir, bool sync, std::uint64_t segment_bytes);
  Status Roll(ShardFiles& files, std::uint64_t first_seq);

  const std::string dir_;
  const bool sync_;
  const std::uint64_t segment_bytes_;
  std::vector<std::unique_ptr<ShardFiles>> shards_;
  std::vector<JournalEntry> recovered_;       // until Recover()
  std::vector<std::string> recovered_files_;  // the earlier run's, deleted by DropRecovered
  std::uint64_t next_seq_ = 1;                // network thread only
  std::atomic<std::int64_t> backlog_{0};
  std::string scratch_;  // network thread only
};

}  // namespace wisp
