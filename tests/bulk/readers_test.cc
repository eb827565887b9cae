// The supplier manifest readers on Thingpress's real sample manifests (../shared/fixtures):
// every fixture reads with its expected count, and broken or unverifiable entries are
// reported one by one while their neighbours read.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "bulk/manifest_reader.h"
#include "core/crypto.h"
#include "testing/db.h"
#include "testing/files.h"

namespace certfleet::bulk {
namespace {

namespace fs = std::filesystem;

std::string Fixture(const std::string& name) { return testing::ThingpressFixture(name); }
std::string Slurp(const std::string& path) { return testing::ReadFile(path); }

// The Microchip signers, newest last, as the fixtures name them.
std::vector<std::string> Signers(std::initializer_list<int> which) {
  const std::vector<std::string> files = {
      "MCHP_manifest_signer_1_Jan-21-2019_Jul2-21-2019.crt", "MCHP_manifest_signer_2_Aug-15-2019_Aug-15-2020.crt",
      "MCHP_manifest_signer_3_Aug-13-2020_Aug-13-2023.crt", "MCHP_manifest_signer_4_Jul-18-2023_Jul-18-2026.crt",
      "MCHP_manifest_signer_5_Mar_6-2024_noExpiration.crt"};
  std::vector<std::string> out;
  for (int i : which) out.push_back(Slurp(Fixture("mchp_verifiers/" + files[i - 1])));
  return out;
}

// Every entry of a manifest, or the error that stopped the reading (in `error`).
std::vector<ManifestEntry> ReadAll(const std::string& supplier, const std::string& path, ReaderOptions options = {},
                                   std::string* error = nullptr) {
  std::vector<ManifestEntry> out;
  auto reader = OpenManifest(supplier, path, options);
  if (!reader.ok()) {
    if (error) *error = reader.error().message;
    EXPECT_NE(error, nullptr) << reader.error().message;
    return out;
  }
  for (;;) {
    auto next = (*reader)->Next();
    if (!next.ok()) {
      if (error) *error = next.error().message;
      EXPECT_NE(error, nullptr) << next.error().message;
      return out;
    }
    if (!*next) {
      auto again = (*reader)->Next();
      EXPECT_TRUE(again.ok() && !*again) << supplier << ": after the end, the end again";
      return out;
    }
    out.push_back(std::move(**next));
  }
}

size_t Good(const std::vector<ManifestEntry>& entries) {
  size_t n = 0;
  for (const auto& e : entries) n += e.problem.empty() && !e.certificate.empty() && !e.thing_name.empty() ? 1 : 0;
  return n;
}

TEST(Readers, EveryFixtureReadsWithTheExpectedCount) {
  ReaderOptions microchip;
  microchip.verifiers_pem = Signers({1, 2, 3, 4, 5});
  auto entries = ReadAll("microchip", Fixture("ECC608C-TNGTLSU-B.json"), microchip);
  EXPECT_EQ(entries.size(), 10u);
  EXPECT_EQ(Good(entries), 10u) << (entries.empty() ? "" : entries[0].problem);
  ASSERT_FALSE(entries.empty());
  EXPECT_EQ(entries[0].chain.size(), 1u) << "x5c[1], the device's signer";
  EXPECT_EQ(entries[0].thing_name.size(), 18u) << entries[0].thing_name;  // an ATECC608 serial, 9 bytes hex

  entries = ReadAll("espressif", Fixture("manifest-espressif.csv"));
  EXPECT_EQ(Good(entries), 7u);
  ASSERT_EQ(entries.size(), 7u);
  EXPECT_EQ(entries[0].thing_name, "4BA2BB8764BD");
  auto single = ReadAll("pem", Fixture("single.pem"));
  ASSERT_EQ(Good(single), 1u);
  EXPECT_EQ(single[0].certificate, entries[0].certificate) << "single.pem is the first Espressif certificate";
  EXPECT_EQ(single[0].thing_name, "6d1d54ba-ed81-4c32-8e08-f9f8c885a6ed");

  entries = ReadAll("generated", Fixture("certificates_test.txt"));
  EXPECT_EQ(Good(entries), 100u);
  ASSERT_EQ(entries.size(), 100u);
  EXPECT_EQ(entries[0].thing_name, "Device-0");
  EXPECT_EQ(entries[99].thing_name, "Device-99");

  for (const char* bundle : {"E0E0", "E0E1", "E0E2"}) {
    ReaderOptions infineon;
    infineon.bundle_type = bundle;
    entries = ReadAll("infineon", Fixture("manifest-infineon.7z"), infineon);
    EXPECT_EQ(Good(entries), 200u) << bundle;
    ASSERT_FALSE(entries.empty());
    EXPECT_EQ(entries[0].thing_name.size(), 64u) << entries[0].thing_name;
  }
}

TEST(Readers, AMicrochipManifestCheckedAgainstTheWrongSignerImportsNothing) {
  ReaderOptions wrong;
  wrong.verifiers_pem = Signers({1, 2, 3, 4});
  auto entries = ReadAll("microchip", Fixture("ECC608C-TNGTLSU-B.json"), wrong);
  ASSERT_EQ(entries.size(), 10u) << "every entry is reported";
  EXPECT_EQ(Good(entries), 0u);
  EXPECT_NE(entries[0].problem.find("no verification certificate has kid TCnpnzYB8M3CO776ByPJ2yX3KYo"),
            std::string::npos)
      << entries[0].problem;
  std::string error;
  ReadAll("microchip", Fixture("ECC608C-TNGTLSU-B.json"), {}, &error);
  EXPECT_NE(error.find("signers' certificates"), std::string::npos) << error;
}

TEST(Readers, ACorruptedEntryIsReportedAndItsNeighboursRead) {
  const std::string dir = testing::TempDir();
  // Microchip: one signature changed in the fifth entry.
  std::string json = Slurp(Fixture("ECC608C-TNGTLSU-B.json"));
  size_t pos = 0;
  for (int i = 0; i < 5; ++i) pos = json.find("\"signature\"", pos + 1);
  const size_t value = json.find('"', json.find(':', pos)) + 1;
  json[value + 3] = json[value + 3] == 'A' ? 'B' : 'A';
  std::ofstream(dir + "/mchp.json") << json;
  ReaderOptions microchip;
  microchip.verifiers_pem = Signers({5});
  auto entries = ReadAll("microchip", dir + "/mchp.json", microchip);
  ASSERT_EQ(entries.size(), 10u);
  EXPECT_EQ(Good(entries), 9u);
  EXPECT_NE(entries[4].problem.find("does not verify"), std::string::npos) << entries[4].problem;

  // Microchip: the unsigned header names another thing than the signed payload.
  json = Slurp(Fixture("ECC608C-TNGTLSU-B.json"));
  const std::string first_id = "\"uniqueId\": \"0123f2408ea1fcf201\"";
  ASSERT_NE(json.find(first_id), std::string::npos);
  json.replace(json.find(first_id), first_id.size(), "\"uniqueId\": \"victim01\"");
  std::ofstream(dir + "/renamed.json") << json;
  entries = ReadAll("microchip", dir + "/renamed.json", microchip);
  ASSERT_EQ(entries.size(), 10u);
  EXPECT_EQ(Good(entries), 9u);
  EXPECT_NE(entries[0].problem.find("header.uniqueId victim01 differs from the signed payload's uniqueId "
                                    "0123f2408ea1fcf201"),
            std::string::npos)
      << entries[0].problem;
  EXPECT_EQ(entries[1].thing_name, "01237fa064679e6a01") << "the thing named by the signed payload";

  // Generated: line 50 is not base64 of a PEM.
  std::istringstream lines(Slurp(Fixture("certificates_test.txt")));
  std::ofstream out(dir + "/generated.txt");
  std::string line;
  for (int i = 1; std::getline(lines, line); ++i) out << (i == 50 ? "bm90IGEgY2VydA==" : line) << "\n";
  out.close();
  entries = ReadAll("generated", dir + "/generated.txt");
  ASSERT_EQ(entries.size(), 100u);
  EXPECT_EQ(Good(entries), 99u);
  EXPECT_NE(entries[49].problem.find("not the base64 of a PEM certificate"), std::string::npos);
}

TEST(Readers, ArchiveLimitsStopABomb) {
  ReaderOptions few;
  few.bundle_type = "E0E1";
  few.limits.max_entries = 50;
  std::string error;
  auto entries = ReadAll("infineon", Fixture("manifest-infineon.7z"), few, &error);
  EXPECT_NE(error.find("more than 50 files"), std::string::npos) << error;
  EXPECT_LT(entries.size(), 50u);

  ReaderOptions small;
  small.bundle_type = "E0E0";
  small.limits.max_entry_bytes = 1024;
  error.clear();
  ReadAll("infineon", Fixture("manifest-infineon.7z"), small, &error);
  EXPECT_NE(error.find("1024"), std::string::npos) << error;

  ReaderOptions none;
  error.clear();
  ReadAll("infineon", Fixture("manifest-infineon.7z"), none, &error);
  EXPECT_NE(error.find("bundle_type"), std::string::npos) << error;
  error.clear();
  ReadAll("acme", Fixture("single.pem"), {}, &error);
  EXPECT_NE(error.find("unknown supplier"), std::string::npos) << error;
}

// The fixture's E0E1 bundle repacked into `dir`/reel.7z beside what `pack` (shell, run in
// `dir` with $BUNDLE set) adds; the entries the reader finds in it, all good.
void ExpectRepackedReelReads(const std::string& dir, const std::string& pack) {
  const std::string bundle = "78211223032C7EFA_b41425b9-b42b-47fd-95c2-f981b4c61561_E0E1_Certs.7z";
  ASSERT_EQ(std::system(("mkdir -p " + dir + " && cd " + dir + " && 7z x -y " + Fixture("manifest-infineon.7z") + " " +
                         bundle + " >/dev/null && BUNDLE=" + bundle + " && " + pack)
                            .c_str()),
            0);
  ReaderOptions infineon;
  infineon.bundle_type = "E0E1";
  std::string error;
  auto entries = ReadAll("infineon", dir + "/reel.7z", infineon, &error);
  EXPECT_EQ(error, "");
  EXPECT_EQ(Good(entries), 200u);
}

// A reel with a file before the bundle in one solid 7z block, whose size is a multiple of
// 64 KiB (a datasheet, a README): libarchive 3.6.2 cannot skip such a file ("Truncated 7-Zip
// file body"), so the reader reads past it instead.
TEST(Readers, AnInfineonReelWithFilesBeforeTheBundleInASolidBlockReads) {
  ExpectRepackedReelReads(testing::TempDir() + "/solid",
                          "yes datasheet | head -c 4194304 > 0-datasheet.txt && 7z a -ms=on reel.7z 0-datasheet.txt "
                          "$BUNDLE >/dev/null && 7z l reel.7z | grep -q 'Solid = +'");
}

// A reel holding a file whose name is not ASCII (a datasheet): libarchive, in certfleet's C
// locale, answers its header with a warning (the name cannot be converted), not an error.
TEST(Readers, AnInfineonReelWithANonAsciiFileNameReads) {
  ExpectRepackedReelReads(testing::TempDir() + "/non-ascii",
                          "echo sheet > 'Datenblatt-\xc3\xbc.pdf' && LC_ALL=C.UTF-8 7z a reel.7z "
                          "'Datenblatt-\xc3\xbc.pdf' $BUNDLE >/dev/null");
}

TEST(Readers, AFileThatIsNotItsFormatIsAnErrorNotAnEndlessRead) {
  const std::string dir = testing::TempDir();
  std::ofstream(dir + "/noise.bin") << std::string(size_t{2} << 20, 'x');
  for (const char* supplier : {"generated", "pem", "espressif"}) {
    std::string error;
    ReadAll(supplier, dir + "/noise.bin", {}, &error);
    EXPECT_FALSE(error.empty()) << supplier;
  }
  ReaderOptions microchip;
  microchip.verifiers_pem = Signers({5});
  std::string error;
  ReadAll("microchip", dir + "/noise.bin", microchip, &error);
  EXPECT_NE(error.find("JSON array"), std::string::npos) << error;
}

}  // namespace
}  // namespace certfleet::bulk
