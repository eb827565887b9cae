#include "ca/ca_service.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <latch>
#include <set>
#include <thread>

#include "ca/fqdn.h"
#include "pki/certificate.h"
#include "pki/file/file_key_backend.h"
#include "pki/key.h"
#include "pki/profile.h"
#include "store/certificates_repo.h"
#include "testing/db.h"

namespace certfleet::ca {
namespace {

using pki::CertType;

TEST(Fqdn, RegistrableDomainsAndSeedParents) {
  EXPECT_EQ(RegistrableDomain("bbq.example.com").value_or(""), "example.com");
  EXPECT_EQ(RegistrableDomain("a.b.example.co.uk").value_or(""), "example.co.uk");
  EXPECT_FALSE(RegistrableDomain("co.uk").has_value());
  EXPECT_EQ(DefaultServerParent("api.iot.example.com", "example.com"), "iot.example.com");
  EXPECT_EQ(DefaultServerParent("www.example.com", "example.com"), "example.com");
}

class CaServiceTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    key_dir_ = testing::TempDir() + "/keys";
    keys_ = std::make_unique<pki::file::FileKeyBackend>(key_dir_, std::string(64, 'k'));
    issuer_ = std::make_unique<issuance::Issuer>(*store_, *keys_, clock_, issuance::Issuer::Options{"https://ca.test"});
    ca_ = std::make_unique<CaService>(*issuer_, clock_, CaService::Options{});
  }
  issuance::Issued Ok(CreateRequest r) {
    auto c = ca_->Create(r, "test");
    EXPECT_TRUE(c.ok()) << c.error().message;
    return c.ok() ? *c : issuance::Issued{};
  }
  Error Refused(CreateRequest r) {
    auto c = ca_->Create(r, "test");
    EXPECT_FALSE(c.ok()) << "issued " << r.fqdn;
    return c.ok() ? Error{} : c.error();
  }
  static CreateRequest Req(CertType type, std::string fqdn, std::optional<std::string> parent = std::nullopt) {
    CreateRequest r;
    r.type = type;
    r.fqdn = std::move(fqdn);
    r.parent_fqdn = std::move(parent);
    return r;
  }
  int64_t Count(const std::string& table) { return store_->Query("SELECT COUNT(*) FROM " + table)->at(0).Int(0); }
  size_t KeyFiles() {
    if (!std::filesystem::exists(key_dir_)) return 0;
    return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(key_dir_), {}));
  }
  void Hierarchy() {
    Ok(Req(CertType::kRoot, "example.com"));
    Ok(Req(CertType::kIntermediate, "iot.example.com"));
  }

  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  std::string key_dir_;
  std::unique_ptr<pki::file::FileKeyBackend> keys_;
  std::unique_ptr<issuance::Issuer> issuer_;
  std::unique_ptr<CaService> ca_;
};

TEST_P(CaServiceTest, ParentsDefaultAsInTheSeed) {
  auto root = Ok(Req(CertType::kRoot, "Example.com"));
  EXPECT_EQ(root.record.fqdn, "example.com");
  EXPECT_EQ(root.record.parent_fqdn, "Root");
  EXPECT_FALSE(root.private_key_pem.has_value()) << "CA keys never leave the key backend";
  auto inter = Ok(Req(CertType::kIntermediate, "iot.example.com"));
  EXPECT_EQ(inter.record.parent_fqdn, "example.com");
  EXPECT_EQ(inter.record.issuer_serial.value_or(""), root.record.serial);
  auto deep = Ok(Req(CertType::kServer, "api.iot.example.com"));
  EXPECT_EQ(deep.record.parent_fqdn, "iot.example.com");
  EXPECT_TRUE(deep.private_key_pem.has_value());
  EXPECT_NE(deep.chain_pem.find(inter.record.certificate_pem), std::string::npos);
  EXPECT_NE(deep.chain_pem.find(root.record.certificate_pem), std::string::npos);
  auto shallow = Ok(Req(CertType::kServer, "www.example.com"));
  EXPECT_EQ(shallow.record.parent_fqdn, "example.com");
  CreateRequest dev = Req(CertType::kDevice, "", "iot.example.com");
  auto device = Ok(dev);
  EXPECT_TRUE(device.record.fqdn.ends_with(".iot.example.com"));
  EXPECT_EQ(device.record.fqdn.size(), 36 + 16u);
  EXPECT_EQ(Count("events"), 5);
}

TEST_P(CaServiceTest, RefusalsLeaveNothingBehind) {
  Hierarchy();
  Ok(Req(CertType::kServer, "leaf.iot.example.com"));
  const int64_t certs = Count("certificates"), audit = Count("audit_log"), events = Count("events");
  const size_t keys = KeyFiles();

  EXPECT_EQ(Refused(Req(CertType::kRoot, "iot.other.com")).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refused(Req(CertType::kRoot, "co.uk")).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refused(Req(CertType::kRoot, "example.com")).code, ErrorCode::kAlreadyExists);
  EXPECT_EQ(Refused(Req(CertType::kIntermediate, "example.com")).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refused(Req(CertType::kIntermediate, "iot.example.com")).code, ErrorCode::kAlreadyExists);
  EXPECT_EQ(Refused(Req(CertType::kIntermediate, "x.nowhere.com")).code, ErrorCode::kNotFound);
  EXPECT_EQ(Refused(Req(CertType::kServer, "leaf.iot.example.com")).code, ErrorCode::kAlreadyExists);
  EXPECT_EQ(Refused(Req(CertType::kServer, "x.leaf.iot.example.com")).code, ErrorCode::kInvalidArgument)
      << "a leaf as parent";
  EXPECT_EQ(Refused(Req(CertType::kServer, "bad_name.example.com")).code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refused(Req(CertType::kIntermediate, "sub.iot.example.com", "iot.example.com")).code,
            ErrorCode::kInvalidArgument);
  for (int64_t days : {0, -1, 100000}) {
    CreateRequest r = Req(CertType::kServer, "v.iot.example.com");
    r.validity_days = days;
    EXPECT_EQ(Refused(r).code, ErrorCode::kInvalidArgument) << days;
  }
  CreateRequest kt = Req(CertType::kServer, "k.iot.example.com");
  kt.key_type = "dsa-512";
  EXPECT_EQ(Refused(kt).code, ErrorCode::kInvalidArgument);
  CreateRequest garbage = Req(CertType::kServer, "g.iot.example.com");
  garbage.csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n-----END CERTIFICATE REQUEST-----\n";
  EXPECT_EQ(Refused(garbage).code, ErrorCode::kInvalidArgument);
  CreateRequest no_parent = Req(CertType::kDevice, "");
  EXPECT_EQ(Refused(no_parent).code, ErrorCode::kInvalidArgument);

  EXPECT_EQ(Count("certificates"), certs);
  EXPECT_EQ(Count("audit_log"), audit);
  EXPECT_EQ(Count("events"), events);
  EXPECT_EQ(KeyFiles(), keys);
}

TEST_P(CaServiceTest, KeysFromCsrsAndClampedValidity) {
  Hierarchy();
  auto key = pki::GenerateKey(pki::KeyType::kEcP384);
  pki::X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), key->get());
  X509_REQ_sign(req.get(), key->get(), EVP_sha384());
  pki::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  CreateRequest r = Req(CertType::kDevice, "", "iot.example.com");
  r.csr_pem = pki::BioToString(bio.get());
  r.validity_days = 36000;
  auto c = Ok(r);
  EXPECT_FALSE(c.private_key_pem.has_value()) << "no key is made when a CSR is given";
  EXPECT_TRUE(c.validity_clamped);
  auto cert = pki::CertificateFromPem(c.record.certificate_pem);
  pki::PkeyPtr pub(X509_get_pubkey(cert->get()));
  EXPECT_EQ(EVP_PKEY_eq(pub.get(), key->get()), 1);
}

TEST_P(CaServiceTest, ListsByParentInStablePages) {
  Hierarchy();
  std::set<std::string> issued;
  for (int i = 0; i < 5; ++i) issued.insert(Ok(Req(CertType::kDevice, "", "iot.example.com")).record.serial);
  std::set<std::string> seen;
  store::CertificateFilter f;
  f.parent_fqdn = "iot.example.com";
  f.limit = 2;
  for (int page = 0; page < 5; ++page) {
    auto rows = issuer_->List(f);
    ASSERT_TRUE(rows.ok());
    for (const auto& r : *rows) EXPECT_TRUE(seen.insert(r.serial).second) << "a serial came twice";
    if (rows->size() < 2) break;
    f.after = store::CertificateCursor{rows->back().created_at, rows->back().serial};
  }
  EXPECT_EQ(seen, issued);
  auto by_fqdn = issuer_->Get("iot.example.com");
  ASSERT_TRUE(by_fqdn.ok());
  EXPECT_EQ(by_fqdn->type, CertType::kIntermediate);
  EXPECT_EQ(issuer_->Get("nope.example.com").error().code, ErrorCode::kNotFound);
}

// A CA key that cannot be used at the time (an HSM's token down): a revocation under it is
// recorded anyway, and its CRL is re-signed by the job the revocation queued once the key is back.
class UnreachableKeys : public pki::KeyBackend {
 public:
  explicit UnreachableKeys(pki::KeyBackend& keys) : keys_(keys) {}
  Result<std::string> Generate(pki::KeyType type, std::string_view backend) override {
    return keys_.Generate(type, backend);
  }
  Result<std::string> Put(EVP_PKEY* key, std::string_view backend) override { return keys_.Put(key, backend); }
  Result<std::shared_ptr<EVP_PKEY>> Get(std::string_view ref) override {
    if (down) return MakeError(ErrorCode::kUnavailable, "the token is not present");
    return keys_.Get(ref);
  }
  Result<void> Remove(std::string_view ref) override { return keys_.Remove(ref); }
  std::atomic<bool> down{false};

 private:
  pki::KeyBackend& keys_;
};

TEST_P(CaServiceTest, ARevocationStandsWhenItsCrlCannotBeSignedAndAJobSignsItLater) {
  UnreachableKeys keys(*keys_);
  issuance::Issuer issuer(*store_, keys, clock_, issuance::Issuer::Options{"https://ca.test"});
  Ok(Req(CertType::kRoot, "example.com"));
  Ok(Req(CertType::kIntermediate, "iot.example.com"));
  const std::string leaf = Ok(Req(CertType::kDevice, "", "iot.example.com")).record.serial;
  auto crl_number = [&] {
    return store_->Query("SELECT crl_number FROM cas WHERE fqdn = 'iot.example.com'")->at(0).Int(0);
  };
  const int64_t number = crl_number();
  keys.down = true;
  auto revoked = issuer.Revoke(leaf, "keyCompromise", false, "test");
  ASSERT_TRUE(revoked.ok()) << revoked.error().message;
  EXPECT_EQ(issuer.Get(leaf)->status, store::CertStatus::kRevoked);
  EXPECT_EQ(crl_number(), number) << "not signed while the key is down";
  auto job = store_->Query("SELECT payload FROM jobs WHERE kind = 'ca.crl_resign'");
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(job->size(), 1u);
  EXPECT_NE(job->at(0).Text(0).find(fmt::format("\"crl_number\":{}", number)), std::string::npos) << job->at(0).Text(0);

  keys.down = false;
  ASSERT_TRUE(issuer.ResignCrlAfter("iot.example.com", number).ok());  // as the job does
  auto crl = issuer.Crl("iot.example.com");
  ASSERT_TRUE(crl.ok());
  const auto* p = reinterpret_cast<const unsigned char*>(crl->der.data());
  std::unique_ptr<X509_CRL, decltype(&X509_CRL_free)> parsed(
      d2i_X509_CRL(nullptr, &p, static_cast<long>(crl->der.size())), X509_CRL_free);
  ASSERT_NE(parsed, nullptr);
  EXPECT_EQ(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(parsed.get())), 1);
  EXPECT_EQ(crl_number(), number + 1);
  ASSERT_TRUE(issuer.ResignCrlAfter("iot.example.com", number).ok());
  EXPECT_EQ(crl_number(), number + 1) << "signed once";
}

TEST_P(CaServiceTest, ACaTakesNoActiveLeafsNameAndNothingIsIssuedBelowARevokedCa) {
  Hierarchy();
  Ok(Req(CertType::kServer, "s1.iot.example.com", "iot.example.com"));
  Error taken = Refused(Req(CertType::kIntermediate, "s1.iot.example.com", "example.com"));
  EXPECT_EQ(taken.code, ErrorCode::kAlreadyExists);
  EXPECT_NE(taken.message.find("an active certificate for s1.iot.example.com exists"), std::string::npos)
      << taken.message;
  // The root revoked alone: the intermediate stays active, and issues nothing more.
  ASSERT_TRUE(issuer_->Revoke(issuer_->Get("example.com")->serial, "cACompromise", false, "test").ok());
  EXPECT_EQ(issuer_->Get("iot.example.com")->status, store::CertStatus::kActive);
  Error broken = Refused(Req(CertType::kServer, "s2.iot.example.com", "iot.example.com"));
  EXPECT_EQ(broken.code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(broken.message.find("a CA above iot.example.com is revoked"), std::string::npos) << broken.message;
}

// A W1 device certificate is named <uuid>.<parent>, its common name: a parent of more than 27
// characters is refused naming the limit, not with the name certfleet made.
TEST_P(CaServiceTest, ADeviceUnderACaWhoseNameIsTooLongIsRefusedNamingTheLimit) {
  Ok(Req(CertType::kRoot, "example.com"));
  const std::string longest = "iot-devices-prod.example.com";  // 28 characters
  Ok(Req(CertType::kIntermediate, longest));
  Error refused = Refused(Req(CertType::kDevice, "", longest));
  EXPECT_EQ(refused.code, ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.message.find("at most 27 characters"), std::string::npos) << refused.message;
  Ok(Req(CertType::kIntermediate, "iot-devices-pro.example.com"));
  Ok(Req(CertType::kDevice, "", "iot-devices-pro.example.com"));
}

TEST_P(CaServiceTest, NothingIsIssuedUnderAnExpiredCa) {
  CreateRequest root = Req(CertType::kRoot, "example.com");
  root.validity_days = 2;
  Ok(root);
  clock_.Advance(std::chrono::hours(47));
  Ok(Req(CertType::kIntermediate, "iot.example.com"));  // cut to the root's last hour
  clock_.Advance(std::chrono::hours(2));
  Error expired = Refused(Req(CertType::kServer, "s.iot.example.com", "iot.example.com"));
  EXPECT_EQ(expired.code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(expired.message.find("the CA iot.example.com expired at"), std::string::npos) << expired.message;
}

TEST_P(CaServiceTest, CascadingRevocationAndCrls) {
  Hierarchy();
  auto leaf = Ok(Req(CertType::kServer, "api.iot.example.com"));
  auto other = Ok(Req(CertType::kDevice, "", "iot.example.com"));
  auto inter = issuer_->Get("iot.example.com");
  auto crl1 = issuer_->Crl("example.com");
  ASSERT_TRUE(crl1.ok());

  auto single = issuer_->Revoke(leaf.record.serial, "keyCompromise", false, "test");
  ASSERT_TRUE(single.ok()) << single.error().message;
  EXPECT_EQ(single->newly_revoked, 1);
  EXPECT_EQ(single->record.status, store::CertStatus::kRevoked);
  auto again = issuer_->Revoke(leaf.record.serial, "keyCompromise", false, "test");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->newly_revoked, 0) << "revocation is idempotent";
  EXPECT_EQ(issuer_->Revoke(leaf.record.serial, "whatever", false, "test").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(issuer_->Revoke("00", "unspecified", false, "test").error().code, ErrorCode::kNotFound);

  auto cascade = issuer_->Revoke(inter->serial, "cACompromise", true, "test");
  ASSERT_TRUE(cascade.ok()) << cascade.error().message;
  EXPECT_EQ(cascade->newly_revoked, 2);  // the intermediate and the device
  EXPECT_EQ(issuer_->Get(other.record.serial)->status, store::CertStatus::kRevoked);
  auto crl2 = issuer_->Crl("example.com");
  ASSERT_TRUE(crl2.ok());
  EXPECT_NE(crl1->der, crl2->der);
  EXPECT_EQ(Refused(Req(CertType::kServer, "new.iot.example.com")).code, ErrorCode::kFailedPrecondition)
      << "a revoked CA issues nothing";

  auto number = [&](const std::string& fqdn) {
    return store_->Query("SELECT crl_number FROM cas WHERE fqdn = ?", {fqdn})->at(0).Int(0);
  };
  const int64_t before = number("iot.example.com");
  clock_.Advance(std::chrono::hours(13));  // past half the 24 h validity
  auto refreshed = issuer_->RefreshDueCrls();
  ASSERT_TRUE(refreshed.ok());
  EXPECT_EQ(*refreshed, 2);
  EXPECT_EQ(number("iot.example.com"), before + 1);
}

// A cascade goes through a CA revoked before without its certificates: what is still active
// below it is revoked too, and on that CA's CRL.
TEST_P(CaServiceTest, ACascadeReachesBelowACaRevokedBeforeAlone) {
  Hierarchy();
  auto leaf = Ok(Req(CertType::kDevice, "", "iot.example.com"));
  auto inter = issuer_->Get("iot.example.com");
  auto root = issuer_->Get("example.com");
  ASSERT_TRUE(issuer_->Revoke(inter->serial, "keyCompromise", false, "test").ok());
  ASSERT_EQ(issuer_->Get(leaf.record.serial)->status, store::CertStatus::kActive);
  auto cascade = issuer_->Revoke(root->serial, "cACompromise", true, "test");
  ASSERT_TRUE(cascade.ok()) << cascade.error().message;
  EXPECT_EQ(cascade->newly_revoked, 2) << "the root and the device below the revoked intermediate";
  EXPECT_EQ(issuer_->Get(leaf.record.serial)->status, store::CertStatus::kRevoked);
  auto crl_der = issuer_->Crl("iot.example.com");
  ASSERT_TRUE(crl_der.ok());
  const auto* p = reinterpret_cast<const unsigned char*>(crl_der->der.data());
  std::unique_ptr<X509_CRL, decltype(&X509_CRL_free)> crl(
      d2i_X509_CRL(nullptr, &p, static_cast<long>(crl_der->der.size())), X509_CRL_free);
  ASSERT_NE(crl, nullptr);
  EXPECT_EQ(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl.get())), 1) << "the device, on its CA's CRL";
}

TEST_P(CaServiceTest, RevocationsAtOnceAreEachOnTheCrlWithNumbersInTurn) {
  Hierarchy();
  constexpr int kLeaves = 8;
  std::vector<std::string> serials;
  for (int i = 0; i < kLeaves; ++i) serials.push_back(Ok(Req(CertType::kDevice, "", "iot.example.com")).record.serial);
  auto number = [&] {
    return store_->Query("SELECT crl_number FROM cas WHERE fqdn = 'iot.example.com'")->at(0).Int(0);
  };
  const int64_t before = number();
  // As nodes revoking under one CA at once would: each re-signs its CRL after its commit.
  std::vector<std::thread> threads;
  for (const auto& serial : serials) {
    threads.emplace_back([&, serial] { EXPECT_TRUE(issuer_->Revoke(serial, "keyCompromise", false, "test").ok()); });
  }
  for (auto& t : threads) t.join();
  // A CRL signed after several of the revocations committed lists them all: the others need
  // none of their own.
  EXPECT_GT(number(), before);
  EXPECT_LE(number(), before + kLeaves) << "at most one CRL number each";
  auto crl_der = issuer_->Crl("iot.example.com");
  ASSERT_TRUE(crl_der.ok());
  const auto* p = reinterpret_cast<const unsigned char*>(crl_der->der.data());
  std::unique_ptr<X509_CRL, decltype(&X509_CRL_free)> crl(
      d2i_X509_CRL(nullptr, &p, static_cast<long>(crl_der->der.size())), X509_CRL_free);
  ASSERT_TRUE(crl);
  std::set<std::string> listed;
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl.get());
  for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
    listed.insert(pki::SerialHex(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i))));
  }
  EXPECT_EQ(listed, std::set<std::string>(serials.begin(), serials.end())) << "no revocation dropped";
}

// An OCSP request (DER) about `serial_hex` under the CA certificate `ca_pem`, without a nonce.
// `name_of` names the issuer in the CertID: the CA's own subject unless a test lies.
struct OcspAsk {
  std::unique_ptr<OCSP_CERTID, decltype(&OCSP_CERTID_free)> id{nullptr, OCSP_CERTID_free};
  std::string der;
};
OcspAsk AskOcsp(const std::string& ca_pem, const std::string& serial_hex, const X509_NAME* name_of = nullptr,
                const EVP_MD* digest = EVP_sha1()) {
  auto ca = pki::CertificateFromPem(ca_pem);
  EXPECT_TRUE(ca.ok());
  BIGNUM* bn = nullptr;
  BN_hex2bn(&bn, serial_hex.c_str());
  std::unique_ptr<ASN1_INTEGER, decltype(&ASN1_INTEGER_free)> serial(BN_to_ASN1_INTEGER(bn, nullptr),
                                                                     ASN1_INTEGER_free);
  BN_free(bn);
  const X509_NAME* name = name_of != nullptr ? name_of : X509_get_subject_name(ca->get());
  OcspAsk out;
  out.id.reset(OCSP_cert_id_new(digest, name, X509_get0_pubkey_bitstr(ca->get()), serial.get()));
  std::unique_ptr<OCSP_REQUEST, decltype(&OCSP_REQUEST_free)> req(OCSP_REQUEST_new(), OCSP_REQUEST_free);
  OCSP_request_add0_id(req.get(), OCSP_CERTID_dup(out.id.get()));
  unsigned char* der = nullptr;
  const int len = i2d_OCSP_REQUEST(req.get(), &der);
  out.der.assign(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// The status the response gives for `id` as OpenSSL's client finds it: V_OCSP_CERTSTATUS_*,
// or -1 when the response names no such CertID ("No Status found").
int OcspStatusFor(const std::string& response_der, OCSP_CERTID* id) {
  const auto* p = reinterpret_cast<const unsigned char*>(response_der.data());
  std::unique_ptr<OCSP_RESPONSE, decltype(&OCSP_RESPONSE_free)> resp(
      d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(response_der.size())), OCSP_RESPONSE_free);
  if (!resp || OCSP_response_status(resp.get()) != OCSP_RESPONSE_STATUS_SUCCESSFUL) return -2;
  std::unique_ptr<OCSP_BASICRESP, decltype(&OCSP_BASICRESP_free)> basic(OCSP_response_get1_basic(resp.get()),
                                                                        OCSP_BASICRESP_free);
  int status = -1;
  int reason = 0;
  if (OCSP_resp_find_status(basic.get(), id, &status, &reason, nullptr, nullptr, nullptr) != 1) return -1;
  return status;
}

TEST_P(CaServiceTest, OcspAnswersTheCertIdAskedAndCannotBePoisoned) {
  Hierarchy();
  auto leaf = Ok(Req(CertType::kDevice, "", "iot.example.com"));
  const std::string inter_pem = issuer_->Get("iot.example.com")->certificate_pem;
  ASSERT_TRUE(issuer_->Revoke(leaf.record.serial, "keyCompromise", false, "test").ok());

  // Someone asks first with a CertID whose issuer name hash is not the CA's.
  std::unique_ptr<X509_NAME, decltype(&X509_NAME_free)> other(X509_NAME_new(), X509_NAME_free);
  X509_NAME_add_entry_by_txt(other.get(), "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("nobody"), -1, -1,
                             0);
  OcspAsk poison = AskOcsp(inter_pem, leaf.record.serial, other.get());
  EXPECT_EQ(OcspStatusFor(issuer_->Ocsp(poison.der), poison.id.get()), V_OCSP_CERTSTATUS_UNKNOWN);

  // A client asking rightly still learns that the certificate is revoked.
  OcspAsk right = AskOcsp(inter_pem, leaf.record.serial);
  EXPECT_EQ(OcspStatusFor(issuer_->Ocsp(right.der), right.id.get()), V_OCSP_CERTSTATUS_REVOKED);
  EXPECT_EQ(OcspStatusFor(issuer_->Ocsp(right.der), right.id.get()), V_OCSP_CERTSTATUS_REVOKED) << "and from the cache";

  // Bytes after the request are refused.
  EXPECT_EQ(OcspStatusFor(issuer_->Ocsp(right.der + "junk"), right.id.get()), -2);
}

// RFC 6960 4.1.1: the client chooses the CertID's digest.
TEST_P(CaServiceTest, OcspAnswersCertIdsOfSha256AndSha512) {
  Hierarchy();
  auto leaf = Ok(Req(CertType::kDevice, "", "iot.example.com"));
  auto good = Ok(Req(CertType::kDevice, "", "iot.example.com"));
  const std::string inter_pem = issuer_->Get("iot.example.com")->certificate_pem;
  ASSERT_TRUE(issuer_->Revoke(leaf.record.serial, "keyCompromise", false, "test").ok());
  for (const EVP_MD* digest : {EVP_sha256(), EVP_sha512(), EVP_sha1()}) {
    SCOPED_TRACE(EVP_MD_get0_name(digest));
    OcspAsk revoked = AskOcsp(inter_pem, leaf.record.serial, nullptr, digest);
    EXPECT_EQ(OcspStatusFor(issuer_->Ocsp(revoked.der), revoked.id.get()), V_OCSP_CERTSTATUS_REVOKED);
    OcspAsk fine = AskOcsp(inter_pem, good.record.serial, nullptr, digest);
    EXPECT_EQ(OcspStatusFor(issuer_->Ocsp(fine.der), fine.id.get()), V_OCSP_CERTSTATUS_GOOD);
  }
}

// Two CAs with one key and one name (a CA certified again, imported under another name): the
// certificate asked about is answered by the CA that issued it.
TEST_P(CaServiceTest, OcspFindsTheIssuerAmongCasSharingAKey) {
  auto key = pki::GenerateKey(pki::KeyType::kEcP256);
  ASSERT_TRUE(key.ok());
  std::vector<std::string> pems;
  for (const char* name : {"first.example.org", "second.example.org"}) {
    pki::ProfileInput in;
    in.type = CertType::kRoot;
    in.fqdn = "shared.example.org";
    in.not_before_millis = clock_.NowMillis() - 1000;
    in.not_after_millis = clock_.NowMillis() + 3650LL * 86'400'000;
    auto spec = pki::ApplyProfile(in, key->get(), nullptr);
    ASSERT_TRUE(spec.ok()) << spec.error().message;
    auto cert = pki::SignCertificate(spec->spec, key->get(), nullptr, key->get());
    ASSERT_TRUE(cert.ok()) << cert.error().message;
    auto imported = issuer_->ImportCa(cert->get(), key->get(), "", "file", name, "test");
    ASSERT_TRUE(imported.ok()) << imported.error().message;
    pems.push_back(imported->back().certificate_pem);
  }
  for (size_t i = 0; i < pems.size(); ++i) {
    auto leaf = Ok(Req(CertType::kDevice, "", i == 0 ? "first.example.org" : "second.example.org"));
    ASSERT_TRUE(issuer_->Revoke(leaf.record.serial, "keyCompromise", false, "test").ok());
    OcspAsk ask = AskOcsp(pems[i], leaf.record.serial);
    EXPECT_EQ(OcspStatusFor(issuer_->Ocsp(ask.der), ask.id.get()), V_OCSP_CERTSTATUS_REVOKED) << i;
  }
}

// A root made elsewhere, of `key`, changed by `edit` and signed again, read back from DER.
pki::X509Ptr ExternalRoot(const std::string& fqdn, EVP_PKEY* key, int64_t now, const std::function<void(X509*)>& edit) {
  pki::ProfileInput in;
  in.type = CertType::kRoot;
  in.fqdn = fqdn;
  in.not_before_millis = now - 1000;
  in.not_after_millis = now + 3650LL * 86'400'000;
  auto spec = pki::ApplyProfile(in, key, nullptr);
  EXPECT_TRUE(spec.ok());
  auto cert = pki::SignCertificate(spec->spec, key, nullptr, key);
  EXPECT_TRUE(cert.ok());
  edit(cert->get());
  EXPECT_GT(X509_sign(cert->get(), key, EVP_sha256()), 0);
  unsigned char* der = nullptr;
  const int len = i2d_X509(cert->get(), &der);
  const unsigned char* p = der;
  pki::X509Ptr out(d2i_X509(nullptr, &p, len));
  OPENSSL_free(der);
  return out;
}

TEST_P(CaServiceTest, AnImportedCaNeedsAKeyIdentifierAndASerialOfItsOwn) {
  auto key = pki::GenerateKey(pki::KeyType::kEcP256);
  auto other = pki::GenerateKey(pki::KeyType::kEcP256);
  ASSERT_TRUE(key.ok() && other.ok());
  pki::X509Ptr no_ski = ExternalRoot("plain.example.org", key->get(), clock_.NowMillis(), [](X509* c) {
    X509_EXTENSION_free(X509_delete_ext(c, X509_get_ext_by_NID(c, NID_subject_key_identifier, -1)));
  });
  auto refused = issuer_->ImportCa(no_ski.get(), key->get(), "", "file", "", "test");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("no subjectKeyIdentifier"), std::string::npos) << refused.error().message;

  // Two roots made alike elsewhere, both numbered 1000 (`openssl ca`'s serial file).
  auto numbered = [](X509* c) {
    std::unique_ptr<ASN1_INTEGER, decltype(&ASN1_INTEGER_free)> serial(ASN1_INTEGER_new(), ASN1_INTEGER_free);
    ASN1_INTEGER_set(serial.get(), 0x1000);
    X509_set_serialNumber(c, serial.get());
  };
  pki::X509Ptr first = ExternalRoot("one.example.org", key->get(), clock_.NowMillis(), numbered);
  ASSERT_TRUE(issuer_->ImportCa(first.get(), key->get(), "", "file", "", "test").ok());
  // Its CRLs go on above any it published before (numbered from the time in seconds), and the
  // first is queued for the object store as every later one is.
  EXPECT_EQ(store_->Query("SELECT crl_number FROM cas WHERE fqdn = 'one.example.org'")->at(0).Int(0),
            clock_.NowMillis() / 1000);
  EXPECT_EQ(Count("jobs WHERE kind = 'ca.crl_publish' AND payload LIKE '%one.example.org%'"), 1);
  Ok(Req(CertType::kIntermediate, "iot.one.example.org", "one.example.org"));
  EXPECT_EQ(Count("jobs WHERE kind = 'ca.crl_publish' AND payload LIKE '%iot.one.example.org%'"), 1)
      << "a CA made here publishes its first CRL too";
  pki::X509Ptr second = ExternalRoot("two.example.org", other->get(), clock_.NowMillis(), numbered);
  auto collided = issuer_->ImportCa(second.get(), other->get(), "", "file", "", "test");
  ASSERT_FALSE(collided.ok());
  EXPECT_EQ(collided.error().code, ErrorCode::kAlreadyExists);
  // The second root as the chain above an intermediate imported: not taken for the first.
  auto sub_key = pki::GenerateKey(pki::KeyType::kEcP256);
  pki::ProfileInput in;
  in.type = CertType::kIntermediate;
  in.fqdn = "sub.two.example.org";
  in.not_before_millis = clock_.NowMillis() - 1000;
  in.not_after_millis = clock_.NowMillis() + 365LL * 86'400'000;
  auto spec = pki::ApplyProfile(in, sub_key->get(), second.get());
  ASSERT_TRUE(spec.ok()) << spec.error().message;
  auto sub = pki::SignCertificate(spec->spec, sub_key->get(), second.get(), other->get());
  ASSERT_TRUE(sub.ok()) << sub.error().message;
  auto under = issuer_->ImportCa(sub->get(), sub_key->get(), *pki::CertificateToPem(second.get()), "file", "", "test");
  ASSERT_FALSE(under.ok()) << "adopted under " << issuer_->Get("sub.two.example.org")->parent_fqdn;
  EXPECT_NE(under.error().message.find("another certificate with serial 1000"), std::string::npos)
      << under.error().message;
}

TEST_P(CaServiceTest, OcspCachesKnownCertificatesOnlyAndBoundsTheCache) {
  issuance::Issuer::Options options;
  options.public_url = "https://ca.test";
  options.ocsp_cache_entries = 2;
  issuer_ = std::make_unique<issuance::Issuer>(*store_, *keys_, clock_, options);
  ca_ = std::make_unique<CaService>(*issuer_, clock_, CaService::Options{});
  Hierarchy();
  const std::string inter_pem = issuer_->Get("iot.example.com")->certificate_pem;
  std::vector<OcspAsk> asks;
  for (int i = 0; i < 3; ++i)
    asks.push_back(AskOcsp(inter_pem, Ok(Req(CertType::kDevice, "", "iot.example.com")).record.serial));
  OcspAsk unknown = AskOcsp(inter_pem, "1234abcd");

  // A cached response is the same bytes again; a fresh one is signed anew (ECDSA signatures
  // differ each time).
  const std::string unknown_first = issuer_->Ocsp(unknown.der);
  EXPECT_NE(issuer_->Ocsp(unknown.der), unknown_first) << "a serial the CA never issued is not cached";
  std::vector<std::string> first;
  for (const auto& ask : asks) first.push_back(issuer_->Ocsp(ask.der));  // the third evicts the first
  EXPECT_EQ(issuer_->Ocsp(asks[2].der), first[2]);
  EXPECT_EQ(issuer_->Ocsp(asks[1].der), first[1]);
  EXPECT_NE(issuer_->Ocsp(asks[0].der), first[0]) << "evicted: the cache holds two";
}

// The embedded store's plans for the lists the API serves (PostgreSQL chooses its plans by
// table statistics, so only SQLite's are fixed enough to test).
TEST(CertificateInventory, ListsUseAnIndexOnSqlite) {
  auto store = testing::FreshStore(store::Dialect::kSqlite);
  ASSERT_NE(store, nullptr);
  const store::CertificateCursor after{1'795'456'605'000, "ab12"};
  std::vector<std::pair<store::CertificateFilter, std::string>> cases(5);
  cases[0] = {{}, "certificates_parent"};
  cases[0].first.parent_fqdn = "iot.example.com";
  cases[1] = cases[0];
  cases[1].first.after = after;
  cases[2] = {{}, "certificates_type"};
  cases[2].first.type = CertType::kDevice;
  cases[2].first.after = after;
  cases[3] = {{}, "certificates_status"};
  cases[3].first.status = store::CertStatus::kRevoked;
  cases[4] = {{}, "certificates_created"};
  cases[4].first.after = after;
  for (const auto& [filter, index] : cases) {
    store::Params params;
    const std::string sql = store::ListCertificatesSql(filter, params);
    auto plan = store->Query("EXPLAIN QUERY PLAN " + sql, params);
    ASSERT_TRUE(plan.ok()) << plan.error().message;
    std::string text;
    for (const auto& row : *plan) text += row.Text(3) + "\n";
    EXPECT_NE(text.find(index), std::string::npos) << sql << "\n" << text;
    EXPECT_EQ(text.find("SCAN certificates\n"), std::string::npos) << text;
    EXPECT_EQ(text.find("TEMP B-TREE"), std::string::npos) << "sorted outside an index: " << text;
  }
  // Issuing a certificate looks up the active name through the fqdn index alone.
  auto plan = store->Query("EXPLAIN QUERY PLAN SELECT serial FROM certificates WHERE fqdn = ? AND status = 'active'",
                           {std::string("a.example.com")});
  ASSERT_TRUE(plan.ok());
  EXPECT_NE(plan->at(0).Text(3).find("COVERING INDEX certificates_fqdn"), std::string::npos) << plan->at(0).Text(3);
}

TEST_P(CaServiceTest, ARenewalKeepsTheNamesOverlapsAndRevokesTheOldAfterTheGrace) {
  Hierarchy();
  CreateRequest r = Req(CertType::kServer, "api.iot.example.com");
  r.sans = {"api.iot.example.com", "alt.example.com", "10.0.0.9"};
  r.organization = "Acme";
  r.key_type = "ec-p384";
  r.validity_days = 30;
  const issuance::Issued old = Ok(r);
  EXPECT_EQ(Refused(r).code, ErrorCode::kAlreadyExists) << "a second certificate of the name needs a renewal";

  auto renewed = ca_->Renew(old.record.serial, {}, "test");
  ASSERT_TRUE(renewed.ok()) << renewed.error().message;
  auto cert = pki::CertificateFromPem(renewed->record.certificate_pem);
  ASSERT_TRUE(cert.ok());
  EXPECT_EQ(pki::SubjectAltNames(cert->get()),
            (std::vector<std::string>{"api.iot.example.com", "alt.example.com", "10.0.0.9"}));
  EXPECT_EQ(pki::NameEntry(X509_get_subject_name(cert->get()), NID_organizationName), "Acme");
  EXPECT_EQ(*pki::KeyTypeOf(X509_get0_pubkey(cert->get())), pki::KeyType::kEcP384) << "the old key's type";
  EXPECT_TRUE(renewed->private_key_pem.has_value());
  EXPECT_EQ(renewed->record.parent_fqdn, "iot.example.com");
  EXPECT_EQ((renewed->record.not_after - renewed->record.not_before) / (int64_t{24} * 3600 * 1000), 30);
  EXPECT_EQ(issuer_->Get(old.record.serial)->status, store::CertStatus::kActive) << "overlap during the grace";
  auto job = store_->Query("SELECT run_at, payload FROM jobs WHERE kind = 'ca.revoke_superseded'");
  ASSERT_EQ(job->size(), 1u);
  EXPECT_EQ(job->at(0).Int(0), clock_.NowMillis() + int64_t{24} * 3600 * 1000);
  EXPECT_NE(job->at(0).Text(1).find(old.record.serial), std::string::npos);
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM audit_log WHERE action = 'certificate.renew'")->at(0).Int(0), 1);
  // Renewed once: a second renewal of it would leave two successors active.
  auto again = ca_->Renew(old.record.serial, {}, "test");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kAlreadyExists);
  EXPECT_NE(again.error().message.find("was renewed already"), std::string::npos) << again.error().message;
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM certificates WHERE fqdn = 'api.iot.example.com'")->at(0).Int(0), 2)
      << "nothing issued";

  // With a CSR, and kept: no revocation queued.
  auto key = pki::GenerateKey(pki::KeyType::kEcP256);
  RenewRequest with_csr;
  with_csr.csr_pem = *pki::MakeCsrPem(key->get(), "x", {});
  with_csr.keep = true;
  auto second = ca_->Renew(renewed->record.serial, with_csr, "test");
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_FALSE(second->private_key_pem.has_value());
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM jobs WHERE kind = 'ca.revoke_superseded'")->at(0).Int(0), 1);

  EXPECT_EQ(ca_->Renew("abcdef", {}, "test").error().code, ErrorCode::kNotFound);
  auto ca = issuer_->Get("iot.example.com");
  EXPECT_EQ(ca_->Renew(ca->serial, {}, "test").error().code, ErrorCode::kFailedPrecondition) << "CAs are rotated";
  ASSERT_TRUE(issuer_->Revoke(old.record.serial, "superseded", false, "t").ok());
  EXPECT_EQ(ca_->Renew(old.record.serial, {}, "test").error().code, ErrorCode::kFailedPrecondition) << "revoked";
  RenewRequest both;
  both.csr_pem = with_csr.csr_pem;
  both.key_type = "rsa-2048";
  EXPECT_EQ(ca_->Renew(second->record.serial, both, "test").error().code, ErrorCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Drivers, CaServiceTest, testing::kBothDialects, testing::DialectName);

// A cascade and a certificate being written under the CA it revokes, at once, as on two nodes
// of one PostgreSQL (SQLite has one writer: one of the two waits for the other whole).
class CascadeRaceTest : public CaServiceTest {
 protected:
  // See testing::SomeoneWaitsForALock.
  bool SomeoneWaitsForALock(const std::atomic<bool>& ended) { return testing::SomeoneWaitsForALock(*store_, ended); }
  issuance::IssueRequest Device(std::string name) {
    issuance::IssueRequest r;
    r.type = CertType::kDevice;
    r.name = std::move(name);
    r.parent = "iot.example.com";
    return r;
  }
};

TEST_P(CascadeRaceTest, ACascadeWaitsForACertificateWhoseCaWasCheckedAndRevokesItToo) {
  Hierarchy();
  const std::string ca = issuer_->Get("iot.example.com")->serial;
  // A certificate written and its CA checked active, not committed yet (as a group commit is
  // between its end and its commit).
  store::CertificateRecord row = Ok(Req(CertType::kDevice, "", "iot.example.com")).record;
  row.serial = "1c0ffee0c0ffee0c0ffee0c0ffee0c0f";
  row.fingerprint = std::string(64, 'f');
  std::latch checked(1);
  std::latch go(1);
  std::thread writer([&] {
    EXPECT_TRUE(store_
                    ->Transact([&](store::Tx& tx) -> Result<void> {
                      CF_RETURN_IF_ERROR(store::InsertCertificate(tx, row));
                      CF_RETURN_IF_ERROR(store::CheckIssuerActive(tx, ca, "revoked"));
                      CF_RETURN_IF_ERROR(tx.FlushAll(/*last_too=*/false));
                      checked.count_down();
                      go.wait();
                      return certfleet::Ok();
                    })
                    .ok());
  });
  checked.wait();
  std::atomic<bool> revoked{false};
  std::thread revoker([&] {
    EXPECT_TRUE(issuer_->Revoke(ca, "cACompromise", true, "test").ok());
    revoked = true;
  });
  EXPECT_TRUE(SomeoneWaitsForALock(revoked)) << "the cascade waits for the write";
  go.count_down();
  writer.join();
  revoker.join();
  EXPECT_EQ(issuer_->Get(row.serial)->status, store::CertStatus::kRevoked)
      << "the cascade read the CA's children after the write committed";
}

TEST_P(CascadeRaceTest, ACertificateBeingWrittenWhenACascadeRunsIsRefused) {
  Hierarchy();
  const std::string ca = issuer_->Get("iot.example.com")->serial;
  std::latch written(1);
  std::latch go(1);
  issuance::IssueRequest r = Device("in-flight");
  r.in_transaction = [&](store::Tx& tx, const store::CertificateRecord&) -> Result<void> {
    CF_RETURN_IF_ERROR(tx.Flush());  // its row is in, its CA not checked yet
    written.count_down();
    go.wait();
    return certfleet::Ok();
  };
  Result<issuance::Issued> issued = Error{};
  std::thread writer([&] { issued = issuer_->Issue(r, "test"); });
  written.wait();
  ASSERT_TRUE(issuer_->Revoke(ca, "cACompromise", true, "test").ok());
  go.count_down();
  writer.join();
  ASSERT_FALSE(issued.ok()) << "issued " << issued->record.serial << " under a revoked CA";
  EXPECT_EQ(issued.error().code, ErrorCode::kFailedPrecondition) << issued.error().message;
  EXPECT_EQ(Count("certificates WHERE fqdn = 'in-flight'"), 0);
}

TEST_P(CascadeRaceTest, ACertificateWrittenWhileACascadeRunsIsRefused) {
  Hierarchy();
  const std::string ca = issuer_->Get("iot.example.com")->serial;
  std::latch locked(1);
  std::latch go(1);
  // The cascade's first steps, held open: the CA locked and marked revoked.
  std::thread cascade([&] {
    EXPECT_TRUE(store_
                    ->Transact([&](store::Tx& tx) -> Result<void> {
                      CF_RETURN_IF_ERROR(store::LockIssuer(tx, ca));
                      CF_RETURN_IF_ERROR(store::RevokeCertificate(tx, ca, clock_.NowMillis(), 2));
                      locked.count_down();
                      go.wait();
                      return certfleet::Ok();
                    })
                    .ok());
  });
  locked.wait();
  std::atomic<bool> ended{false};
  Result<issuance::Issued> issued = Error{};
  std::thread writer([&] {
    issued = issuer_->Issue(Device("late"), "test");
    ended = true;
  });
  EXPECT_TRUE(SomeoneWaitsForALock(ended)) << "the write waits for the cascade";
  go.count_down();
  cascade.join();
  writer.join();
  ASSERT_FALSE(issued.ok()) << "issued " << issued->record.serial << " under a revoked CA";
  EXPECT_EQ(issued.error().code, ErrorCode::kFailedPrecondition) << issued.error().message;
  EXPECT_EQ(Count("certificates WHERE fqdn = 'late'"), 0);
}

// Two nodes issuing a server certificate for one name at once: one gets it, the other a 409,
// where each saw no active certificate for the name before the other committed.
TEST_P(CascadeRaceTest, TwoNodesIssuingOneNameAtOnceLeaveOneActiveCertificate) {
  Hierarchy();
  issuance::Issuer other_node(*store_, *keys_, clock_, issuance::Issuer::Options{"https://ca.test"});
  std::latch written(1);
  std::latch go(1);
  issuance::IssueRequest first;
  first.type = CertType::kServer;
  first.name = "race.iot.example.com";
  first.parent = "iot.example.com";
  issuance::IssueRequest second = first;
  first.in_transaction = [&](store::Tx& tx, const store::CertificateRecord&) -> Result<void> {
    CF_RETURN_IF_ERROR(tx.Flush());  // its row is in, not committed
    written.count_down();
    go.wait();
    return certfleet::Ok();
  };
  std::thread node_a([&] { EXPECT_TRUE(issuer_->Issue(first, "test").ok()); });
  written.wait();
  auto refused = other_node.Issue(second, "test");
  go.count_down();
  node_a.join();
  ASSERT_FALSE(refused.ok()) << "a second active certificate for the name";
  EXPECT_EQ(refused.error().code, ErrorCode::kAlreadyExists) << refused.error().message;
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM certificates WHERE fqdn = 'race.iot.example.com' AND status = 'active'")
                ->at(0)
                .Int(0),
            1);
}

INSTANTIATE_TEST_SUITE_P(Drivers, CascadeRaceTest, ::testing::Values(store::Dialect::kPostgres), testing::DialectName);

}  // namespace
}  // namespace certfleet::ca

namespace certfleet::pki::file {
namespace {

TEST(FileKeyBackend, KeysAreEncryptedPrivateFilesThatNeedTheMasterKey) {
  const std::string dir = testing::TempDir() + "/keys";
  FileKeyBackend keys(dir, std::string(64, 'm'));
  auto key = GenerateKey(KeyType::kEcP256);
  auto ref = keys.Put(key->get(), "");
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  auto file = std::filesystem::directory_iterator(dir)->path();
  EXPECT_EQ(std::filesystem::status(file).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  std::ifstream in(file);
  std::string pem((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(pem.find("BEGIN ENCRYPTED PRIVATE KEY"), std::string::npos);
  auto back = keys.Get(*ref);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(EVP_PKEY_eq(back->get(), key->get()), 1);
  FileKeyBackend wrong(dir, std::string(64, 'x'));
  EXPECT_FALSE(wrong.Get(*ref).ok());
  EXPECT_FALSE(keys.Get("file:../etc/passwd").ok());
  EXPECT_TRUE(keys.Remove(*ref).ok());
  EXPECT_FALSE(std::filesystem::exists(file));
}

TEST(FileKeyBackend, MasterKeyIsMadeOnceAndShortOnesAreRefused) {
  const std::string path = testing::TempDir() + "/master.key";
  EXPECT_FALSE(LoadMasterKey("", path, false).ok()) << "serve must not make a master key";
  auto made = LoadMasterKey("", path, true);
  ASSERT_TRUE(made.ok());
  EXPECT_EQ(made->size(), 64u);
  EXPECT_EQ(*LoadMasterKey("", path, true), *made);
  EXPECT_EQ(*LoadMasterKey(std::string(40, 'e'), path, false), std::string(40, 'e'));
  EXPECT_FALSE(LoadMasterKey("short", path, false).ok());
  std::filesystem::permissions(path, std::filesystem::perms::group_read, std::filesystem::perm_options::add);
  EXPECT_TRUE(LoadMasterKey("", path, false).ok()) << "0640: its group may read it";
  std::filesystem::permissions(path, std::filesystem::perms::others_read, std::filesystem::perm_options::add);
  auto shared = LoadMasterKey("", path, false);
  ASSERT_FALSE(shared.ok()) << "a master key file any user may read";
  EXPECT_NE(shared.error().message.find("chmod o-rwx"), std::string::npos) << shared.error().message;
}

}  // namespace
}  // namespace certfleet::pki::file
