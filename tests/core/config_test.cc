#include "core/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace certfleet {
namespace {

// Keys as modules declare them (the real ones live in each module's setup.cc).
constexpr ConfigKey kKeys[] = {
    {"db", ConfigType::kUrl, "sqlite://{data_dir}/certfleet.db", "Store."},
    {"blobs", ConfigType::kUrl, "file://{data_dir}/blobs", "Blobs."},
    {"server.listen", ConfigType::kString, "127.0.0.1:8443", "Listen."},
    {"server.tls_cert", ConfigType::kPath, "{data_dir}/tls/server.pem", "Certificate."},
    {"server.threads", ConfigType::kInt, "0", "Threads.", 0, 256},
    {"server.body_limit", ConfigType::kInt, "1048576", "Body limit.", 1024, 1 << 30},
    {"jobs.workers", ConfigType::kInt, "4", "Workers.", 1, 1024},
};

Result<Config> Load(const Config::Sources& s) { return Config::Load(s, kKeys); }

Config::Sources NoFile() {
  Config::Sources s;
  s.file = "/nonexistent-but-unused";
  s.file.clear();
  return s;
}

TEST(Config, EmbeddedDefaults) {
  auto cfg = Load(NoFile());
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->Get("data_dir"), "./var");
  EXPECT_EQ(cfg->Get("db"), "sqlite://./var/certfleet.db");
  EXPECT_EQ(cfg->Get("server.listen"), "127.0.0.1:8443");
  EXPECT_EQ(cfg->Get("blobs"), "file://./var/blobs");
  EXPECT_EQ(cfg->GetInt("server.body_limit"), 1048576);
  EXPECT_EQ(cfg->SourceOf("db"), "default");
}

TEST(Config, DataDirMovesDerivedDefaults) {
  auto s = NoFile();
  s.env["CERTFLEET_DATA_DIR"] = "/srv/cf";
  auto cfg = Load(s);
  ASSERT_TRUE(cfg.ok());
  EXPECT_EQ(cfg->Get("db"), "sqlite:///srv/cf/certfleet.db");
  EXPECT_EQ(cfg->Get("server.tls_cert"), "/srv/cf/tls/server.pem");
}

TEST(Config, FileThenEnvironmentThenFlag) {
  auto dir = std::filesystem::temp_directory_path() / "cf-config-test";
  std::filesystem::create_directories(dir);
  auto file = dir / "certfleet.toml";
  std::ofstream(file) << "db = \"postgresql://u:pw@db:5432/cf\"\n[server]\nlisten = \"0.0.0.0:9000\"\nthreads = 8\n";
  Config::Sources s;
  s.file = file.string();
  s.env["CERTFLEET_SERVER_THREADS"] = "6";
  s.env["CERTFLEET_SERVER_LISTEN"] = "127.0.0.1:9001";
  s.overrides["server.listen"] = "127.0.0.1:9002";
  auto cfg = Load(s);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message;
  EXPECT_EQ(cfg->Get("db"), "postgresql://u:pw@db:5432/cf");
  EXPECT_EQ(cfg->SourceOf("db"), "file");
  EXPECT_EQ(cfg->GetInt("server.threads"), 6);
  EXPECT_EQ(cfg->SourceOf("server.threads"), "env");
  EXPECT_EQ(cfg->Get("server.listen"), "127.0.0.1:9002");
  EXPECT_EQ(cfg->SourceOf("server.listen"), "flag");
  std::string shown = cfg->Show();
  EXPECT_NE(shown.find("db = \"postgresql://u:***@db:5432/cf\"  # file"), std::string::npos) << shown;
  EXPECT_EQ(shown.find("pw@"), std::string::npos);
}

TEST(Config, RefusesUnknownKeysAndBadValues) {
  auto dir = std::filesystem::temp_directory_path() / "cf-config-test2";
  std::filesystem::create_directories(dir);
  auto file = dir / "certfleet.toml";
  std::ofstream(file) << "[server]\nlistn = \"x\"\n";
  Config::Sources s;
  s.file = file.string();
  auto cfg = Load(s);
  ASSERT_FALSE(cfg.ok());
  EXPECT_NE(cfg.error().message.find("unknown config key 'server.listn'"), std::string::npos);

  auto bad = NoFile();
  bad.env["CERTFLEET_SERVER_THREADS"] = "many";
  auto cfg2 = Load(bad);
  ASSERT_FALSE(cfg2.ok());
  EXPECT_NE(cfg2.error().message.find("server.threads (from env)"), std::string::npos);

  auto range = NoFile();
  range.overrides["server.body_limit"] = "10";
  EXPECT_FALSE(Load(range).ok());

  std::ofstream(file) << "[server\n";
  EXPECT_NE(Load(s).error().message.find("line 1"), std::string::npos);

  Config::Sources missing;
  missing.file = (dir / "absent.toml").string();
  EXPECT_FALSE(Load(missing).ok());
}

TEST(Config, CoreKeysComeFirstAndAKeyIsDeclaredOnce) {
  auto cfg = Load(NoFile());
  ASSERT_TRUE(cfg.ok());
  const std::string shown = cfg->Show();
  EXPECT_LT(shown.find("log_level ="), shown.find("[server]")) << "keys outside a section before any [section]";
  EXPECT_LT(shown.find("db ="), shown.find("[server]")) << shown;
  const ConfigKey twice[] = {{"server.listen", ConfigType::kString, "a", "x"},
                             {"server.listen", ConfigType::kString, "b", "y"}};
  EXPECT_FALSE(Config::Load(NoFile(), twice).ok());
}

TEST(Config, NamesForEnvironmentAndFlags) {
  EXPECT_EQ(Config::EnvName("server.listen"), "CERTFLEET_SERVER_LISTEN");
  EXPECT_EQ(Config::EnvName("db"), "CERTFLEET_DB");
  EXPECT_EQ(Config::FlagName("jobs.lease_seconds"), "jobs-lease-seconds");
}

TEST(Config, MasksOnlyPasswords) {
  EXPECT_EQ(MaskUrlCredentials("smtp://user:secret@mail:587"), "smtp://user:***@mail:587");
  EXPECT_EQ(MaskUrlCredentials("sqlite://./var/x.db"), "sqlite://./var/x.db");
  EXPECT_EQ(MaskUrlCredentials("postgresql://user@h/db"), "postgresql://user@h/db");
  EXPECT_EQ(MaskUrlCredentials("s3://b/p?endpoint=http://h:9000"), "s3://b/p?endpoint=http://h:9000");
  EXPECT_EQ(MaskUrlCredentials("postgresql://h/db?user=cf&password=s3cret&sslmode=require"),
            "postgresql://h/db?user=cf&password=***&sslmode=require");
  EXPECT_EQ(MaskUrlCredentials("postgresql://h/db?Password=s3cret"), "postgresql://h/db?Password=***");
  EXPECT_EQ(MaskUrlCredentials("https://h/x?nopassword=1"), "https://h/x?nopassword=1");
  EXPECT_EQ(MaskUrlCredentials("https://u:s3cret@a/x,https://b/y?password=p"),
            "https://u:***@a/x,https://b/y?password=***")
      << "each URL of a list";
}

}  // namespace
}  // namespace certfleet
