// What certfleet reads of a CMP PKIMessage before OpenSSL processes it, from messages built
// here field by field as RFC 4210 lays them out.
#include "enroll/cmp_message.h"

#include <gtest/gtest.h>
#include <openssl/obj_mac.h>

#include <optional>

#include "pki/der.h"

namespace certfleet::enroll::cmp {
namespace {

using pki::Der;

constexpr uint8_t kCtx(int n) { return static_cast<uint8_t>(0xa0 + n); }

// A PasswordBasedMac AlgorithmIdentifier of `iterations` (RFC 4211 4.4), the count's INTEGER
// contents as given.
std::string PasswordBasedMac(std::string_view iterations) {
  const std::string params = Der(pki::kDerOctetString, "salt") + Der(pki::kDerSequence, pki::DerOid(NID_sha256)) +
                             Der(pki::kDerInteger, iterations) +
                             Der(pki::kDerSequence, pki::DerOid(NID_hmacWithSHA256));
  return Der(pki::kDerSequence, pki::DerOid(NID_id_PasswordBasedMAC) + Der(pki::kDerSequence, params));
}

std::string Header(bool mac, bool implicit_confirm = false, std::string_view message_time = {},
                   const std::string& transaction_id = "transaction",
                   std::string_view iterations = std::string_view("\x01\xf4", 2)) {
  std::string h = Der(pki::kDerInteger, "\x02");
  h += Der(kCtx(4), Der(pki::kDerSequence, ""));  // sender: directoryName, empty
  h += Der(kCtx(4), Der(pki::kDerSequence, ""));  // recipient
  if (!message_time.empty()) h += Der(kCtx(0), Der(pki::kDerGeneralizedTime, message_time));
  h += Der(kCtx(1), mac ? PasswordBasedMac(iterations) : Der(pki::kDerSequence, pki::DerOid(NID_ecdsa_with_SHA256)));
  h += Der(kCtx(2), Der(pki::kDerOctetString, "kid-1"));
  h += Der(kCtx(4), Der(pki::kDerOctetString, transaction_id));
  if (implicit_confirm) {  // generalInfo: another InfoTypeAndValue, then implicitConfirm with its NULL
    const std::string other = Der(
        pki::kDerSequence, pki::DerOid(NID_id_it_confirmWaitTime) + Der(pki::kDerGeneralizedTime, "20260101000000Z"));
    const std::string implicit =
        Der(pki::kDerSequence, pki::DerOid(NID_id_it_implicitConfirm) + Der(pki::kDerNull, ""));
    h += Der(kCtx(8), Der(pki::kDerSequence, other + implicit));
  }
  return Der(pki::kDerSequence, h);
}

std::string Message(std::string_view header, int body, std::string_view content, std::string_view extra = {}) {
  std::string m(header);
  m += Der(kCtx(body), content);
  m += Der(kCtx(0), Der(pki::kDerBitString, std::string("\0sig", 4)));
  if (!extra.empty()) m += Der(kCtx(1), Der(pki::kDerSequence, extra));
  return Der(pki::kDerSequence, m);
}

TEST(CmpMessage, ReadsTheHeaderTheTemplateAndTheExtraCertificates) {
  const std::string name = Der(pki::kDerSequence, "name");
  const std::string spki = Der(pki::kDerSequence, "key");
  std::string tmpl = Der(kCtx(5), name);
  tmpl += Der(kCtx(6), "key");  // IMPLICIT SubjectPublicKeyInfo: its contents
  const std::string request =
      Der(pki::kDerSequence, Der(pki::kDerInteger, std::string(1, '\0')) + Der(pki::kDerSequence, tmpl));
  const std::string messages = Der(pki::kDerSequence, Der(pki::kDerSequence, request));
  const std::string cert = Der(pki::kDerSequence, "certificate");
  auto r = ReadRequest(Message(Header(true), kIr, messages, cert + cert));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->body, kIr);
  EXPECT_TRUE(r->mac_protected);
  EXPECT_EQ(r->sender_kid, "kid-1");
  EXPECT_EQ(r->transaction_id, "transaction");
  ASSERT_TRUE(r->cert_template);
  EXPECT_EQ(r->cert_template->subject, name);
  EXPECT_EQ(r->cert_template->public_key, spki);
  EXPECT_TRUE(r->cert_template->extensions.empty());
  EXPECT_EQ(r->extra_certs, (std::vector<std::string>{cert, cert}));
  EXPECT_FALSE(r->implicit_confirm);
  EXPECT_FALSE(r->message_time);
  auto implicit = ReadRequest(Message(Header(true, true, "20261206120000Z"), kIr, messages));
  ASSERT_TRUE(implicit.ok()) << implicit.error().message;
  EXPECT_TRUE(implicit->implicit_confirm) << "found among the generalInfo";
  EXPECT_EQ(implicit->message_time, int64_t{1796558400000});
  EXPECT_FALSE(ReadRequest(Message(Header(true, true, "not a time"), kIr, messages)).ok());

  auto signed_genm = ReadRequest(Message(Header(false), kGenm, Der(pki::kDerSequence, "")));
  ASSERT_TRUE(signed_genm.ok()) << signed_genm.error().message;
  EXPECT_EQ(signed_genm->body, kGenm);
  EXPECT_FALSE(signed_genm->mac_protected);
  EXPECT_FALSE(signed_genm->cert_template);
}

TEST(CmpMessage, ReadsWhatACertConfConfirms) {
  auto status = [](std::string_view hash, std::optional<char> pki_status) {
    std::string s = Der(pki::kDerOctetString, hash) + Der(pki::kDerInteger, std::string(1, '\0'));
    if (pki_status) s += Der(pki::kDerSequence, Der(pki::kDerInteger, std::string(1, *pki_status)));
    return Der(pki::kDerSequence, s);
  };
  auto conf = [](std::string_view statuses) {
    return ReadRequest(Message(Header(true), kCertConf, Der(pki::kDerSequence, statuses)));
  };
  auto accepted = conf(status("hash-1", std::nullopt) + status("hash-2", '\2'));
  ASSERT_TRUE(accepted.ok()) << accepted.error().message;
  EXPECT_EQ(accepted->cert_statuses, 2u);
  EXPECT_EQ(accepted->cert_hash, "hash-1") << "the first CertStatus is the one answered";
  EXPECT_TRUE(accepted->cert_accepted) << "an absent statusInfo accepts";
  auto rejected = conf(status("hash-1", '\2'));
  ASSERT_TRUE(rejected.ok()) << rejected.error().message;
  EXPECT_EQ(rejected->cert_statuses, 1u);
  EXPECT_FALSE(rejected->cert_accepted) << "status rejection (2)";
  auto none = conf("");
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_EQ(none->cert_statuses, 0u);
  EXPECT_FALSE(none->cert_accepted) << "confirms nothing: rejects every certificate (RFC 4210 5.3.18)";
  EXPECT_FALSE(conf(status("hash-1", std::nullopt) + "x").ok()) << "a second CertStatus that is not one";
}

TEST(CmpMessage, RefusesWhatIsNotOne) {
  const std::string two_requests = Der(pki::kDerSequence, Der(pki::kDerSequence, "") + Der(pki::kDerSequence, ""));
  for (const std::string& bad :
       {std::string(), std::string("\x30\x03\x02\x01\x05"),
        Message(Header(true), kGenm, Der(pki::kDerSequence, "")) + "x", Message(Header(true), kIr, two_requests)}) {
    auto r = ReadRequest(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  }
  const std::string good = Message(Header(true), kGenm, Der(pki::kDerSequence, ""));
  for (size_t cut = 0; cut < good.size(); ++cut) EXPECT_FALSE(ReadRequest(good.substr(0, cut)).ok()) << cut;
}

// An ID longer than kMaxIdBytes is not kept, and the message reads with the reason to refuse
// it (as a CMP error message, RFC 9483 3.5); its senderKID still finds its secret.
TEST(CmpMessage, AnIdTooLongIsARefusalNotAnUnreadableMessage) {
  auto r = ReadRequest(
      Message(Header(true, false, {}, std::string(kMaxIdBytes + 1, 't')), kGenm, Der(pki::kDerSequence, "")));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->transaction_id.empty());
  ASSERT_TRUE(r->refusal);
  EXPECT_NE(r->refusal->find("transactionID"), std::string::npos);
  EXPECT_EQ(r->sender_kid, "kid-1");
  auto longest =
      ReadRequest(Message(Header(true, false, {}, std::string(kMaxIdBytes, 't')), kGenm, Der(pki::kDerSequence, "")));
  ASSERT_TRUE(longest.ok());
  EXPECT_FALSE(longest->refusal);
  EXPECT_EQ(longest->transaction_id.size(), kMaxIdBytes);
}

// A PasswordBasedMac's iterations are the sender's choice and each costs a hash before the MAC
// is compared: more than kMaxPbmIterations is a refusal, read before anything is computed.
TEST(CmpMessage, AMacOfTooManyIterationsIsARefusal) {
  auto at = [](std::string_view count) {
    return ReadRequest(Message(Header(true, false, {}, "transaction", count), kGenm, Der(pki::kDerSequence, "")));
  };
  auto limit = at(std::string_view("\x27\x10", 2));  // 10,000
  ASSERT_TRUE(limit.ok()) << limit.error().message;
  EXPECT_EQ(limit->pbm_iterations, kMaxPbmIterations);
  EXPECT_FALSE(limit->refusal);
  auto over = at(std::string_view("\x27\x11", 2));
  ASSERT_TRUE(over.ok());
  ASSERT_TRUE(over->refusal);
  EXPECT_NE(over->refusal->find("iterationCount is above 10000"), std::string::npos) << *over->refusal;
  auto huge = at(std::string("\x7f") + std::string(20, '\xff'));
  ASSERT_TRUE(huge.ok());
  EXPECT_TRUE(huge->refusal);
  EXPECT_FALSE(at(std::string_view("\xff\x00", 2)).ok()) << "a negative count";
}

}  // namespace
}  // namespace certfleet::enroll::cmp
