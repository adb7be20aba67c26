// MqttConnection against a real mosquitto broker: wildcards, QoS 1 with MQTT 5 properties,
// shared subscriptions, reconnects, persistent sessions and the QoS 1 acknowledgement timing
// that at-least-once delivery rests on (a child process dies inside its message handler).
#include "mqtt/mqtt_connection.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "broker.h"
#include "mqtt_inbox.h"

namespace wisp::testing {
namespace {

class MqttConnectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Status started = broker_.Start();
    ASSERT_TRUE(started.ok()) << started.ToString();
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- mosquitto log ----\n" << broker_.Log() << "-----------------------\n";
    }
  }

  MqttOptions Options(const std::string& client_id, bool clean_start = true) const {
    MqttOptions o;
    o.url = broker_.url();
    o.client_id = client_id;
    o.clean_start = clean_start;
    return o;
  }

  // A started connection (not necessarily connected yet).
  std::unique_ptr<MqttConnection> Open(const MqttOptions& options, Inbox* inbox) {
    static Inbox discard;
    auto conn = MqttConnection::Create(options, (inbox ? inbox : &discard)->Handler());
    EXPECT_TRUE(conn.ok()) << conn.status().ToString();
    if (!conn.ok()) return nullptr;
    Status started = (*conn)->Start();
    EXPECT_TRUE(started.ok()) << started.ToString();
    return std::move(conn).value();
  }

  // A connected connection.
  std::unique_ptr<MqttConnection> Connect(const MqttOptions& options, Inbox* inbox) {
    auto conn = Open(options, inbox);
    if (conn == nullptr) return nullptr;
    EXPECT_TRUE(WaitUntil([&] { return conn->connected(); }))
        << options.client_id << " did not connect: " << conn->last_error();
    return conn;
  }

  // Subscriptions take effect when the broker has processed them, which Subscribe() does not
  // wait for. The broker handles one client's packets in order, so once a probe topic
  // subscribed *after* the others delivers, the earlier subscriptions are active too.
  void AwaitSubscriptions(MqttConnection& conn, Inbox& inbox, MqttConnection& publisher) {
    const std::string probe = "wisp-test/probe/" + conn.client_id();
    ASSERT_TRUE(conn.Subscribe(probe, 1).ok());
    // A probe sent before the subscription was active is simply lost; send another after a
    // while, waiting longer each time.
    auto wait = std::chrono::milliseconds(50);
    const bool got = WaitUntil(
        [&] {
          if (publisher.connected()) (void)publisher.Publish(probe, "probe", 0, false);
          const bool in = inbox.WaitFor(
              [&](const std::vector<Received>& ms) {
                return std::any_of(ms.begin(), ms.end(),
                                   [&](const Received& m) { return m.topic == probe; });
              },
              wait);
          wait = std::min(wait * 2, std::chrono::milliseconds(2000));
          return in;
        },
        seconds(30));
    ASSERT_TRUE(got) << conn.client_id() << " never got its probe message";
  }

  Broker broker_;
};

TEST_F(MqttConnectionTest, WildcardSubscriptionSelectsTopics) {
  Inbox inbox;
  auto sub = Connect(Options("wild-sub"), &inbox);
  auto pub = Connect(Options("wild-pub"), nullptr);
  ASSERT_TRUE(sub && pub);
  ASSERT_TRUE(sub->Subscribe("plant/+/pump/#", 1).ok());
  AwaitSubscriptions(*sub, inbox, *pub);

  // One publisher, one QoS: the broker keeps the order, so when the pump message is in, the
  // valve message (published first) would be in too if it matched.
  ASSERT_TRUE(pub->Publish("plant/a/valve/1", "closed", 1, false).ok());
  ASSERT_TRUE(pub->Publish("plant/a/pump/1/vibration", "0.7", 1, false).ok());
  ASSERT_TRUE(inbox.WaitForTopic("plant/a/pump/1/vibration"));
  auto pump = inbox.On("plant/a/pump/1/vibration");
  ASSERT_EQ(pump.size(), 1u);
  EXPECT_EQ(pump[0].payload, "0.7");
  EXPECT_TRUE(inbox.On("plant/a/valve/1").empty());
}

TEST_F(MqttConnectionTest, Qos1RoundTripCarriesContentType) {
  Inbox inbox;
  auto sub = Connect(Options("rt-sub"), &inbox);
  auto pub = Connect(Options("rt-pub"), nullptr);
  ASSERT_TRUE(sub && pub);
  ASSERT_TRUE(sub->Subscribe("site/telemetry", 1).ok());
  AwaitSubscriptions(*sub, inbox, *pub);
  const auto published_before = pub->published();

  ASSERT_TRUE(pub->Publish("site/telemetry", R"({"t":21.5})", 1, false, "application/json").ok());
  ASSERT_TRUE(pub->Publish("site/telemetry", "plain", 1, false).ok());
  ASSERT_TRUE(inbox.WaitFor([](auto& ms) {
    int n = 0;
    for (auto& m : ms) n += m.topic == "site/telemetry";
    return n == 2;
  }));
  auto got = inbox.On("site/telemetry");
  EXPECT_EQ(got[0].payload, R"({"t":21.5})");
  EXPECT_EQ(got[0].qos, 1);
  EXPECT_FALSE(got[0].retain);
  EXPECT_EQ(got[0].content_type, "application/json");
  EXPECT_EQ(got[1].payload, "plain");
  EXPECT_EQ(got[1].content_type, "");
  EXPECT_EQ(pub->published(), published_before + 2);
  EXPECT_EQ(sub->received(), inbox.Snapshot().size());  // probes included
}

TEST_F(MqttConnectionTest, SharedSubscriptionDeliversEachMessageOnce) {
  Inbox a_inbox, b_inbox;
  auto a = Connect(Options("shared-a"), &a_inbox);
  auto b = Connect(Options("shared-b"), &b_inbox);
  auto pub = Connect(Options("shared-pub"), nullptr);
  ASSERT_TRUE(a && b && pub);
  ASSERT_TRUE(a->Subscribe("jobs/#", 1, "g").ok());
  ASSERT_TRUE(b->Subscribe("jobs/#", 1, "g").ok());
  AwaitSubscriptions(*a, a_inbox, *pub);
  AwaitSubscriptions(*b, b_inbox, *pub);

  constexpr int kMessages = 200;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(pub->Publish("jobs/" + std::to_string(i % 7), std::to_string(i), 1, false).ok());
  }
  auto jobs = [](const Inbox& inbox) {
    std::vector<std::string> out;
    for (auto& m : inbox.Snapshot()) {
      if (m.topic.rfind("jobs/", 0) == 0) out.push_back(m.payload);
    }
    return out;
  };
  ASSERT_TRUE(WaitUntil([&] { return jobs(a_inbox).size() + jobs(b_inbox).size() >= kMessages; },
                        seconds(30)))
      << "got " << jobs(a_inbox).size() << " + " << jobs(b_inbox).size();
  // A late duplicate would have to be in flight now; a marker behind it flushes both paths.
  ASSERT_TRUE(pub->Publish("jobs/marker", "end", 1, false).ok());
  ASSERT_TRUE(WaitUntil([&] {
    auto all = jobs(a_inbox);
    auto more = jobs(b_inbox);
    all.insert(all.end(), more.begin(), more.end());
    return std::count(all.begin(), all.end(), "end") == 1;
  }));

  const auto got_a = jobs(a_inbox), got_b = jobs(b_inbox);
  std::map<std::string, int> times;
  for (auto& p : got_a) ++times[p];
  for (auto& p : got_b) ++times[p];
  for (int i = 0; i < kMessages; ++i) {
    EXPECT_EQ(times[std::to_string(i)], 1) << "message " << i;
  }
  EXPECT_EQ(got_a.size() + got_b.size(), kMessages + 1u);
  EXPECT_GT(got_a.size(), 0u);
  EXPECT_GT(got_b.size(), 0u);
  std::cerr << "shared subscription split: " << got_a.size() << " / " << got_b.size() << "\n";
}

TEST_F(MqttConnectionTest, ReconnectsAndResubscribesAfterBrokerRestart) {
  Inbox inbox;
  auto sub = Connect(Options("re-sub"), &inbox);
  auto pub = Connect(Options("re-pub"), nullptr);
  ASSERT_TRUE(sub && pub);
  ASSERT_TRUE(sub->Subscribe("line/+/state", 1).ok());
  AwaitSubscriptions(*sub, inbox, *pub);

  broker_.Stop();
  ASSERT_TRUE(WaitUntil([&] { return !pub->connected() && !sub->connected(); }));
  Status down = pub->Publish("line/1/state", "lost", 1, false);
  EXPECT_EQ(down.code(), StatusCode::kUnavailable) << down.ToString();
  EXPECT_NE(down.message().find("not connected to the broker at " + broker_.url()),
            std::string::npos)
      << down.message();
  // "lost the connection to <url>", then "cannot reach the broker at <url>" once a retry failed.
  EXPECT_NE(sub->last_error().find(broker_.url()), std::string::npos) << sub->last_error();

  // Same port; the broker has no persistence, so the subscriptions come back only because
  // the connection sends them again on connect.
  Status restarted = broker_.Start();
  ASSERT_TRUE(restarted.ok()) << restarted.ToString();
  ASSERT_TRUE(WaitUntil([&] { return pub->connected() && sub->connected(); }, seconds(15)))
      << "no reconnect: " << sub->last_error();
  AwaitSubscriptions(*sub, inbox, *pub);
  ASSERT_TRUE(pub->Publish("line/1/state", "running", 1, false).ok());
  ASSERT_TRUE(inbox.WaitForTopic("line/1/state"));
  auto got = inbox.On("line/1/state");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].payload, "running");
}

TEST_F(MqttConnectionTest, StartsWhileTheBrokerIsDown) {
  broker_.Stop();
  Inbox inbox;
  auto sub = Open(Options("late-sub"), &inbox);
  ASSERT_TRUE(sub);
  EXPECT_FALSE(sub->connected());
  // Subscribing before the first connect is fine: it is sent on connect.
  ASSERT_TRUE(sub->Subscribe("late/topic", 1).ok());
  EXPECT_EQ(sub->Publish("late/topic", "x", 1, false).code(), StatusCode::kUnavailable);

  ASSERT_TRUE(broker_.Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return sub->connected(); }, seconds(15))) << sub->last_error();
  auto pub = Connect(Options("late-pub"), nullptr);
  ASSERT_TRUE(pub);
  AwaitSubscriptions(*sub, inbox, *pub);
  ASSERT_TRUE(pub->Publish("late/topic", "hello", 1, false).ok());
  EXPECT_TRUE(inbox.WaitForTopic("late/topic"));
}

TEST_F(MqttConnectionTest, StopWhileTheBrokerIsDownReturns) {
  auto conn = Connect(Options("stop-down"), nullptr);
  ASSERT_TRUE(conn);
  broker_.Stop();
  ASSERT_TRUE(WaitUntil([&] { return !conn->connected(); }));
  const auto start = std::chrono::steady_clock::now();
  conn->Stop();  // must not hang on the reconnect loop
  std::cerr << "Stop() with the broker down took "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start)
                   .count()
            << " ms\n";
  EXPECT_FALSE(conn->connected());
}

TEST_F(MqttConnectionTest, StopsAndStartsAgain) {
  Inbox inbox;
  auto sub = Connect(Options("again-sub"), &inbox);
  auto pub = Connect(Options("again-pub"), nullptr);
  ASSERT_TRUE(sub && pub);
  ASSERT_TRUE(sub->Subscribe("again/#", 1).ok());
  AwaitSubscriptions(*sub, inbox, *pub);
  sub->Stop();
  sub->Stop();  // idempotent
  EXPECT_FALSE(sub->connected());
  EXPECT_EQ(sub->Publish("again/x", "x", 1, false).code(), StatusCode::kUnavailable);

  ASSERT_TRUE(sub->Start().ok());
  EXPECT_EQ(sub->Start().code(), StatusCode::kInternal);  // already started
  ASSERT_TRUE(WaitUntil([&] { return sub->connected(); })) << sub->last_error();
  AwaitSubscriptions(*sub, inbox, *pub);  // clean session: subscribed again by the connection
  ASSERT_TRUE(pub->Publish("again/1", "back", 1, false).ok());
  ASSERT_TRUE(inbox.WaitForTopic("again/1"));
}

TEST_F(MqttConnectionTest, StopFromTheHandlerIsRefusedNotDeadlocked) {
  MqttConnection* self = nullptr;
  std::atomic<bool> returned{false};
  auto sub = MqttConnection::Create(Options("self-stop"), [&](const MqttMessage&) {
    self->Stop();
    returned = true;
  });
  ASSERT_TRUE(sub.ok());
  self = sub->get();
  ASSERT_TRUE((*sub)->Subscribe("self/#", 0).ok());
  ASSERT_TRUE((*sub)->Start().ok());
  auto pub = Connect(Options("self-pub"), nullptr);
  ASSERT_TRUE(pub && WaitUntil([&] { return (*sub)->connected(); }));
  ASSERT_TRUE(WaitUntil(
      [&] {
        (void)pub->Publish("self/1", "x", 0, false);
        return WaitUntil([&] { return returned.load(); }, seconds(1));
      },
      seconds(20)));
  EXPECT_TRUE((*sub)->connected());
}

TEST_F(MqttConnectionTest, PersistentSessionKeepsQos1MessagesWhileAway) {
  auto pub = Connect(Options("away-pub"), nullptr);
  ASSERT_TRUE(pub);
  {
    Inbox inbox;
    auto sub = Connect(Options("away-sub", /*clean_start=*/false), &inbox);
    ASSERT_TRUE(sub);
    ASSERT_TRUE(sub->Subscribe("orders/#", 1).ok());
    AwaitSubscriptions(*sub, inbox, *pub);
    sub->Stop();  // a clean DISCONNECT; the session stays for session_expiry
  }
  ASSERT_TRUE(pub->Publish("orders/17", "while away", 1, false).ok());

  // Back with the same client id and no Subscribe(): the broker kept both the subscription and
  // the message. Without the Session Expiry Interval in CONNECT it would have kept neither.
  Inbox inbox;
  auto sub = Connect(Options("away-sub", /*clean_start=*/false), &inbox);
  ASSERT_TRUE(sub);
  ASSERT_TRUE(inbox.WaitForTopic("orders/17"));
  EXPECT_EQ(inbox.On("orders/17")[0].payload, "while away");
}

// The experiment behind the at-least-once claim in mqtt_connection.h. A child process takes
// over a persistent session and dies (_exit) inside its handler for a QoS 1 message, as a node
// crashing before it stored the message would. If libmosquitto had written the PUBACK before
// calling the handler, the broker would consider the message delivered; it must instead
// deliver it again to the next connection with the same client id.
class MqttAckTimingTest : public MqttConnectionTest {
 protected:
  // Creates the persistent session (subscribed to `filter`), queues one QoS 1 message on
  // `topic` for it while it is offline, and leaves no thread running, so that fork() is safe.
  void PrepareSessionWithQueuedMessage(const std::string& client_id, const std::string& filter,
                                       const std::string& topic, const std::string& payload) {
    auto pub = Connect(Options(client_id + "-pub"), nullptr);
    ASSERT_TRUE(pub);
    {
      Inbox inbox;
      auto sub = Connect(Options(client_id, /*clean_start=*/false), &inbox);
      ASSERT_TRUE(sub);
      ASSERT_TRUE(sub->Subscribe(filter, 1).ok());
      AwaitSubscriptions(*sub, inbox, *pub);
    }  // destroyed: DISCONNECT, thread joined
    ASSERT_TRUE(pub->Publish(topic, payload, 1, false).ok());
    // Stop flushes the PUBLISH before the DISCONNECT; the broker reads them in that order.
  }

  // Runs `child` in a forked process and returns its exit code (or 128 + signal).
  static int RunChild(const std::function<int()>& child) {
    std::cout.flush();
    std::cerr.flush();
    const pid_t pid = ::fork();
    if (pid == 0) {
      int code = 3;
      try {
        code = child();
      } catch (...) {
        code = 4;
      }
      ::_exit(code);
    }
    if (pid < 0) return -1;
    int status = 0;
    const bool exited =
        WaitUntil([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, seconds(60));
    if (!exited) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -2;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // In the child: takes over the session and calls `on_target` for the message on `topic`.
  // Exit 2 if the message never came.
  int ChildTakesOverSession(const std::string& client_id, const std::string& filter,
                            const std::string& topic,
                            std::function<void(MqttConnection&, const MqttMessage&)> on_target) {
    MqttConnection* self = nullptr;
    std::atomic<bool> got{false};
    auto conn = MqttConnection::Create(Options(client_id, /*clean_start=*/false),
                                       [&](const MqttMessage& m) {
                                         if (m.topic != topic) return;
                                         on_target(*self, m);
                                         got = true;
                                       });
    if (!conn.ok()) return 5;
    self = conn->get();
    if (!(*conn)->Subscribe(filter, 1).ok() || !(*conn)->Start().ok()) return 6;
    if (!WaitUntil([&] { return got.load(); }, seconds(30))) return 2;
    (*conn)->Stop();  // clean DISCONNECT behind the PUBACK that the return queued and sent
    return 0;
  }
};

TEST_F(MqttAckTimingTest, Qos1MessageIsRedeliveredAfterACrashInsideTheHandler) {
  PrepareSessionWithQueuedMessage("ack-crash", "crash/#", "crash/1", "m1");
  if (HasFatalFailure()) return;

  const int code = RunChild([&] {
    return ChildTakesOverSession("ack-crash", "crash/#", "crash/1",
                                 [](MqttConnection&, const MqttMessage& m) {
                                   // Crash before returning: nothing after this runs.
                                   ::_exit(m.payload == "m1" && m.qos == 1 ? 0 : 7);
                                 });
  });
  ASSERT_EQ(code, 0) << "the child did not die in its handler for the message (exit " << code
                     << ")";

  Inbox inbox;
  auto again = Connect(Options("ack-crash", /*clean_start=*/false), &inbox);
  ASSERT_TRUE(again);
  ASSERT_TRUE(inbox.WaitForTopic("crash/1")) << "the broker did not deliver the message again";
  auto got = inbox.On("crash/1");
  EXPECT_EQ(got[0].payload, "m1");
  EXPECT_EQ(got[0].qos, 1);
}

// The control: when the handler returns, the PUBACK goes out and the message is not delivered
// again. Without it the test above could pass for a wrong reason (a broker that redelivers
// regardless).
TEST_F(MqttAckTimingTest, Qos1MessageIsAcknowledgedOnceTheHandlerReturns) {
  PrepareSessionWithQueuedMessage("ack-ok", "done/#", "done/1", "m1");
  if (HasFatalFailure()) return;

  const int code = RunChild([&] {
    return ChildTakesOverSession("ack-ok", "done/#", "done/1",
                                 [](MqttConnection&, const MqttMessage&) {});
  });
  ASSERT_EQ(code, 0) << "the child did not get the message (exit " << code << ")";

  // A marker published now is queued behind anything the broker still owes the session; when
  // it arrives, a redelivery of done/1 would have arrived first.
  Inbox inbox;
  auto again = Connect(Options("ack-ok", /*clean_start=*/false), &inbox);
  auto pub = Connect(Options("ack-ok-pub2"), nullptr);
  ASSERT_TRUE(again && pub);
  ASSERT_TRUE(pub->Publish("done/marker", "m2", 1, false).ok());
  ASSERT_TRUE(inbox.WaitForTopic("done/marker"));
  EXPECT_TRUE(inbox.On("done/1").empty()) << "acknowledged message was delivered again";
}

// mqtts:// with a CA file and a client certificate, against a broker that requires one.
class MqttTlsTest : public MqttConnectionTest {
 protected:
  void SetUp() override {
    // A CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and an
    // unrelated CA. EC keys: quick to make.
    const std::string d = certs_.path();
    const std::string key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "cd " + d + " && exec >openssl.log 2>&1 && " + "openssl req -x509" + key +
        " -keyout ca.key -out ca.crt -days 2 -subj /CN=wisp-ca && " + "openssl req -x509" + key +
        " -keyout other.key -out other.crt -days 2 -subj /CN=other && " + "openssl req" + key +
        " -keyout server.key -out server.csr -subj /CN=127.0.0.1 && " +
        "echo subjectAltName=IP:127.0.0.1 > san.cnf && " +
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 " +
        "-extfile san.cnf -out server.crt && " + "openssl req" + key +
        " -keyout client.key -out client.csr -subj /CN=wisp-node && " +
        "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 " +
        "-out client.crt";
    if (std::system(script.c_str()) != 0) {
      GTEST_SKIP() << "cannot make test certificates with openssl:\n"
                   << ReadTextFile(d + "/openssl.log");
    }
    broker_.UseTls(d + "/server.crt", d + "/server.key", d + "/ca.crt");
    MqttConnectionTest::SetUp();
  }

  MqttOptions TlsOptions(const std::string& client_id, const std::string& ca = "ca.crt") const {
    MqttOptions o = Options(client_id);
    o.ca_file = certs_.path() + "/" + ca;
    o.cert_file = certs_.path() + "/client.crt";
    o.key_file = certs_.path() + "/client.key";
    return o;
  }

  TempDir certs_;
};

TEST_F(MqttTlsTest, RoundTripWithClientCertificate) {
  ASSERT_EQ(broker_.url().rfind("mqtts://", 0), 0u);
  Inbox inbox;
  auto sub = Connect(TlsOptions("tls-sub"), &inbox);
  auto pub = Connect(TlsOptions("tls-pub"), nullptr);
  ASSERT_TRUE(sub && pub);
  ASSERT_TRUE(sub->Subscribe("secure/#", 1).ok());
  AwaitSubscriptions(*sub, inbox, *pub);
  ASSERT_TRUE(pub->Publish("secure/1", "sealed", 1, false, "text/plain").ok());
  ASSERT_TRUE(inbox.WaitForTopic("secure/1"));
  EXPECT_EQ(inbox.On("secure/1")[0].payload, "sealed");
  EXPECT_EQ(inbox.On("secure/1")[0].content_type, "text/plain");
}

TEST_F(MqttTlsTest, DoesNotTrustABrokerSignedByAnotherCa) {
  auto conn = Open(TlsOptions("tls-untrusting", "other.crt"), nullptr);
  ASSERT_TRUE(conn);
  // The failed handshake is reported, and the connection keeps trying (never connected).
  ASSERT_TRUE(WaitUntil([&] { return !conn->last_error().empty(); }));
  EXPECT_FALSE(conn->connected());
  EXPECT_NE(conn->last_error().find("cannot reach the broker at " + broker_.url()),
            std::string::npos)
      << conn->last_error();
}

TEST_F(MqttTlsTest, SystemCasDoNotTrustATestCa) {
  // No CA file: the system's CAs, which do not include ours. The failure must be the
  // certificate check (TLS on and verifying), with and without a client certificate.
  for (bool client_cert : {true, false}) {
    MqttOptions o = TlsOptions(client_cert ? "tls-system-cas-cert" : "tls-system-cas");
    o.ca_file.clear();
    if (!client_cert) {
      o.cert_file.clear();
      o.key_file.clear();
    }
    auto conn = Open(o, nullptr);
    ASSERT_TRUE(conn);
    ASSERT_TRUE(WaitUntil([&] { return !conn->last_error().empty(); }));
    EXPECT_FALSE(conn->connected());
    EXPECT_NE(conn->last_error().find("certificate verify failed"), std::string::npos)
        << conn->last_error();
  }
}

TEST(MqttConnectionCreateTest, RefusesBadOptions) {
  auto handler = [](const MqttMessage&) {};
  MqttOptions o;
  o.url = "mqtt://127.0.0.1:1";
  o.client_id = "x";
  EXPECT_TRUE(MqttConnection::Create(o, handler).ok());

  auto code = [&](MqttOptions bad) { return MqttConnection::Create(bad, handler).status().code(); };
  MqttOptions bad = o;
  bad.url = "tcp://h";
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.client_id = "";  // a persistent session needs a name
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad.clean_start = true;  // ... a clean one does not
  EXPECT_TRUE(MqttConnection::Create(bad, handler).ok());
  bad = o;
  bad.keepalive = seconds(2);
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.reconnect_max = std::chrono::milliseconds(100);
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad = o;
  bad.ca_file = "/etc/hostname";  // TLS files on a plain mqtt:// URL
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  MqttOptions tls = o;
  tls.url = "mqtts://127.0.0.1";  // no CA file: the system's CAs
  EXPECT_TRUE(MqttConnection::Create(tls, handler).ok())
      << MqttConnection::Create(tls, handler).status().ToString();
  bad = o;
  bad.url = "mqtts://127.0.0.1";
  bad.ca_file = "/nonexistent/ca.pem";
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);
  bad.ca_file = "";
  bad.cert_file = "/nonexistent/cert.pem";  // without key_file
  EXPECT_EQ(code(bad), StatusCode::kInvalidArgument);

  auto conn = MqttConnection::Create(o, handler);
  ASSERT_TRUE(conn.ok());
  EXPECT_EQ((*conn)->Subscribe("a/#/b", 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*conn)->Subscribe("a/#", 3).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*conn)->Subscribe("a/#", 1, "g/x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*conn)->Publish("a/b", "x", 1, false).code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace wisp::testing
