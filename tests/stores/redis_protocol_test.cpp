// The I/O-free parts of the Redis client and the telemetry helpers: no server needed.

#include "telemetry_rows.hpp"

#include <llmq/errors.hpp>
#include <llmq/redis.hpp>
#include <llmq/redis_rate_limit_store.hpp>
#include "redis_protocol.hpp"

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>

#include <string>
#include <vector>

namespace llmq {
namespace {

using detail::RedisReplyReader;
using Type = RedisReply::Type;

RedisReply str(Type t, std::string s) {
  RedisReply r;
  r.type = t;
  r.str = std::move(s);
  return r;
}
RedisReply integer(std::int64_t v) {
  RedisReply r;
  r.type = Type::integer;
  r.integer = v;
  return r;
}
RedisReply nil() { return RedisReply{}; }
RedisReply array(std::vector<RedisReply> elements) {
  RedisReply r;
  r.type = Type::array;
  r.elements = std::move(elements);
  return r;
}

// Every reply type, binary payloads (CRLF and NUL inside bulk strings), nesting, nulls.
std::vector<RedisReply> expected_replies() {
  std::vector<RedisReply> e;
  e.push_back(str(Type::status, "OK"));
  e.push_back(str(Type::error, "ERR wrong number of arguments"));
  e.push_back(integer(-9223372036854775807LL));
  e.push_back(str(Type::string, std::string("he\r\nl\0o", 7)));
  e.push_back(nil());
  e.push_back(str(Type::string, ""));
  e.push_back(nil());
  e.push_back(array({}));
  std::vector<RedisReply> inner;
  inner.push_back(str(Type::status, "x"));
  inner.push_back(nil());
  std::vector<RedisReply> outer;
  outer.push_back(str(Type::string, "a"));
  outer.push_back(integer(7));
  outer.push_back(array(std::move(inner)));
  e.push_back(array(std::move(outer)));
  return e;
}

std::string full_wire() {
  // std::string from a literal with an embedded NUL needs the explicit length.
  static const char raw[] =
      "+OK\r\n"
      "-ERR wrong number of arguments\r\n"
      ":-9223372036854775807\r\n"
      "$7\r\nhe\r\nl\0o\r\n"
      "$-1\r\n"
      "$0\r\n\r\n"
      "*-1\r\n"
      "*0\r\n"
      "*3\r\n$1\r\na\r\n:7\r\n*2\r\n+x\r\n$-1\r\n";
  return std::string(raw, sizeof(raw) - 1);
}

void drain(RedisReplyReader& reader, std::vector<RedisReply>& out) {
  while (auto r = reader.next()) out.push_back(std::move(*r));
}

TEST(RedisReplyReader, RepliesSplitAtEveryByteBoundary) {
  const std::string bytes = full_wire();
  const std::vector<RedisReply> expected = expected_replies();
  for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
    RedisReplyReader reader;
    std::vector<RedisReply> got;
    reader.feed(std::string_view(bytes).substr(0, cut));
    drain(reader, got);
    reader.feed(std::string_view(bytes).substr(cut));
    drain(reader, got);
    ASSERT_EQ(got.size(), expected.size()) << "split at byte " << cut;
    for (std::size_t i = 0; i < got.size(); ++i)
      EXPECT_TRUE(got[i] == expected[i]) << "reply " << i << ", split at byte " << cut;
  }
}

TEST(RedisReplyReader, OneByteAtATime) {
  const std::string bytes = full_wire();
  RedisReplyReader reader;
  std::vector<RedisReply> got;
  std::vector<std::size_t> completed_at;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    reader.feed(std::string_view(bytes).substr(i, 1));
    const std::size_t before = got.size();
    drain(reader, got);
    if (got.size() != before) completed_at.push_back(i);
  }
  const std::vector<RedisReply> expected = expected_replies();
  ASSERT_EQ(got.size(), expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i] == expected[i]) << i;
  // A reply is complete exactly at its last byte, never earlier.
  EXPECT_EQ(completed_at.back(), bytes.size() - 1);
  EXPECT_EQ(completed_at.front(), 4U);  // "+OK\r\n"
}

TEST(RedisReplyReader, MalformedInputThrowsAndResetRecovers) {
  RedisReplyReader reader;
  reader.feed("?what\r\n");
  EXPECT_THROW((void)reader.next(), detail::RedisProtocolError);
  reader.reset();
  reader.feed("+PONG\r\n");
  auto r = reader.next();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->str, "PONG");
}

/// The RedisProtocolError message of the reader for `bytes` (fed whole), or "" if none.
std::string protocol_error(std::string_view bytes) {
  RedisReplyReader reader;
  try {
    reader.feed(bytes);
    while (reader.next()) {
    }
  } catch (const detail::RedisProtocolError& e) {
    return e.what();
  }
  return {};
}

TEST(RedisReplyReader, AnnouncedArrayLengthsAreBounded) {
  // hiredis allocates the announced element count up front: 8 bytes each, before any
  // element arrived (a 13-byte reply asked for 16 GiB).
  EXPECT_EQ(protocol_error("*2147483647\r\n"),
            "RESP reader: an array of 2147483647 elements (more than 1048576)");
  EXPECT_EQ(protocol_error("*2\r\n*254775808\r\n$0\r\n\r\n"),
            "RESP reader: an array of 254775808 elements (more than 1048576)");
  // Within the bound, nothing is allocated for elements that did not arrive.
  RedisReplyReader reader;
  reader.feed("*1048576\r\n:1\r\n");
  EXPECT_FALSE(reader.next().has_value());
}

TEST(RedisReplyReader, RepliesLargerThanTheBoundAreRefused) {
  // A bulk string announced at 1 GB: its bytes are buffered only up to the bound.
  RedisReplyReader reader;
  reader.feed("$1000000000\r\n");
  EXPECT_FALSE(reader.next().has_value());
  const std::string mib(1 << 20, 'x');
  std::string message;
  for (int i = 0; i < 80 && message.empty(); ++i) {
    try {
      reader.feed(mib);
      EXPECT_FALSE(reader.next().has_value());
    } catch (const detail::RedisProtocolError& e) {
      message = e.what();
      EXPECT_GE(i, 63);  // not before 64 MiB arrived
    }
  }
  EXPECT_EQ(message, "RESP reader: a reply larger than 67108864 bytes");
  // Many small elements count too.
  std::string many = "*1000000\r\n";
  for (int i = 0; i < 1000000; ++i) many += "$60\r\n" + std::string(60, 'y') + "\r\n";
  EXPECT_EQ(protocol_error(many), "RESP reader: a reply larger than 67108864 bytes");
}

TEST(RedisProtocol, FormatsCommandsBinarySafe) {
  std::vector<std::string> args = {"SET", std::string("k\r\n\0{}", 6), ""};
  const std::string wire_bytes = detail::format_redis_command(args);
  static const char expected[] = "*3\r\n$3\r\nSET\r\n$6\r\nk\r\n\0{}\r\n$0\r\n\r\n";
  EXPECT_EQ(wire_bytes, std::string(expected, sizeof(expected) - 1));
  // A command is an array of bulk strings: the reply reader reads it back intact.
  RedisReplyReader reader;
  reader.feed(wire_bytes);
  auto r = reader.next();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->elements.size(), 3U);
  EXPECT_EQ(r->elements[1].str, args[1]);
  EXPECT_EQ(r->elements[2].str, "");
}

TEST(RedisProtocol, HashSlotsMatchRedisCluster) {
  EXPECT_EQ(detail::redis_crc16("123456789"), 0x31C3);  // CRC16/XMODEM check value
  EXPECT_EQ(detail::redis_key_slot("123456789"), 0x31C3 % 16384);
  EXPECT_EQ(detail::redis_key_slot("foo"), 12182);  // CLUSTER KEYSLOT foo
  EXPECT_EQ(detail::redis_key_slot("{user1000}.following"),
            detail::redis_key_slot("{user1000}.followers"));
  EXPECT_EQ(detail::redis_key_slot("llmq:ul:{alice}"), detail::redis_key_slot("alice"));
  // Empty tag: the whole key is hashed. Only the first {...} counts.
  EXPECT_EQ(detail::redis_key_slot("foo{}{bar}"), detail::redis_crc16("foo{}{bar}") % 16384);
  EXPECT_EQ(detail::redis_key_slot("foo{{bar}}zap"), detail::redis_crc16("{bar") % 16384);
  EXPECT_EQ(detail::redis_key_slot("foo{bar"), detail::redis_crc16("foo{bar") % 16384);
}

TEST(RedisProtocol, ParsesRedirects) {
  auto moved = detail::parse_redis_redirect("MOVED 3999 127.0.0.1:6381");
  ASSERT_TRUE(moved);
  EXPECT_FALSE(moved->ask);
  EXPECT_EQ(moved->slot, 3999);
  EXPECT_EQ(moved->host, "127.0.0.1");
  EXPECT_EQ(moved->port, 6381);
  auto ask = detail::parse_redis_redirect("ASK 1 [::1]:7000");
  ASSERT_TRUE(ask);
  EXPECT_TRUE(ask->ask);
  EXPECT_EQ(ask->host, "::1");
  auto hostless = detail::parse_redis_redirect("MOVED 5 :7001");
  ASSERT_TRUE(hostless);
  EXPECT_EQ(hostless->host, "");
  EXPECT_EQ(hostless->port, 7001);
  EXPECT_FALSE(detail::parse_redis_redirect("ERR unknown command"));
  EXPECT_FALSE(detail::parse_redis_redirect("MOVED 16384 h:1"));
  EXPECT_FALSE(detail::parse_redis_redirect("MOVED 1 h"));
  EXPECT_FALSE(detail::parse_redis_redirect("MOVED x h:1"));
}

TEST(RedisProtocol, ParsesClusterSlots) {
  auto node = [](std::string host, std::int64_t port) {
    std::vector<RedisReply> e;
    e.push_back(str(Type::string, std::move(host)));
    e.push_back(integer(port));
    e.push_back(str(Type::string, "id"));
    return array(std::move(e));
  };
  std::vector<RedisReply> r1;
  r1.push_back(integer(0));
  r1.push_back(integer(5460));
  r1.push_back(node("127.0.0.1", 7101));
  std::vector<RedisReply> r2;
  r2.push_back(integer(5461));
  r2.push_back(integer(10922));
  r2.push_back(node("127.0.0.1", 7102));
  r2.push_back(node("127.0.0.1", 7202));  // a replica: ignored
  std::vector<RedisReply> bad;
  bad.push_back(integer(1));
  std::vector<RedisReply> all;
  all.push_back(array(std::move(r1)));
  all.push_back(array(std::move(r2)));
  all.push_back(array(std::move(bad)));
  auto ranges = detail::parse_cluster_slots(array(std::move(all)));
  ASSERT_EQ(ranges.size(), 2U);
  EXPECT_EQ(ranges[0].first, 0);
  EXPECT_EQ(ranges[0].last, 5460);
  EXPECT_EQ(ranges[0].port, 7101);
  EXPECT_EQ(ranges[1].first, 5461);
  EXPECT_EQ(ranges[1].port, 7102);
}

TEST(RedisProtocol, Sha1MatchesKnownVectors) {
  EXPECT_EQ(detail::sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(detail::sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(detail::sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  EXPECT_EQ(detail::sha1_hex(std::string(1000, 'a')), "291e9a6c66994949b57ba5e650361e98fc36b1ba");
}

TEST(RedisUrl, Parses) {
  RedisConfig base;
  base.command_timeout = std::chrono::milliseconds(123);
  RedisConfig c = parse_redis_url("redis://alice:p%40ss:w@example.org:6400/3", base);
  EXPECT_EQ(c.host, "example.org");
  EXPECT_EQ(c.port, 6400);
  EXPECT_EQ(c.username, "alice");
  EXPECT_EQ(c.password, "p@ss:w");
  EXPECT_EQ(c.database, 3);
  EXPECT_EQ(c.command_timeout, std::chrono::milliseconds(123));  // kept from base

  c = parse_redis_url("redis://127.0.0.1");
  EXPECT_EQ(c.host, "127.0.0.1");
  EXPECT_EQ(c.port, 6379);
  EXPECT_EQ(c.database, 0);
  EXPECT_TRUE(c.password.empty());

  c = parse_redis_url("redis://:secret@[::1]:7000/");
  EXPECT_EQ(c.host, "::1");
  EXPECT_EQ(c.port, 7000);
  EXPECT_EQ(c.username, "");
  EXPECT_EQ(c.password, "secret");

  c = parse_redis_url("redis://secret@host");
  EXPECT_EQ(c.password, "secret");
  EXPECT_EQ(c.username, "");
}

TEST(RedisUrl, ParsesRedissAndItsTlsParameters) {
  RedisConfig base;
  base.command_timeout = std::chrono::milliseconds(123);
  base.tls.ca_file = "/base/ca.pem";
  base.tls.cert_file = "/base/client.pem";
  RedisConfig c = parse_redis_url("rediss://alice:pw@redis.internal:6380/2", base);
  EXPECT_TRUE(c.use_tls);
  EXPECT_EQ(c.host, "redis.internal");
  EXPECT_EQ(c.port, 6380);
  EXPECT_EQ(c.username, "alice");
  EXPECT_EQ(c.password, "pw");
  EXPECT_EQ(c.database, 2);
  EXPECT_EQ(c.command_timeout, std::chrono::milliseconds(123));
  EXPECT_EQ(c.tls.ca_file, "/base/ca.pem");  // kept from base
  EXPECT_EQ(c.tls.cert_file, "/base/client.pem");
  EXPECT_TRUE(c.tls.verify);
  EXPECT_TRUE(c.tls.server_name.empty());

  // Parameters override base; values are percent-decoded; a path may contain '/'.
  c = parse_redis_url(
      "rediss://:p%3Fw@[::1]:7000/1?ca_file=/etc/ssl/my%20ca.pem&cert_file=/c.pem&key_file=/k.pem"
      "&server_name=redis.internal&verify=false",
      base);
  EXPECT_TRUE(c.use_tls);
  EXPECT_EQ(c.host, "::1");
  EXPECT_EQ(c.port, 7000);
  EXPECT_EQ(c.password, "p?w");
  EXPECT_EQ(c.database, 1);
  EXPECT_EQ(c.tls.ca_file, "/etc/ssl/my ca.pem");
  EXPECT_EQ(c.tls.cert_file, "/c.pem");
  EXPECT_EQ(c.tls.key_file, "/k.pem");
  EXPECT_EQ(c.tls.server_name, "redis.internal");
  EXPECT_FALSE(c.tls.verify);

  // No path, then parameters; a raw '?' in the password stays in the password.
  c = parse_redis_url("rediss://:a?b@host?verify=1");
  EXPECT_EQ(c.host, "host");
  EXPECT_EQ(c.port, 6379);
  EXPECT_EQ(c.password, "a?b");
  EXPECT_TRUE(c.tls.verify);
  c = parse_redis_url("rediss://host/?verify=no");
  EXPECT_EQ(c.database, 0);
  EXPECT_FALSE(c.tls.verify);

  // redis:// turns TLS off even when base had it on.
  base.use_tls = true;
  c = parse_redis_url("redis://host", base);
  EXPECT_FALSE(c.use_tls);
}

TEST(RedisUrl, RejectsBadUrlsAndTlsParameters) {
  EXPECT_THROW((void)parse_redis_url("rediss://host?verify=maybe"), ConfigError);
  EXPECT_THROW((void)parse_redis_url("rediss://host?ca_file"), ConfigError);
  EXPECT_THROW((void)parse_redis_url("rediss://host?ca_file=a&ca_file=b"), ConfigError);
  try {
    (void)parse_redis_url("rediss://host?cafile=/x");
    FAIL() << "unknown parameter accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cafile"), std::string::npos) << e.what();
  }
  try {
    (void)parse_redis_url("redis://host?ca_file=/x");
    FAIL() << "a TLS parameter on redis:// accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("rediss://"), std::string::npos) << e.what();
  }
  try {
    (void)parse_redis_url("http://:hunter2@host");
    FAIL() << "http:// accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)parse_redis_url("http://host"), ConfigError);
  EXPECT_THROW((void)parse_redis_url("redis://"), ConfigError);
  EXPECT_THROW((void)parse_redis_url("redis://host:port"), ConfigError);
  EXPECT_THROW((void)parse_redis_url("redis://host:0"), ConfigError);
  EXPECT_THROW((void)parse_redis_url("redis://host/db1"), ConfigError);
  EXPECT_THROW((void)parse_redis_url("redis://a%4@host"), ConfigError);
}

TEST(RedisUrl, ErrorsNeverQuoteAPasswordWithUnencodedDelimiters) {
  // A '/' in a password ends the authority early: the password was read as the port (or
  // a '?' in it as the start of the parameters) and quoted in the error.
  for (const char* url : {"redis://user:secret/x@host", "redis://:secret/0@host:6379/0",
                          "rediss://user:secret?a=b/x@host", "rediss://host?ca_file=/tmp/a@b"}) {
    try {
      (void)parse_redis_url(url);
      ADD_FAILURE() << "accepted " << url;
    } catch (const ConfigError& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.find("secret"), std::string::npos) << message;
      EXPECT_NE(message.find("percent-encode"), std::string::npos) << message;
    }
  }
  // Encoded, the same password is fine.
  const RedisConfig c = parse_redis_url("redis://user:secret%2Fx@host");
  EXPECT_EQ(c.password, "secret/x");
  EXPECT_EQ(c.host, "host");
}

TEST(RedisErrc, HasItsOwnCategory) {
  boost::system::error_code ec = RedisErrc::command_timeout;
  EXPECT_EQ(ec.category().name(), std::string("llmq.redis"));
  EXPECT_EQ(ec.message(), "redis command timed out");
}

TEST(RedisTlsFiles, UnreadableFilesAreConfigErrorsOfTheConstructors) {
  boost::asio::io_context io;
  RedisConfig c;
  c.use_tls = true;
  c.tls.ca_file = "/nonexistent/llmq-ca.pem";
  try {
    RedisConnection conn(io.get_executor(), c);
    FAIL() << "a missing ca_file accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/llmq-ca.pem"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(RedisClient(io.get_executor(), c), ConfigError);
  c.tls.ca_file.clear();
  c.tls.cert_file = "/nonexistent/llmq-client.pem";
  EXPECT_THROW(RedisClient(io.get_executor(), c), ConfigError);
  c.tls.cert_file.clear();
  c.tls.key_file = "/nonexistent/llmq-client.key";  // a key without a certificate
  EXPECT_THROW(RedisClient(io.get_executor(), c), ConfigError);

  RedisRateLimitStoreOptions o;
  o.url = "rediss://127.0.0.1:6379?ca_file=/nonexistent/llmq-ca.pem";
  EXPECT_THROW(RedisUserRateLimitStore(io.get_executor(), o), ConfigError);
  o.url = "rediss://127.0.0.1:6379";
  o.tls.ca_file = "/nonexistent/llmq-ca.pem";
  EXPECT_THROW(RedisUserRateLimitStore(io.get_executor(), o), ConfigError);
  // Not used by redis://.
  o.url = "redis://127.0.0.1:6379";
  EXPECT_NO_THROW(RedisUserRateLimitStore(io.get_executor(), o));
}

TEST(RedisRateLimitStoreOptions, RejectsBracesInPrefix) {
  boost::asio::io_context io;
  RedisRateLimitStoreOptions o;
  o.key_prefix = "bad{prefix";
  EXPECT_THROW(RedisUserRateLimitStore(io.get_executor(), o), ConfigError);
}

TEST(TelemetryRows, ValidUtf8ReplacesBadBytes) {
  using detail::stores::valid_utf8;
  EXPECT_EQ(valid_utf8("plain", true), "plain");
  EXPECT_EQ(valid_utf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80", true),
            "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(valid_utf8("a\xFFz", true), "a\xEF\xBF\xBDz");
  EXPECT_EQ(valid_utf8("\xC3", true), "\xEF\xBF\xBD");                       // truncated
  EXPECT_EQ(valid_utf8("\xC0\xAF", true), "\xEF\xBF\xBD\xEF\xBF\xBD");       // overlong
  EXPECT_EQ(valid_utf8("\xED\xA0\x80", true).substr(0, 3), "\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(valid_utf8(std::string("a\0b", 3), true),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(valid_utf8(std::string("a\0b", 3), false), std::string("a\0b", 3));
}

TEST(TelemetryRows, QuotesTableNames) {
  using detail::stores::quoted_table_name;
  EXPECT_EQ(quoted_table_name("llmq_telemetry", "t"), "\"llmq_telemetry\"");
  EXPECT_EQ(quoted_table_name("metrics.Tel_1", "t"), "\"metrics\".\"Tel_1\"");
  EXPECT_THROW((void)quoted_table_name("x; drop table y", "t"), ConfigError);
  EXPECT_THROW((void)quoted_table_name("1abc", "t"), ConfigError);
  EXPECT_THROW((void)quoted_table_name("a.b.c", "t"), ConfigError);
  EXPECT_THROW((void)quoted_table_name("", "t"), ConfigError);
  EXPECT_THROW((void)quoted_table_name("a.", "t"), ConfigError);
  EXPECT_THROW((void)quoted_table_name("\"a\"", "t"), ConfigError);
}

}  // namespace
}  // namespace llmq
