#include "mqtt/mqtt_url.h"

#include <string>

#include <gtest/gtest.h>

namespace wisp {
namespace {

TEST(ParseMqttUrlTest, AcceptsBothSchemesWithDefaultPorts) {
  struct Case {
    const char* url;
    bool tls;
    const char* host;
    int port;
  };
  for (const Case& c : {
           Case{"mqtt://broker", false, "broker", 1883},
           Case{"mqtts://broker", true, "broker", 8883},
           Case{"mqtt://broker:1884", false, "broker", 1884},
           Case{"mqtts://10.0.0.7:8884", true, "10.0.0.7", 8884},
           Case{"MQTT://Broker.local:1", false, "Broker.local", 1},
           Case{"mqtt://broker:65535/", false, "broker", 65535},
           Case{"mqtt://[::1]", false, "::1", 1883},
           Case{"mqtts://[fe80::1]:9000", true, "fe80::1", 9000},
       }) {
    Result<MqttUrl> url = ParseMqttUrl(c.url);
    ASSERT_TRUE(url.ok()) << c.url << ": " << url.status().ToString();
    EXPECT_EQ(url->tls, c.tls) << c.url;
    EXPECT_EQ(url->host, c.host) << c.url;
    EXPECT_EQ(url->port, c.port) << c.url;
  }
}

TEST(ParseMqttUrlTest, RefusesBadInput) {
  for (const char* text : {"",
                           "broker:1883",
                           "tcp://broker:1883",
                           "http://broker",
                           "mqtt://",
                           "mqtt://:1883",
                           "mqtt://broker:",
                           "mqtt://broker:0",
                           "mqtt://broker:65536",
                           "mqtt://broker:-1",
                           "mqtt://broker:12a",
                           "mqtt://broker:123456",
                           "mqtt://broker/topic",
                           "mqtt://u:p@broker",
                           "mqtt://broker?x=1",
                           "mqtt://::1:1883",
                           "mqtt://[::1",
                           "mqtt://[::1]x",
                           "mqtt://[::1]:",
                           "mqtt://[]:1883",
                           "mqtt://bro ker"}) {
    Result<MqttUrl> url = ParseMqttUrl(text);
    ASSERT_FALSE(url.ok()) << "'" << text << "' parsed as " << url->ToString();
    EXPECT_EQ(url.status().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(ParseMqttUrlTest, ErrorsSayWhatIsWrong) {
  EXPECT_EQ(ParseMqttUrl("tcp://b").status().message(),
            "broker URL 'tcp://b' has scheme 'tcp' (use mqtt:// or mqtts://)");
  EXPECT_EQ(ParseMqttUrl("b:1883").status().message(),
            "broker URL 'b:1883' has no scheme (use mqtt://host:port or mqtts://host:port)");
  EXPECT_EQ(ParseMqttUrl("mqtt://b:99999").status().message(),
            "broker URL 'mqtt://b:99999' has port 99999 (want a number from 1 to 65535)");
  EXPECT_EQ(ParseMqttUrl("mqtt://u:p@b").status().message(),
            "broker URL 'mqtt://u:p@b' has user info (give the username and password as separate "
            "options)");
}

TEST(ParseMqttUrlTest, ToStringRoundTrips) {
  for (const char* text : {"mqtt://broker:1883", "mqtts://10.0.0.7:8883", "mqtt://[::1]:1884"}) {
    Result<MqttUrl> url = ParseMqttUrl(text);
    ASSERT_TRUE(url.ok()) << text;
    EXPECT_EQ(url->ToString(), text);
  }
  EXPECT_EQ(ParseMqttUrl("mqtts://b")->ToString(), "mqtts://b:8883");
}

}  // namespace
}  // namespace wisp
