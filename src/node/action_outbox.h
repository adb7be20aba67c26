// The action outbox: MQTT messages that functions emit (ctx.emit, detector alerts, async
// replies), kept on disk until the broker has them, so that an emit accepted while the broker
// is unreachable, or not yet acknowledged when the node dies, is sent later rather than lost.
//
// What goes through it: every emit with QoS >= 1, and every emit made while the broker is not
// connected (any QoS), is appended to <data>/outbox/ (CRC32C-framed segments, the format of
// src/node/outbox_format.h, written with write(2), plus fdatasync when `sync`) before Emit
// returns OK. An entry is done when the broker acknowledged it (PUBACK/PUBCOMP: OnPublished
// with the packet id the transport gave it), or, for QoS 0, once handed to libmosquitto while
// connected. A QoS 0 emit while connected with nothing queued before it is published directly,
// with no disk write: the hot path stays what it was.
//
// Order: entries are handed to the transport in append order, at most `max_in_flight`
// unacknowledged at once; while any entry waits, new emits (QoS 0 too) queue behind it, so one
// shard's emits are never reordered. On (re)connect OnConnected() resumes sending; what the
// last run left is loaded by Open() and sent first. Entries handed to libmosquitto and not yet
// acknowledged when the connection drops are re-sent by libmosquitto itself after the
// reconnect (same packet id, DUP set), so OnPublished still finds them. Delivery is at least
// once: a crash between the broker's PUBACK and the done mark sends an entry again.
//
// Done marks: entries can finish out of order (a QoS 0 entry is done when handed, a QoS 1
// entry before it only when acknowledged), so the `done` file holds the highest seq below
// which everything is done (8 bytes, rewritten in place), written when the outbox empties, every
// 64 entries while it is busy, and at destruction; a crash re-sends what the mark missed. A
// segment is deleted once all its entries are done.
//
// Failures: Emit returns ResourceExhausted when the pending entries would pass `max_bytes`
// (the message says the outbox is full, why, and how much is pending), IoError when the disk
// refuses; nothing is queued then, and the emitting handler sees the error. An entry the
// transport refuses as malformed (InvalidArgument: retrying cannot help) is dropped with an
// error in the log and counted as rejected. A broker's refusal in the PUBACK (reason >= 0x80)
// is logged; the entry is done (sending it again gets the same answer).
//
// Ownership: the outbox owns its files and a copy of every pending message in memory (bounded
// by max_bytes). The transport's functions must outlive it.
//
// Threads: Emit from any thread; OnConnected and OnPublished on the connection's network
// thread; the getters from any thread. One mutex serialises appends and hand-overs; the
// transport's publish is called with it held (libmosquitto's publish does not wait for the
// network thread, so this cannot deadlock with OnPublished).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "node/outbox_format.h"
#include "wisp/status.h"

namespace wisp {

struct OutboxOptions {
  std::string dir;                         // created if missing
  bool sync = false;                       // fdatasync each append (power loss), not only write
  std::uint64_t max_bytes = 256ull << 20;  // pending entries' encoded size
  std::uint64_t segment_bytes = 16ull << 20;
  int max_in_flight = 100;  // handed to the transport and not yet acknowledged
  std::string broker;       // for error messages ("the broker at mqtt://...")
};

// How the outbox reaches the broker.
struct OutboxTransport {
  std::function<bool()> connected;
  // Publishes; for QoS >= 1 sets *mid to the packet id that OnPublished will report. Unavailable
  // when not connected: if *mid was set anyway (non-zero, QoS >= 1), the transport has queued
  // the message and sends it on reconnect. InvalidArgument: the message can never be sent.
  std::function<Status(std::string_view topic, std::string_view payload,
                       std::string_view content_type, int qos, bool retain, int* mid)>
      publish;
};

class ActionOutbox {
 public:
  // Opens (creating) options.dir and loads what an earlier run left pending; it is sent first,
  // once OnConnected() is called. IoError when the directory cannot be made or read.
  static Result<std::unique_ptr<ActionOutbox>> Open(const OutboxOptions& options,
                                                    OutboxTransport transport);
  ~ActionOutbox();
  ActionOutbox(const ActionOutbox&) = delete;
  ActionOutbox& operator=(const ActionOutbox&) = delete;

  // Publishes now or queues durably (see above). OK: the message will reach the broker (at
  // least once) unless the outbox's files are lost. Errors: see Failures above.
  Status Emit(std::string_view topic, std::string_view payload, std::string_view content_type,
              int qos, bool retain);

  // The connection is up (again): send what waits.
  void OnConnected();
  // The broker acknowledged packet `mid`; `reason_code` >= 0x80 is a refusal.
  void OnPublished(int mid, int reason_code);
  // For a clean stop: waits until every message handed to the broker has been acknowledged and,
  // while connected, nothing waits to be sent, or `timeout` passes. False on timeout (what is
  // left is sent by the next run). Not on the network thread (its callbacks end the wait).
  bool WaitUntilSent(std::chrono::milliseconds timeout);

  std::int64_t pending_messages() const { return pending_messages_.load(kRelaxed); }
  std::int64_t pending_bytes() const { return pending_bytes_.load(kRelaxed); }
  std::uint64_t replayed() const { return replayed_.load(kRelaxed); }
  std::uint64_t rejected() const { return rejected_.load(kRelaxed); }

 private:
  static constexpr auto kRelaxed = std::memory_order_relaxed;
  struct Entry {
    OutboxMessage message;
    std::uint64_t bytes = 0;  // encoded size, counted against max_bytes
    bool waited = false;      // not sent by the Emit that queued it: a replay when sent
  };
  struct ClosedSegment {
    std::string path;
    std::uint64_t last_seq = 0;
  };

  ActionOutbox(OutboxOptions options, OutboxTransport transport);
  Status Load();
  Status AppendLocked(const OutboxMessage& message, const std::string& encoded);
  Status RollLocked(std::uint64_t first_seq);
  void SendLocked();  // hands waiting entries to the transport, in order, within the window
  void DoneLocked(std::map<std::uint64_t, Entry>::iterator it);
  void WriteDoneMarkLocked(std::uint64_t below);
  std::string FullMessageLocked(std::uint64_t needed) const;

  const OutboxOptions options_;
  const OutboxTransport transport_;

  std::mutex mu_;                                     // guards everything below that is not atomic
  std::condition_variable sent_cv_;                   // in_flight_ or waiting_ went down
  std::map<std::uint64_t, Entry> pending_;            // by seq: not done yet
  std::unordered_map<int, std::uint64_t> in_flight_;  // packet id -> seq, awaiting the broker
  std::uint64_t next_seq_ = 1;
  std::uint64_t next_to_send_ = 0;  // every pending seq below it has been handed over
  std::chrono::steady_clock::time_point down_since_;  // when the broker was last seen down
  bool down_ = true;
  int fd_ = -1;  // the segment being appended to
  std::string segment_path_;
  std::uint64_t segment_size_ = 0;
  std::uint64_t segment_last_seq_ = 0;
  std::vector<ClosedSegment> closed_;
  int done_fd_ = -1;
  std::uint64_t done_written_ = 0;
  std::string scratch_;

  std::atomic<std::uint64_t> waiting_{0};  // pending and not handed over: the fast path's check
  std::atomic<std::int64_t> pending_messages_{0};
  std::atomic<std::int64_t> pending_bytes_{0};
  std::atomic<std::uint64_t> replayed_{0};
  std::atomic<std::uint64_t> rejected_{0};
};

}  // namespace wisp
