#include <gtest/gtest.h>

#include "node/node.h"

namespace wisp {
namespace {

TEST(NodeConfigTest, EmptyConfigGivesEmbeddedDefaults) {
  auto config = ParseNodeConfig("", "node.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->listen_host, "127.0.0.1");
  EXPECT_EQ(config->listen_port, 8080);
  EXPECT_EQ(config->state_backend, "sqlite");
  EXPECT_EQ(config->http.max_body_bytes, 1u << 20);
  EXPECT_TRUE(config->mqtt.outbox);
  EXPECT_EQ(config->mqtt.outbox_max_bytes, 256ull << 20);
}

TEST(NodeConfigTest, ReadsTheOutboxSettings) {
  auto config = ParseNodeConfig("mqtt:\n  outbox: false\n  outbox_max_bytes: 64Mi\n", "node.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_FALSE(config->mqtt.outbox);
  EXPECT_EQ(config->mqtt.outbox_max_bytes, 64ull << 20);
}

TEST(NodeConfigTest, ReadsEverySetting) {
  auto config = ParseNodeConfig(R"(
listen: 0.0.0.0:9000
data_dir: /tmp/wisp-x
shards: 3
log_level: debug
drain_timeout: 2s
http:
  max_body: 64Ki
  max_deploy_body: 8Mi
  max_header: 8Ki
  header_timeout: 1500ms
  body_timeout: 5s
  idle_timeout: 1m
state:
  backend: sqlite
  sync: full
mqtt:
  broker: mqtts://broker.plant:8883
  client_id: edge-7
  ca_file: /etc/wisp/ca.pem
  dead_letter_topic: wisp/dead-letter
actions:
  http_allow: [http://scada.local:8080/hooks, "http://10.0.0.5"]
  http_timeout: 3s
  http_attempts: 5
  http_queue: 10
  http_workers: 4
async:
  max_pending: 7
  result_ttl: 10m
)",
                                "node.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->listen_host, "0.0.0.0");
  EXPECT_EQ(config->listen_port, 9000);
  EXPECT_EQ(config->data_dir, "/tmp/wisp-x");
  EXPECT_EQ(config->shards, 3);
  EXPECT_EQ(config->log_level, "debug");
  EXPECT_EQ(config->drain_timeout.count(), 2000);
  EXPECT_EQ(config->http.max_body_bytes, 64u << 10);
  EXPECT_EQ(config->http.max_deploy_body_bytes, 8u << 20);
  EXPECT_EQ(config->http.max_header_bytes, 8u << 10);
  EXPECT_EQ(config->http.header_timeout.count(), 1500);
  EXPECT_EQ(config->http.idle_timeout.count(), 60000);
  EXPECT_TRUE(config->state_sync_full);
  EXPECT_EQ(config->mqtt.broker, "mqtts://broker.plant:8883");
  EXPECT_EQ(config->mqtt.client_id, "edge-7");
  EXPECT_EQ(config->mqtt.ca_file, "/etc/wisp/ca.pem");
  EXPECT_EQ(config->mqtt.dead_letter_topic, "wisp/dead-letter");
  EXPECT_EQ(config->actions.http_allow,
            (std::vector<std::string>{"http://scada.local:8080/hooks", "http://10.0.0.5"}));
  EXPECT_EQ(config->actions.http_timeout.count(), 3000);
  EXPECT_EQ(config->actions.http_attempts, 5);
  EXPECT_EQ(config->actions.http_queue, 10);
  EXPECT_EQ(config->actions.http_workers, 4);
  EXPECT_EQ(config->async.max_pending, 7);
  EXPECT_EQ(config->async.result_ttl.count(), 600000);
}

TEST(NodeConfigTest, ErrorsNameTheKey) {
  struct Case {
    const char* yaml;
    const char* expected;
  } cases[] = {
      {"listen: nope", "listen"},
      {"shards: -1", "shards"},
      {"shards: many", "shards"},
      {"log_level: loud", "log_level"},
      {"http: {max_body: 12Q}", "http.max_body"},
      {"http: {header_timeout: soon}", "http.header_timeout"},
      {"http: {colour: blue}", "http.colour: unknown key"},
      {"state: {sync: sometimes}", "state.sync"},
      {"mqtt: {brokr: x}", "mqtt.brokr: unknown key"},
      {"mqtt: {outbox_max_bytes: 1Ki}", "mqtt.outbox_max_bytes: must be at least 4Ki"},
      {"mqtt: {outbox: maybe}", "mqtt.outbox"},
      {"listn: 1", "listn: unknown key"},
      {"actions: {http_allow: http://x}", "actions.http_allow: expected a list"},
      {"actions: {http_allow: [\"ftp://x\"]}", "actions.http_allow: 'ftp://x'"},
      {"actions: {tls: {ca_file: /nonexistent/ca.pem}}",
       "actions.tls: ca_file '/nonexistent/ca.pem': cannot read it"},
      {"actions: {tls: {cert_file: client.pem}}",
       "actions.tls: cert_file and key_file go together"},
      {"actions: {tls: {ca: x}}", "actions.tls.ca: unknown key"},
      {"actions: {http_attempts: 0}", "actions.http_attempts"},
      {"async: {max_pending: 0}", "async.max_pending"},
      {"http: 5", "http: expected a map"},
      {"[1, 2]", "expected a map"},
      {"listen: [", "line"},
  };
  for (const auto& c : cases) {
    auto config = ParseNodeConfig(c.yaml, "node.yaml");
    ASSERT_FALSE(config.ok()) << c.yaml;
    EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(config.status().message().find(c.expected), std::string::npos)
        << c.yaml << " -> " << config.status().message();
    EXPECT_NE(config.status().message().find("node.yaml"), std::string::npos);
  }
}

TEST(NodeConfigTest, ListenAddressForms) {
  NodeConfig config;
  ASSERT_TRUE(ParseListenAddress("127.0.0.1:0", &config).ok());
  EXPECT_EQ(config.listen_port, 0);
  ASSERT_TRUE(ParseListenAddress(":9090", &config).ok());
  EXPECT_EQ(config.listen_host, "0.0.0.0");
  EXPECT_EQ(config.listen_port, 9090);
  ASSERT_TRUE(ParseListenAddress("[::1]:8081", &config).ok());
  EXPECT_EQ(config.listen_host, "::1");
  EXPECT_FALSE(ParseListenAddress("host:99999", &config).ok());
  EXPECT_FALSE(ParseListenAddress("host:", &config).ok());
}

}  // namespace
}  // namespace wisp
