// Provisioning as a device sees it: the authorizer's answers in order, the certificate and
// the registry written with it, rotation with revocation after the grace period, retrieval
// links, and intermediate CA rotation.
#include "provision/provision_service.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>

#include <boost/json.hpp>

#include "ca/fqdn.h"
#include "core/crypto.h"
#include "pki/certificate.h"
#include "pki/key.h"
#include "provision/device_registry.h"
#include "registry/registry.h"
#include "store/broker_repo.h"
#include "store/certificates_repo.h"
#include "store/imports_repo.h"
#include "store/registry_repo.h"
#include "testing/db.h"
#include "testing/issuance.h"
#include "testing/registry.h"

namespace certfleet::provision {
namespace {

namespace json = boost::json;
using registry::Kind;

constexpr int64_t kGraceMs = int64_t{3600} * 1000;
constexpr int64_t kTtlMs = int64_t{600} * 1000;

// A PEM CSR for `key` whose subject has the common names `cns`, in order.
std::string CsrPem(EVP_PKEY* key, const std::vector<std::string>& cns) {
  pki::X509ReqPtr req(X509_REQ_new());
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  for (const auto& cn : cns) {
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                               0);
  }
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("Acme"), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key);
  EXPECT_GT(X509_REQ_sign(req.get(), key, EVP_sha256()), 0);
  pki::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  return pki::BioToString(bio.get());
}

pki::PkeyPtr NewKey() {
  auto key = pki::GenerateKey(pki::KeyType::kEcP256);
  return std::move(key.value());
}

pki::X509Ptr Cert(const std::string& pem) {
  auto cert = pki::CertificateFromPem(pem);
  return std::move(cert.value());
}

class ProvisionTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    ca_ = testing::MakeIssuer(*store_, clock_);
    issuer_ = ca_.issuer.get();
    ProvisionService::Options options;
    options.public_url = "https://ca.test";
    options.url_key = std::string(32, 'u');
    options.supersede_grace = std::chrono::hours(1);   // kGraceMs
    options.retrieve_ttl = std::chrono::seconds(600);  // kTtlMs
    registry_ = std::make_unique<registry::Registry>(*store_, clock_);
    service_ = std::make_unique<ProvisionService>(*store_, *issuer_, *registry_, clock_, options);
    devices_ = std::make_unique<DeviceRegistry>(*store_, clock_);

    ASSERT_TRUE(testing::IssueHierarchy(*issuer_));
    Make(Kind::kThingType, {{"name", "sensor"}});
    Make(Kind::kThingGroup, {{"name", "factory-7"}});
    Make(Kind::kTemplate,
         {{"name", "line-7"},
          {"ca_fqdn", "iot.example.com"},
          {"endpoint", "mqtts://mqtt.example.com:8883"},
          {"thing_type", "sensor"},
          {"thing_groups", {"factory-7"}},
          {"batches", {"batch-7"}},
          {"policies",
           {{{"name", "telemetry"},
             {"document",
              {{"Version", "2012-10-17"},
               {"Statement", {{{"Effect", "Allow"}, {"Action", "iot:Publish"}, {"Resource", "*"}}}}}}}}}});
  }

  json::object Make(Kind kind, json::value body) {
    auto made = testing::CreateJson(*registry_, kind, body, "token:ops");
    EXPECT_TRUE(made.ok()) << made.error().message;
    return made.ok() ? *made : json::object{};
  }
  // Registers `id` with a fresh key, in `batch`; returns the key.
  pki::PkeyPtr Register(const std::string& id, const std::string& batch = "batch-7") {
    pki::PkeyPtr key = NewKey();
    const std::string csv = id + ",\"" + *pki::PublicKeyToPem(key.get()) + "\"," + batch + "\n";
    auto report = devices_->RegisterKeys(csv, UploadFormat::kCsv, "token:ops");
    EXPECT_TRUE(report.ok() && report->inserted == 1);
    return key;
  }
  Result<Provisioned> Provision(EVP_PKEY* key, const std::vector<std::string>& cns) {
    CF_ASSIGN_OR_RETURN(pki::Csr csr, ProvisionService::ReadCsr(CsrPem(key, cns)));
    return service_->Provision(std::move(csr));
  }
  ErrorCode Refusal(EVP_PKEY* key, const std::vector<std::string>& cns) {
    auto r = Provision(key, cns);
    EXPECT_FALSE(r.ok());
    return r.ok() ? ErrorCode::kInternal : r.error().code;
  }
  int64_t Certificates() { return store_->Query("SELECT COUNT(*) FROM certificates")->at(0).Int(0); }
  json::object Thing(const std::string& name) { return *testing::GetJson(*registry_, Kind::kThing, name); }
  // Whether brokers admit the certificate `ref` (a serial or a supplier certificate's ref).
  bool Admitted(const std::string& ref) {
    auto all = store::Read(*store_, [](store::Tx& tx) { return store::BrokerCertificates(tx, std::nullopt); });
    EXPECT_TRUE(all.ok());
    return all.ok() && std::any_of(all->begin(), all->end(), [&](const auto& c) { return c.ref == ref; });
  }

  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  testing::TestIssuer ca_;
  issuance::Issuer* issuer_ = nullptr;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<ProvisionService> service_;
  std::unique_ptr<DeviceRegistry> devices_;
};

TEST_P(ProvisionTest, TheAuthorizerAnswersInItsOrderAndWritesNothingWhenItRefuses) {
  pki::PkeyPtr key = Register("dev-1");
  pki::PkeyPtr other = NewKey();
  const int64_t before = Certificates();

  EXPECT_EQ(ProvisionService::ReadCsr("not a CSR").error().code, ErrorCode::kInvalidArgument);
  std::string forged = CsrPem(key.get(), {"dev-1"});
  forged[forged.size() / 2] = forged[forged.size() / 2] == 'A' ? 'B' : 'A';
  EXPECT_EQ(ProvisionService::ReadCsr(forged).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refusal(key.get(), {}), ErrorCode::kInvalidArgument) << "no CN";
  EXPECT_EQ(Refusal(key.get(), {"dev-1", "dev-2"}), ErrorCode::kInvalidArgument) << "two CNs";
  EXPECT_EQ(Refusal(key.get(), {"dev-1'; DROP TABLE devices;--"}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refusal(key.get(), {"../dev-1"}), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refusal(key.get(), {"dev-404"}), ErrorCode::kNotFound);
  EXPECT_EQ(Refusal(other.get(), {"dev-1"}), ErrorCode::kPermissionDenied) << "not the registered key";
  ASSERT_TRUE(devices_->Disable("dev-1", "token:ops").ok());
  EXPECT_EQ(Refusal(key.get(), {"dev-1"}), ErrorCode::kPermissionDenied) << "disabled, even with the right key";
  pki::PkeyPtr orphan = Register("dev-2", "batch-without-template");
  EXPECT_EQ(Refusal(orphan.get(), {"dev-2"}), ErrorCode::kFailedPrecondition) << "no template, no default";

  EXPECT_EQ(Certificates(), before);
  EXPECT_FALSE(registry_->Get(Kind::kThing, "dev-1").ok()) << "no thing made";
  EXPECT_EQ(devices_->Get("dev-2")->status, store::kDeviceRegistered);
}

TEST_P(ProvisionTest, ACertificateComesWithItsThingGroupsAndPolicies) {
  pki::PkeyPtr key = Register("dev-1");
  auto p = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->thing_name, "dev-1");
  EXPECT_EQ(p->endpoint, "mqtts://mqtt.example.com:8883");
  EXPECT_EQ(p->record.parent_fqdn, "iot.example.com");
  EXPECT_EQ(p->record.fqdn, "dev-1");
  pki::X509Ptr cert = Cert(p->record.certificate_pem);
  EXPECT_EQ(pki::NameEntry(X509_get_subject_name(cert.get()), NID_commonName), "dev-1");
  EXPECT_EQ(X509_get_ext_by_NID(cert.get(), NID_subject_alt_name, -1), -1) << "a device id is no DNS name";
  EXPECT_EQ(X509_check_purpose(cert.get(), X509_PURPOSE_SSL_CLIENT, 0), 1);
  EXPECT_NE(p->chain_pem.find("BEGIN CERTIFICATE"), std::string::npos);

  json::object thing = Thing("dev-1");
  EXPECT_EQ(thing["thing_type"], "sensor");
  EXPECT_EQ(thing["thing_groups"], json::array({"factory-7"}));
  ASSERT_EQ(thing["certificates"].as_array().size(), 1u);
  EXPECT_EQ(thing["certificates"].as_array()[0].at("serial"), p->record.serial.c_str());
  EXPECT_EQ(thing["certificates"].as_array()[0].at("status"), "active");
  ASSERT_EQ(thing["effective_policies"].as_array().size(), 1u);
  EXPECT_EQ(thing["effective_policies"].as_array()[0].at("name"), "telemetry");
  EXPECT_TRUE(registry_->Get(Kind::kPolicy, "telemetry").ok()) << "the template's missing policy was created";
  EXPECT_EQ(devices_->Get("dev-1")->status, store::kDeviceProvisioned);
}

// A template names its policies with their documents; one of them is not deleted while the
// template names it, as a thing type or group it names is not.
TEST_P(ProvisionTest, APolicyATemplateNamesIsNotDeleted) {
  Make(Kind::kPolicy, {{"name", "telemetry"},
                       {"document",
                        {{"Version", "2012-10-17"},
                         {"Statement", {{{"Effect", "Allow"}, {"Action", "iot:Publish"}, {"Resource", "*"}}}}}}});
  auto refused = registry_->Delete(Kind::kPolicy, "telemetry", "t");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message.find("provisioning template line-7 names it"), std::string::npos)
      << refused.error().message;
  ASSERT_TRUE(registry_->Delete(Kind::kTemplate, "line-7", "t").ok());
  EXPECT_TRUE(registry_->Delete(Kind::kPolicy, "telemetry", "t").ok());
}

TEST_P(ProvisionTest, ATemplateUnderARevokedCaIsRefusedWhenWritten) {
  ASSERT_TRUE(issuer_->Revoke(issuer_->Get("iot.example.com")->serial, "cACompromise", false, "t").ok());
  auto refused = testing::CreateJson(*registry_, Kind::kTemplate,
                                     json::value{{"name", "line-8"}, {"ca_fqdn", "iot.example.com"}}, "token:ops");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message.find("is revoked"), std::string::npos) << refused.error().message;
}

TEST_P(ProvisionTest, ANewCertificateSupersedesTheOldOneWhichIsRevokedAfterTheGracePeriod) {
  pki::PkeyPtr key = Register("dev-1");
  auto first = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(first.ok());
  clock_.Advance(std::chrono::minutes(1));
  auto second = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(second.ok());
  ASSERT_NE(first->record.serial, second->record.serial);

  json::object thing = Thing("dev-1");
  const json::array& certs = thing["certificates"].as_array();
  ASSERT_EQ(certs.size(), 2u);
  for (const auto& c : certs) {
    const bool old = c.at("serial") == first->record.serial.c_str();
    EXPECT_EQ(c.at("attachment"), old ? "superseded" : "active");
    EXPECT_EQ(c.at("revoke_after").is_null(), !old);
  }
  EXPECT_EQ(*service_->RevokeDueSuperseded(), 0) << "within the grace period";
  EXPECT_EQ(issuer_->Get(first->record.serial)->status, store::CertStatus::kActive);
  clock_.Advance(std::chrono::milliseconds(kGraceMs));
  EXPECT_EQ(*service_->RevokeDueSuperseded(), 1);
  auto old = issuer_->Get(first->record.serial);
  EXPECT_EQ(old->status, store::CertStatus::kRevoked);
  EXPECT_EQ(old->revocation_reason.value_or(0), 4) << "RFC 5280 superseded";
  EXPECT_EQ(issuer_->Get(second->record.serial)->status, store::CertStatus::kActive);
  EXPECT_EQ(*service_->RevokeDueSuperseded(), 0) << "once";
}

// A CA's certificate attached to a thing (as the registry let an operator do before it took
// device certificates only) is superseded with the thing's others, and never revoked for it.
TEST_P(ProvisionTest, ASupersededAttachmentThatIsNoDeviceCertificateIsNotRevoked) {
  pki::PkeyPtr key = Register("dev-1");
  const std::string ca = issuer_->Get("iot.example.com")->serial;
  ASSERT_TRUE(Provision(key.get(), {"dev-1"}).ok());
  EXPECT_EQ(registry_->Attach(registry::Link::kThingCertificate, "dev-1", ca, "t").error().code,
            ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(store::Write(*store_, [&](store::Tx& tx) {
                return store::PutLink(tx, {std::string(store::kThingCertificate), "dev-1", ca,
                                           std::string(store::kAttachmentActive), std::nullopt, clock_.NowMillis()});
              }).ok());
  clock_.Advance(std::chrono::minutes(1));
  ASSERT_TRUE(Provision(key.get(), {"dev-1"}).ok());
  clock_.Advance(std::chrono::milliseconds(kGraceMs));
  auto ended = service_->RevokeDueSuperseded();
  ASSERT_TRUE(ended.ok()) << ended.error().message;
  EXPECT_EQ(*ended, 1) << "the device's first certificate only";
  EXPECT_EQ(issuer_->Get(ca)->status, store::CertStatus::kActive);
  EXPECT_EQ(*service_->RevokeDueSuperseded(), 0) << "its due ended";
}

// A thing's supplier certificate (W3) superseded by its first provisioning is not this CA's to
// revoke: past the grace it is retired (brokers refuse it), and the revocation of the device's
// own superseded certificates, due after it, goes on.
TEST_P(ProvisionTest, ASuppliersSupersededCertificateIsRetiredAndRevocationGoesOn) {
  pki::PkeyPtr key = Register("dev-1");
  const std::string ref = store::ImportedRef(1, 0);
  const std::string fingerprint(64, 'f');
  ASSERT_TRUE(store::Write(*store_, [&](store::Tx& tx) -> Result<void> {
                CF_RETURN_IF_ERROR(store::InsertImportedCertificates(
                    tx, {{fingerprint, ref, "supplier", "dev-1", "der", 1, clock_.NowMillis()}}));
                return store::PutLink(tx, {std::string(store::kThingCertificate), "dev-1", ref,
                                           std::string(store::kAttachmentActive), std::nullopt, clock_.NowMillis()});
              }).ok());
  auto first = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(first.ok());
  clock_.Advance(std::chrono::minutes(1));
  ASSERT_TRUE(Provision(key.get(), {"dev-1"}).ok());
  EXPECT_TRUE(Admitted(ref)) << "within its grace";

  clock_.Advance(std::chrono::milliseconds(kGraceMs));
  auto ended = service_->RevokeDueSuperseded();
  ASSERT_TRUE(ended.ok()) << ended.error().message;
  EXPECT_EQ(*ended, 1) << "the device's first certificate";
  EXPECT_EQ(issuer_->Get(first->record.serial)->status, store::CertStatus::kRevoked);
  auto links =
      store::Read(*store_, [](store::Tx& tx) { return store::LinksFrom(tx, store::kThingCertificate, "dev-1"); });
  ASSERT_TRUE(links.ok());
  auto supplier = std::find_if(links->begin(), links->end(), [&](const auto& l) { return l.to_name == ref; });
  ASSERT_NE(supplier, links->end());
  EXPECT_EQ(supplier->state, store::kAttachmentRetired);
  EXPECT_FALSE(supplier->due_at.has_value());
  EXPECT_FALSE(Admitted(ref)) << "a retired supplier certificate";
  EXPECT_EQ(*service_->RevokeDueSuperseded(), 0) << "once";
}

// Brokers refuse a disabled device's certificates, and go on refusing them once the device is
// deleted (its certificates are retired from its thing; one superseded is still revoked at the
// end of its grace); a device deleted while enabled keeps its certificate usable until it
// expires, as documented.
TEST_P(ProvisionTest, ADeviceDeletedWhileDisabledStaysRefusedAtBrokers) {
  pki::PkeyPtr key = Register("dev-1");
  auto superseded = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(superseded.ok());
  clock_.Advance(std::chrono::minutes(1));
  auto disabled = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(disabled.ok());
  pki::PkeyPtr key2 = Register("dev-2");
  auto enabled = Provision(key2.get(), {"dev-2"});
  ASSERT_TRUE(enabled.ok());
  EXPECT_TRUE(Admitted(disabled->record.serial));
  ASSERT_TRUE(devices_->Disable("dev-1", "t").ok());
  EXPECT_FALSE(Admitted(disabled->record.serial));
  ASSERT_TRUE(devices_->Delete("dev-1", "t").ok());
  EXPECT_FALSE(Admitted(disabled->record.serial)) << "deleted while disabled";
  EXPECT_FALSE(Thing("dev-2")["effective_policies"].as_array().empty());
  EXPECT_TRUE(Thing("dev-1")["effective_policies"].as_array().empty()) << "none from retired certificates";
  ASSERT_TRUE(devices_->Delete("dev-2", "t").ok());
  EXPECT_TRUE(Admitted(enabled->record.serial)) << "deleted while enabled";
  clock_.Advance(std::chrono::milliseconds(kGraceMs));
  EXPECT_EQ(*service_->RevokeDueSuperseded(), 1);
  EXPECT_EQ(issuer_->Get(superseded->record.serial)->status, store::CertStatus::kRevoked);
  EXPECT_EQ(issuer_->Get(disabled->record.serial)->status, store::CertStatus::kActive) << "retired, not revoked";
  EXPECT_FALSE(Admitted(disabled->record.serial));
}

TEST_P(ProvisionTest, ATemplateChangedOnThisNodeAppliesToTheNextDevice) {
  pki::PkeyPtr key = Register("dev-1");
  ASSERT_EQ(Provision(key.get(), {"dev-1"})->endpoint, "mqtts://mqtt.example.com:8883");
  ASSERT_TRUE(testing::UpdateJson(*registry_, Kind::kTemplate, "line-7", {{"endpoint", "mqtts://new:8883"}}).ok());
  EXPECT_EQ(Provision(key.get(), {"dev-1"})->endpoint, "mqtts://new:8883") << "not the remembered template";
}

TEST_P(ProvisionTest, RetrievalLinksWorkUntilTheyExpireAndOnlyAsSigned) {
  pki::PkeyPtr key = Register("dev-1");
  auto p = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(p.ok());
  RetrieveLink link = service_->MakeRetrieveLink(p->record.serial);
  const std::string query = link.url.substr(link.url.find('?') + 1);
  const std::string expires = query.substr(8, query.find('&') - 8);
  const std::string signature = query.substr(query.find("signature=") + 10);
  EXPECT_EQ(link.url.substr(0, link.url.find('?')), "https://ca.test/v1/provision/certificates/" + p->record.serial);
  EXPECT_EQ(service_->CheckRetrieveLink(p->record.serial, expires, signature), LinkCheck::kValid);
  EXPECT_EQ(*service_->ChainPem(p->record.serial), p->record.certificate_pem + p->chain_pem);
  EXPECT_EQ(service_->CheckRetrieveLink(p->record.serial, std::to_string(std::stoll(expires) + 3600), signature),
            LinkCheck::kTampered)
      << "a later expiry";
  EXPECT_EQ(service_->CheckRetrieveLink("01" + p->record.serial, expires, signature), LinkCheck::kTampered);
  // Its first character changed (to one it is not: 1 in 64 signatures starts with x).
  const std::string tampered = (signature[0] == 'x' ? "y" : "x") + signature.substr(1);
  EXPECT_EQ(service_->CheckRetrieveLink(p->record.serial, expires, tampered), LinkCheck::kTampered);
  clock_.Advance(std::chrono::milliseconds(kTtlMs));
  EXPECT_EQ(service_->CheckRetrieveLink(p->record.serial, expires, signature), LinkCheck::kExpired);
}

TEST_P(ProvisionTest, ARotatedIntermediateTakesOverItsTemplates) {
  EXPECT_EQ(issuance::NextGeneration("iot.example.com"), "iot-g2.example.com");
  EXPECT_EQ(issuance::NextGeneration("iot-g2.example.com"), "iot-g3.example.com");
  EXPECT_EQ(issuance::NextGeneration("iot-gx.example.com"), "iot-gx-g2.example.com");
  pki::PkeyPtr key = Register("dev-1");
  auto before = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(before.ok());

  auto rotated = service_->RotateCa("iot.example.com", "", "token:ops");
  ASSERT_TRUE(rotated.ok()) << rotated.error().message;
  EXPECT_EQ(rotated->created.record.fqdn, "iot-g2.example.com");
  EXPECT_EQ(rotated->created.record.parent_fqdn, "example.com");
  EXPECT_EQ(rotated->templates_moved, 1);
  pki::X509Ptr new_ca = Cert(rotated->created.record.certificate_pem);
  EXPECT_EQ(pki::NameEntry(X509_get_subject_name(new_ca.get()), NID_organizationName), "Acme");
  EXPECT_EQ(testing::GetJson(*registry_, Kind::kTemplate, "line-7")->at("ca_fqdn"), "iot-g2.example.com");

  auto after = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->record.parent_fqdn, "iot-g2.example.com");
  EXPECT_EQ(issuer_->Get(before->record.serial)->status, store::CertStatus::kActive)
      << "the old CA's certificates stay valid";

  EXPECT_EQ(service_->RotateCa("example.com", "", "token:ops").error().code, ErrorCode::kInvalidArgument)
      << "roots do not rotate";
  EXPECT_EQ(service_->RotateCa("nope.example.com", "", "token:ops").error().code, ErrorCode::kNotFound);
}

TEST_P(ProvisionTest, ADisabledDeviceIsEnabledAgainAndADeletedOneIsUnknown) {
  pki::PkeyPtr key = Register("dev-1");
  auto first = Provision(key.get(), {"dev-1"});
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(devices_->Disable("dev-1", "token:ops").ok());
  auto revoked = service_->RevokeDevice("dev-1", "token:ops");
  ASSERT_TRUE(revoked.ok()) << revoked.error().message;
  EXPECT_EQ(*revoked, std::vector<std::string>{first->record.serial});
  EXPECT_EQ(issuer_->Get(first->record.serial)->status, store::CertStatus::kRevoked);
  EXPECT_TRUE(service_->RevokeDevice("dev-1", "t")->empty()) << "nothing left to revoke";
  EXPECT_EQ(Refusal(key.get(), {"dev-1"}), ErrorCode::kPermissionDenied);

  auto enabled = devices_->Enable("dev-1", "token:ops");
  ASSERT_TRUE(enabled.ok()) << enabled.error().message;
  EXPECT_EQ(enabled->status, store::kDeviceProvisioned) << "it has had a certificate";
  ASSERT_TRUE(Provision(key.get(), {"dev-1"}).ok());
  pki::PkeyPtr unused = Register("dev-2");
  ASSERT_TRUE(devices_->Disable("dev-2", "t").ok());
  EXPECT_EQ(devices_->Enable("dev-2", "t")->status, store::kDeviceRegistered) << "never provisioned";

  ASSERT_TRUE(devices_->Delete("dev-1", "token:ops").ok());
  EXPECT_EQ(devices_->Get("dev-1").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(devices_->Delete("dev-1", "t").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(Refusal(key.get(), {"dev-1"}), ErrorCode::kNotFound) << "an unknown device";
  EXPECT_EQ(devices_->Enable("dev-1", "t").error().code, ErrorCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Drivers, ProvisionTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::provision
