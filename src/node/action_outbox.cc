#include "node/action_outbox.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "node/framed_log.h"

namespace wisp {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kSegmentExtension = ".obx";
constexpr std::string_view kWho = "mqtt outbox";
// Once everything is done, a current segment at least this big is deleted rather than kept
// growing: a node that is mostly connected keeps its outbox small on disk.
constexpr std::uint64_t kRetireSegmentBytes = 1ull << 20;
// Entries done between two writes of the done mark while the outbox is busy.
constexpr std::uint64_t kDoneMarkEvery = 64;

std::int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

ActionOutbox::ActionOutbox(OutboxOptions options, OutboxTransport transport)
    : options_(std::move(options)), transport_(std::move(transport)) {}

ActionOutbox::~ActionOutbox() {
  // A clean stop re-sends nothing that was done.
  const std::uint64_t below = pending_.empty() ? next_seq_ - 1 : pending_.begin()->first - 1;
  if (done_fd_ >= 0 && below > done_written_) WriteDoneMarkLocked(below);
  if (fd_ >= 0) {
    ::close(fd_);
    // Everything sent and acknowledged: the next start has nothing to read.
    std::error_code ec;
    if (pending_.empty()) fs::remove(segment_path_, ec);
  }
  if (done_fd_ >= 0) ::close(done_fd_);
}

Result<std::unique_ptr<ActionOutbox>> ActionOutbox::Open(const OutboxOptions& options,
                                                         OutboxTransport transport) {
  if (!transport.connected || !transport.publish) {
    return InvalidArgument("mqtt outbox: the transport needs connected() and publish()");
  }
  std::unique_ptr<ActionOutbox> outbox(new ActionOutbox(options, std::move(transport)));
  RETURN_IF_ERROR(outbox->Load());
  return outbox;
}

Status ActionOutbox::Load() {
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec) return IoError(fmt::format("{}: cannot create {}: {}", kWho, options_.dir, ec.message()));
  const fs::path done_path = fs::path(options_.dir) / "done";
  std::uint64_t done = 0;
  if (const std::string bytes = framed_log::ReadWholeFile(done_path); bytes.size() == 8) {
    done = framed_log::Get<std::uint64_t>(bytes.data());
  }
  std::map<std::uint64_t, fs::path> segments;
  for (const auto& file : fs::directory_iterator(options_.dir, ec)) {
    if (const std::uint64_t first = framed_log::SegmentFirstSeq(file.path(), kSegmentExtension);
        first > 0) {
      segments.emplace(first, file.path());
    }
  }
  if (ec) return IoError(fmt::format("{}: cannot read {}: {}", kWho, options_.dir, ec.message()));

  std::uint64_t max_seq = done;
  std::int64_t bytes_pending = 0;
  for (const auto& [first, path] : segments) {
    const std::string bytes = framed_log::ReadWholeFile(path);
    std::size_t valid = 0;
    std::vector<OutboxMessage> messages = DecodeOutboxSegment(bytes, &valid);
    if (valid != bytes.size()) {
      spdlog::warn("{}: {} ends in a torn or damaged entry at byte {}; the rest of it is skipped",
                   kWho, path.string(), valid);
    }
    std::uint64_t last = first - 1;
    for (OutboxMessage& message : messages) {
      last = std::max(last, message.seq);
      if (message.seq <= done || pending_.contains(message.seq)) continue;
      scratch_.clear();
      EncodeOutboxEntry(message, &scratch_);
      Entry entry;
      entry.bytes = scratch_.size();
      entry.waited = true;  // sent after a restart: a replay
      bytes_pending += static_cast<std::int64_t>(entry.bytes);
      const std::uint64_t seq = message.seq;
      entry.message = std::move(message);
      pending_.emplace(seq, std::move(entry));
    }
    max_seq = std::max(max_seq, last);
    closed_.push_back({path.string(), last});
  }
  next_seq_ = max_seq + 1;
  done_written_ = done;
  done_fd_ = ::open(done_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (done_fd_ < 0) {
    return IoError(
        fmt::format("{}: cannot open {}: {}", kWho, done_path.string(), std::strerror(errno)));
  }
  pending_messages_.store(static_cast<std::int64_t>(pending_.size()));
  pending_bytes_.store(bytes_pending);
  waiting_.store(pending_.size());
  down_since_ = std::chrono::steady_clock::now();
  if (!pending_.empty()) {
    spdlog::info("{}: {} message(s) ({} bytes) left by the last run are sent once connected", kWho,
                 pending_.size(), bytes_pending);
  }
  // Segments that hold nothing pending (all done before the last run stopped).
  std::lock_guard lock(mu_);
  const std::uint64_t below = pending_.empty() ? next_seq_ - 1 : pending_.begin()->first - 1;
  std::erase_if(closed_, [&](const ClosedSegment& c) {
    if (c.last_seq > below) return false;
    fs::remove(c.path, ec);
    return true;
  });
  return Status::Ok();
}

Status ActionOutbox::RollLocked(std::uint64_t first_seq) {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    closed_.push_back({segment_path_, segment_last_seq_});
  }
  segment_path_ = (fs::path(options_.dir) / fmt::format("{}{}", first_seq, kSegmentExtension));
  fd_ = ::open(segment_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    return IoError(
        fmt::format("{}: cannot create {}: {}", kWho, segment_path_, std::strerror(errno)));
  }
  segment_size_ = kOutboxMagic.size();
  segment_last_seq_ = first_seq - 1;
  if (Status s = framed_log::WriteAll(fd_, kOutboxMagic, segment_path_, kWho); !s.ok()) {
    ::close(fd_);
    fd_ = -1;
    std::error_code ec;
    fs::remove(segment_path_, ec);
    return s;
  }
  return Status::Ok();
}

Status ActionOutbox::AppendLocked(const OutboxMessage& message, const std::string& encoded) {
  const bool fresh = fd_ >= 0 && segment_size_ == kOutboxMagic.size();
  if (fd_ < 0 || (!fresh && segment_size_ + encoded.size() > options_.segment_bytes)) {
    RETURN_IF_ERROR(RollLocked(message.seq));
  }
  Status written = framed_log::WriteAll(fd_, encoded, segment_path_, kWho);
  if (written.ok() && options_.sync && ::fdatasync(fd_) != 0) {
    written =
        IoError(fmt::format("{}: cannot sync {}: {}", kWho, segment_path_, std::strerror(errno)));
  }
  if (!written.ok()) {
    // A partial entry may end this segment, and a reader stops there: later entries go to a
    // new one.
    ::close(fd_);
    fd_ = -1;
    closed_.push_back({segment_path_, segment_last_seq_});
    return written;
  }
  segment_size_ += encoded.size();
  segment_last_seq_ = message.seq;
  return Status::Ok();
}

std::string ActionOutbox::FullMessageLocked(std::uint64_t needed) const {
  std::string why;
  if (down_) {
    const auto down_for = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::steady_clock::now() - down_since_);
    why = fmt::format("the broker at {} has been unreachable for {} s", options_.broker,
                      down_for.count());
  } else {
    why = fmt::format("the broker at {} has not acknowledged {} message(s) yet", options_.broker,
                      in_flight_.size());
  }
  return fmt::format(
      "the mqtt outbox is full: {} message(s), {} bytes pending, and this one needs {} more "
      "(limit mqtt.outbox_max_bytes = {}); {}",
      pending_.size(), pending_bytes_.load(kRelaxed), needed, options_.max_bytes, why);
}

Status ActionOutbox::Emit(std::string_view topic, std::string_view payload,
                          std::string_view content_type, int qos, bool retain) {
  if (qos < 0 || qos > 2) return InvalidArgument("MQTT QoS must be 0, 1 or 2");
  // The hot path: nothing waits, so a QoS 0 message can go out directly, in order.
  if (qos == 0 && waiting_.load(std::memory_order_acquire) == 0 && transport_.connected()) {
    Status sent = transport_.publish(topic, payload, content_type, 0, retain, nullptr);
    if (sent.code() != StatusCode::kUnavailable) return sent;
    // Disconnected meanwhile: queue it.
  }
  OutboxMessage message;
  message.topic.assign(topic);
  message.payload.assign(payload);
  message.content_type.assign(content_type);
  message.qos = qos;
  message.retain = retain;
  message.emitted_at_us = NowUs();

  std::lock_guard lock(mu_);
  const bool connected = transport_.connected();
  if (!connected && !down_) {
    down_ = true;
    down_since_ = std::chrono::steady_clock::now();
  }
  message.seq = next_seq_;
  scratch_.clear();
  EncodeOutboxEntry(message, &scratch_);
  const std::uint64_t size = scratch_.size();
  if (static_cast<std::uint64_t>(pending_bytes_.load(kRelaxed)) + size > options_.max_bytes) {
    rejected_.fetch_add(1, kRelaxed);
    return ResourceExhausted(FullMessageLocked(size));
  }
  ++next_seq_;  // even when the write fails: a gap in the seqs is harmless
  RETURN_IF_ERROR(AppendLocked(message, scratch_));
  const std::uint64_t seq = message.seq;
  Entry entry;
  entry.message = std::move(message);
  entry.bytes = size;
  entry.waited = !connected;
  pending_.emplace(seq, std::move(entry));
  pending_messages_.fetch_add(1, kRelaxed);
  pending_bytes_.fetch_add(static_cast<std::int64_t>(size), kRelaxed);
  waiting_.fetch_add(1, std::memory_order_release);
  if (connected) SendLocked();
  return Status::Ok();
}

void ActionOutbox::SendLocked() {
  if (!transport_.connected()) return;
  auto it = pending_.lower_bound(next_to_send_);
  while (it != pending_.end() &&
         in_flight_.size() < static_cast<std::size_t>(options_.max_in_flight)) {
    const std::uint64_t seq = it->first;
    Entry& entry = it->second;
    const OutboxMessage& m = entry.message;
    int mid = 0;
    Status sent = transport_.publish(m.topic, m.payload, m.content_type, m.qos, m.retain,
                                     m.qos > 0 ? &mid : nullptr);
    if (sent.code() == StatusCode::kUnavailable) return;  // the next OnConnected resumes
    next_to_send_ = seq + 1;
    waiting_.fetch_sub(1, std::memory_order_release);
    if (!sent.ok()) {
      spdlog::error("{}: dropping the emit to '{}' (seq {}): {}", kWho, m.topic, seq,
                    sent.message());
      rejected_.fetch_add(1, kRelaxed);
      DoneLocked(it++);
      continue;
    }
    if (entry.waited) replayed_.fetch_add(1, kRelaxed);
    if (m.qos == 0) {
      DoneLocked(it++);
    } else {
      in_flight_[mid] = seq;
      ++it;
    }
  }
}

void ActionOutbox::WriteDoneMarkLocked(std::uint64_t below) {
  char bytes[8];
  for (std::size_t i = 0; i < 8; ++i) bytes[i] = static_cast<char>(below >> (8 * i));
  if (::pwrite(done_fd_, bytes, sizeof(bytes), 0) != 8) {
    // The entries would be sent again after a restart: at least once still holds.
    spdlog::warn("{}: cannot mark {} done: {}", kWho, below, std::strerror(errno));
    return;
  }
  done_written_ = below;
}

void ActionOutbox::DoneLocked(std::map<std::uint64_t, Entry>::iterator it) {
  pending_bytes_.fetch_sub(static_cast<std::int64_t>(it->second.bytes), kRelaxed);
  pending_messages_.fetch_sub(1, kRelaxed);
  pending_.erase(it);
  const std::uint64_t below = pending_.empty() ? next_seq_ - 1 : pending_.begin()->first - 1;
  if (below <= done_written_) return;
  // The mark is written once the outbox is empty or has moved kDoneMarkEvery entries, not per
  // acknowledgement (a pwrite on the network thread per message): a crash re-sends at most
  // that many acknowledged entries, which at-least-once allows.
  if (pending_.empty() || below - done_written_ >= kDoneMarkEvery) WriteDoneMarkLocked(below);
  // A segment whose entries are all done is not needed whatever the mark says.
  std::error_code ec;
  std::erase_if(closed_, [&](const ClosedSegment& c) {
    if (c.last_seq > below) return false;
    fs::remove(c.path, ec);
    return true;
  });
  if (pending_.empty() && fd_ >= 0 && segment_size_ >= kRetireSegmentBytes) {
    ::close(fd_);
    fd_ = -1;
    fs::remove(segment_path_, ec);
  }
}

void ActionOutbox::OnConnected() {
  std::lock_guard lock(mu_);
  down_ = false;
  if (const std::uint64_t waiting = waiting_.load(); waiting > 0) {
    spdlog::info("{}: connected; sending {} queued message(s)", kWho, waiting);
  }
  SendLocked();
}

void ActionOutbox::OnPublished(int mid, int reason_code) {
  std::lock_guard lock(mu_);
  const auto found = in_flight_.find(mid);
  if (found == in_flight_.end()) return;  // not ours (a dead letter, a direct QoS 0 message)
  const std::uint64_t seq = found->second;
  in_flight_.erase(found);
  if (auto it = pending_.find(seq); it != pending_.end()) {
    if (reason_code >= 0x80) {
      spdlog::warn("{}: the broker refused the emit to '{}' (reason {:#x}); not sent again", kWho,
                   it->second.message.topic, reason_code);
    }
    DoneLocked(it);
  }
  SendLocked();
  sent_cv_.notify_all();
}

bool ActionOutbox::WaitUntilSent(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return sent_cv_.wait_for(lock, timeout,
                           [&] { return in_flight_.empty() && (down_ || waiting_.load() == 0); });
}

}  // namespace wisp
