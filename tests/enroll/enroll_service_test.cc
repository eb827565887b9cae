// Enrollment as a device sees it, on both stores: who may enroll as which device (registered
// key, one-time secret, current certificate), what is written with the certificate, and
// requests held for approval. The factory-certificate way and the wire are in est_e2e.py.
#include "enroll/enroll_service.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>

#include <boost/json.hpp>
#include <future>
#include <thread>

#include "core/crypto.h"
#include "pki/certificate.h"
#include "pki/csr.h"
#include "pki/der.h"
#include "pki/key.h"
#include "registry/registry.h"
#include "store/certificates_repo.h"
#include "store/devices_repo.h"
#include "testing/db.h"
#include "testing/issuance.h"
#include "testing/registry.h"

namespace certfleet::enroll {
namespace {

namespace json = boost::json;

pki::PkeyPtr NewKey() { return std::move(pki::GenerateKey(pki::KeyType::kEcP256).value()); }

std::string CsrFor(EVP_PKEY* key, const std::string& cn) { return pki::MakeCsrPem(key, cn, {}).value(); }

class EnrollTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    ca_ = testing::MakeIssuer(*store_, clock_);
    issuer_ = ca_.issuer.get();
    registry_ = std::make_unique<registry::Registry>(*store_, clock_);
    EnrollService::Options options;
    options.master_key = std::string(32, 'm');
    options.supersede_grace = std::chrono::hours(1);
    service_ = std::make_unique<EnrollService>(*store_, *issuer_, *registry_, clock_, options);

    ASSERT_TRUE(testing::IssueHierarchy(*issuer_));
    ASSERT_TRUE(testing::CreateJson(*registry_, registry::Kind::kThingType, json::object{{"name", "meter"}}, "t").ok());
    ASSERT_TRUE(testing::CreateJson(*registry_, registry::Kind::kTemplate,
                                    json::object{{"name", "est-line"},
                                                 {"ca_fqdn", "iot.example.com"},
                                                 {"endpoint", "mqtts://m:8883"},
                                                 {"thing_type", "meter"},
                                                 {"validity_days", 30}},
                                    "t")
                    .ok());
    Profile({{"template", "est-line"}, {"auth", {"registered_key", "secret", "reenroll"}}});
  }

  void Profile(const json::object& body, const std::string& label = "default") {
    auto put = service_->PutProfile(label, body, "token:ops");
    ASSERT_TRUE(put.ok()) << put.error().message;
  }

  // A second template, of the same CA, serving the batch b-gw.
  void GatewaysTemplate() {
    ASSERT_TRUE(testing::CreateJson(*registry_, registry::Kind::kTemplate,
                                    json::object{{"name", "gateways"},
                                                 {"ca_fqdn", "iot.example.com"},
                                                 {"endpoint", "mqtts://g:8883"},
                                                 {"batches", {"b-gw"}}},
                                    "t")
                    .ok());
  }

  void Register(const std::string& id, EVP_PKEY* key, const std::string& batch = "") {
    store::DeviceRecord d;
    d.device_id = id;
    d.batch = batch;
    d.public_key = pki::PublicKeyPemToDer(*pki::PublicKeyToPem(key)).value();
    d.key_sha256 = Sha256Hex(d.public_key);
    d.status = std::string(store::kDeviceRegistered);
    ASSERT_TRUE(
        store::Write(*store_, [&](store::Tx& tx) { return store::UpsertDevice(tx, d, clock_.NowMillis()); }).ok());
  }

  Result<Enrolled> Enroll(Operation op, const std::string& csr, Credentials credentials = {},
                          const std::string& label = "default") {
    std::promise<Result<Enrolled>> promise;
    EnrollRequest request;
    request.label = label;
    request.operation = op;
    request.csr = csr;
    request.credentials = std::move(credentials);
    request.protocol = "test";
    service_->EnrollAsync(std::move(request), [&promise](Result<Enrolled> r) { promise.set_value(std::move(r)); });
    return promise.get_future().get();
  }

  ErrorCode Refusal(Operation op, const std::string& csr, Credentials credentials = {},
                    const std::string& label = "default") {
    auto r = Enroll(op, csr, std::move(credentials), label);
    EXPECT_FALSE(r.ok());
    return r.ok() ? ErrorCode::kInternal : r.error().code;
  }

  // The certificate as a TLS client would present it.
  static Credentials Presenting(const store::CertificateRecord& record) {
    Credentials c;
    c.tls_certificates.push_back(*pki::PemBlockBytes(record.certificate_pem, PEM_STRING_X509));
    return c;
  }

  std::string Attachment(const std::string& thing, const std::string& serial) {
    auto detail = testing::GetJson(*registry_, registry::Kind::kThing, thing);
    EXPECT_TRUE(detail.ok());
    for (const auto& c : detail->at("certificates").as_array()) {
      if (c.at("serial").as_string() == serial) return std::string(c.at("attachment").as_string());
    }
    return "none";
  }

  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  testing::TestIssuer ca_;
  issuance::Issuer* issuer_ = nullptr;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<EnrollService> service_;
};

TEST_P(EnrollTest, ARegisteredKeyEnrollsItsDeviceThroughTheTemplate) {
  pki::PkeyPtr key = NewKey();
  Register("dev-1", key.get());
  auto enrolled = Enroll(Operation::kEnroll, CsrFor(key.get(), "dev-1"));
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message;
  EXPECT_EQ(enrolled->record.fqdn, "dev-1");
  EXPECT_EQ(enrolled->record.parent_fqdn, "iot.example.com");
  EXPECT_EQ(enrolled->record.not_after - clock_.NowMillis(), int64_t{30} * 86400 * 1000);
  EXPECT_EQ(Attachment("dev-1", enrolled->record.serial), "active");
  auto device = store::Read(*store_, [](store::Tx& tx) { return store::FindDevice(tx, "dev-1"); });
  EXPECT_EQ((*device)->status, store::kDeviceProvisioned);

  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(NewKey().get(), "dev-1")), ErrorCode::kPermissionDenied);
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(key.get(), "dev-404")), ErrorCode::kNotFound);
  // serverkeygen's key is new: a registered key cannot vouch for it.
  EXPECT_EQ(Refusal(Operation::kServerKeygen, CsrFor(key.get(), "dev-1")), ErrorCode::kUnauthenticated);
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(key.get(), "dev-1"), {}, "nope"), ErrorCode::kNotFound);

  // A device whose batch another template serves cannot take this profile's.
  GatewaysTemplate();
  pki::PkeyPtr sensor = NewKey();
  Register("sensor-1", sensor.get(), "b-gw");
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(sensor.get(), "sensor-1")), ErrorCode::kPermissionDenied);
}

TEST_P(EnrollTest, ASecretEnrollsItsDeviceOnceUntilItExpires) {
  auto minted = service_->CreateSecrets("default", "dev-s", std::nullopt, 1, std::chrono::hours(1), "token:ops");
  ASSERT_TRUE(minted.ok()) << minted.error().message;
  const std::string id = minted->front().record.id;
  const std::string secret = minted->front().secret;
  Credentials wrong;
  wrong.secret = {id, secret + "x"};
  Credentials right;
  right.secret = {id, secret};
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(NewKey().get(), "dev-s"), wrong), ErrorCode::kUnauthenticated);
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(NewKey().get(), "dev-other"), right), ErrorCode::kPermissionDenied);
  auto served = Enroll(Operation::kServerKeygen, CsrFor(NewKey().get(), "dev-s"), right);
  ASSERT_TRUE(served.ok()) << served.error().message;
  EXPECT_EQ(served->record.fqdn, "dev-s");
  ASSERT_TRUE(served->private_key_pem);
  EXPECT_NE(served->private_key_pem->find("BEGIN PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(NewKey().get(), "dev-s"), right), ErrorCode::kUnauthenticated);
  auto used = service_->MacSecret("default", id);
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(used->value_or(""), secret);  // used, but a transaction it began still verifies with it

  auto later = service_->CreateSecrets("default", "dev-t", std::nullopt, 1, std::chrono::hours(1), "token:ops");
  ASSERT_TRUE(later.ok());
  clock_.Advance(std::chrono::hours(1));
  Credentials expired;
  expired.secret = {later->front().record.id, later->front().secret};
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(NewKey().get(), "dev-t"), expired), ErrorCode::kUnauthenticated);
  auto mac = service_->MacSecret("default", later->front().record.id);
  ASSERT_TRUE(mac.ok());
  EXPECT_FALSE(mac->has_value());  // expired
}

TEST_P(EnrollTest, ReenrollmentNeedsTheDevicesActiveUnexpiredCertificate) {
  pki::PkeyPtr key = NewKey();
  Register("dev-1", key.get());
  auto first = Enroll(Operation::kEnroll, CsrFor(key.get(), "dev-1"));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(Refusal(Operation::kReenroll, CsrFor(key.get(), "dev-1")), ErrorCode::kUnauthenticated);
  EXPECT_EQ(Refusal(Operation::kReenroll, CsrFor(key.get(), "dev-2"), Presenting(first->record)),
            ErrorCode::kPermissionDenied);
  auto second = Enroll(Operation::kReenroll, CsrFor(NewKey().get(), "dev-1"), Presenting(first->record));
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_EQ(Attachment("dev-1", first->record.serial), "superseded");
  EXPECT_EQ(Attachment("dev-1", second->record.serial), "active");

  ASSERT_TRUE(issuer_->Revoke(first->record.serial, "keyCompromise", false, "test").ok());
  EXPECT_EQ(Refusal(Operation::kReenroll, CsrFor(key.get(), "dev-1"), Presenting(first->record)),
            ErrorCode::kPermissionDenied);
  clock_.Set(second->record.not_after);
  EXPECT_EQ(Refusal(Operation::kReenroll, CsrFor(key.get(), "dev-1"), Presenting(second->record)),
            ErrorCode::kPermissionDenied);
}

// A second node: its own issuer (and group commits) and service, the same store and CA keys.
struct OtherNode {
  OtherNode(store::Store& store, pki::KeyBackend& keys, const Clock& clock)
      : issuer(store, keys, clock, issuance::Issuer::Options{"https://ca.test"}),
        registry(store, clock),
        service(store, issuer, registry, clock, ServiceOptions()) {}
  static EnrollService::Options ServiceOptions() {
    EnrollService::Options options;
    options.master_key = std::string(32, 'm');
    options.supersede_grace = std::chrono::hours(1);
    return options;
  }
  issuance::Issuer issuer;
  registry::Registry registry;
  EnrollService service;
};

// Requests `make` makes, sent to this node and to `other` at once: their answers.
std::pair<Result<Enrolled>, Result<Enrolled>> AtOnce(EnrollService& here, EnrollService& other,
                                                     const std::function<EnrollRequest()>& make) {
  std::promise<Result<Enrolled>> a, b;
  EnrollRequest first = make(), second = make();
  std::thread there(
      [&] { other.EnrollAsync(std::move(second), [&b](Result<Enrolled> r) { b.set_value(std::move(r)); }); });
  here.EnrollAsync(std::move(first), [&a](Result<Enrolled> r) { a.set_value(std::move(r)); });
  there.join();
  return {a.get_future().get(), b.get_future().get()};
}

TEST_P(EnrollTest, OneCertificateReenrollsOnceWhenTwoNodesAreAskedAtOnce) {
  OtherNode other(*store_, *ca_.keys, clock_);
  for (int i = 0; i < 5; ++i) {
    const std::string device = "dev-race-" + std::to_string(i);
    pki::PkeyPtr key = NewKey();
    Register(device, key.get());
    auto first = Enroll(Operation::kEnroll, CsrFor(key.get(), device));
    ASSERT_TRUE(first.ok()) << first.error().message;
    const std::string csr = CsrFor(NewKey().get(), device);
    auto [a, b] = AtOnce(*service_, other.service, [&] {
      EnrollRequest request;
      request.label = "default";
      request.operation = Operation::kReenroll;
      request.csr = csr;
      request.credentials = Presenting(first->record);
      request.protocol = "test";
      return request;
    });
    EXPECT_NE(a.ok(), b.ok()) << device << ": one certificate renews into one, on whichever node asks first";
  }
}

TEST_P(EnrollTest, ADeviceHasOneRequestWaitingWhateverTheNodeOrProfile) {
  Profile({{"template", "est-line"}, {"auth", {"registered_key"}}, {"approval", true}}, "approve");
  Profile({{"template", "est-line"}, {"auth", {"registered_key"}}, {"approval", true}}, "approve-too");
  OtherNode other(*store_, *ca_.keys, clock_);
  for (int i = 0; i < 5; ++i) {
    const std::string device = "dev-wait-" + std::to_string(i);
    pki::PkeyPtr key = NewKey();
    Register(device, key.get());
    auto [a, b] = AtOnce(*service_, other.service, [&] {
      EnrollRequest request;
      request.label = "approve";
      request.operation = Operation::kEnroll;
      request.csr = CsrFor(key.get(), device);  // a CSR of its own each: another request each
      request.protocol = "test";
      return request;
    });
    const bool a_held = a.ok() && a->pending;
    const bool b_held = b.ok() && b->pending;
    EXPECT_NE(a_held, b_held) << device << ": one request waits, the other is refused";
    const Result<Enrolled>& refused = a_held ? b : a;
    EXPECT_TRUE(!refused.ok() && refused.error().code == ErrorCode::kAlreadyExists) << device;
    EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(key.get(), device), {}, "approve-too"), ErrorCode::kAlreadyExists)
        << "nor under another profile";
  }
}

// Re-enrolling renews a device's enrollment: through a profile of another CA or of another
// template, the device would get another CA's certificate, or other groups and policies.
TEST_P(EnrollTest, ReenrollmentStaysWithTheDevicesCaAndTemplate) {
  issuance::IssueRequest other_ca;
  other_ca.type = pki::CertType::kIntermediate;
  other_ca.name = "other.example.com";
  other_ca.parent = "example.com";
  ASSERT_TRUE(issuer_->Issue(other_ca, "test").ok());
  ASSERT_TRUE(testing::CreateJson(*registry_, registry::Kind::kTemplate,
                                  json::object{{"name", "other-line"},
                                               {"ca_fqdn", "other.example.com"},
                                               {"endpoint", "mqtts://o:8883"},
                                               {"thing_type", "meter"}},
                                  "t")
                  .ok());
  Profile({{"template", "other-line"}, {"auth", {"reenroll"}}}, "elsewhere");
  pki::PkeyPtr key = NewKey();
  Register("dev-1", key.get());
  auto first = Enroll(Operation::kEnroll, CsrFor(key.get(), "dev-1"));
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(Refusal(Operation::kReenroll, CsrFor(NewKey().get(), "dev-1"), Presenting(first->record), "elsewhere"),
            ErrorCode::kPermissionDenied)
      << "a profile issuing from another CA";

  GatewaysTemplate();
  Profile({{"template", "gateways"}, {"auth", {"registered_key"}}}, "gw");
  pki::PkeyPtr gateway = NewKey();
  Register("gw-1", gateway.get(), "b-gw");
  auto enrolled = Enroll(Operation::kEnroll, CsrFor(gateway.get(), "gw-1"), {}, "gw");
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message;
  EXPECT_EQ(Refusal(Operation::kReenroll, CsrFor(NewKey().get(), "gw-1"), Presenting(enrolled->record)),
            ErrorCode::kPermissionDenied)
      << "the default profile's template is not the one of the gateway's batch";
  auto renewed = Enroll(Operation::kReenroll, CsrFor(NewKey().get(), "dev-1"), Presenting(first->record));
  EXPECT_TRUE(renewed.ok()) << "its own profile still renews it: " << renewed.error().message;
}

TEST_P(EnrollTest, ABatchSecretEnrollsOnlyANewDevice) {
  pki::PkeyPtr key = NewKey();
  Register("dev-1", key.get());
  ASSERT_TRUE(Enroll(Operation::kEnroll, CsrFor(key.get(), "dev-1")).ok());
  auto minted = service_->CreateSecrets("default", std::nullopt, "b-1", 2, std::chrono::hours(1), "token:ops");
  ASSERT_TRUE(minted.ok());
  ASSERT_EQ(minted->size(), 2u);
  Credentials c;
  c.secret = {(*minted)[0].record.id, (*minted)[0].secret};
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(NewKey().get(), "dev-1"), c), ErrorCode::kPermissionDenied);
  auto fresh = Enroll(Operation::kEnroll, CsrFor(NewKey().get(), "dev-new"), c);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  EXPECT_EQ(fresh->record.fqdn, "dev-new");
  EXPECT_FALSE(service_->CreateSecrets("default", "dev-1", "b-1", 1, std::chrono::hours(1), "token:ops").ok());  // both
  EXPECT_FALSE(service_->CreateSecrets("default", std::nullopt, "b-1", 1001, std::chrono::hours(1), "t").ok());

  // The new thing keeps the template it enrolled through: another of the same CA renews it not.
  GatewaysTemplate();
  Profile({{"template", "gateways"}, {"auth", {"reenroll"}}}, "gw");
  EXPECT_EQ(Refusal(Operation::kReenroll, CsrFor(NewKey().get(), "dev-new"), Presenting(fresh->record), "gw"),
            ErrorCode::kPermissionDenied)
      << "re-enrolled through a template with other groups and policies";
  auto renewed = Enroll(Operation::kReenroll, CsrFor(NewKey().get(), "dev-new"), Presenting(fresh->record));
  ASSERT_TRUE(renewed.ok()) << "its own template renews it: " << renewed.error().message;
}

TEST_P(EnrollTest, ApprovalHoldsARequestUntilAnOperatorDecides) {
  Profile({{"template", "est-line"}, {"auth", {"registered_key"}}, {"approval", true}}, "approve");
  pki::PkeyPtr key = NewKey();
  Register("dev-1", key.get());
  const std::string csr = CsrFor(key.get(), "dev-1");
  auto held = Enroll(Operation::kEnroll, csr, {}, "approve");
  ASSERT_TRUE(held.ok()) << held.error().message;
  ASSERT_TRUE(held->pending);
  auto again = Enroll(Operation::kEnroll, csr, {}, "approve");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->pending, held->pending);
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(NewKey().get(), "dev-1"), {}, "approve"),
            ErrorCode::kPermissionDenied);  // another key: refused before it is kept

  auto approved = service_->Decide(*held->pending, true, "token:ops");
  ASSERT_TRUE(approved.ok()) << approved.error().message;
  EXPECT_EQ(approved->state, "approved");
  EXPECT_EQ(service_->Decide(*held->pending, false, "token:ops").error().code, ErrorCode::kFailedPrecondition);
  auto issued = Enroll(Operation::kEnroll, csr, {}, "approve");
  ASSERT_TRUE(issued.ok()) << issued.error().message;
  ASSERT_FALSE(issued->pending);
  auto repeated = Enroll(Operation::kEnroll, csr, {}, "approve");
  ASSERT_TRUE(repeated.ok());
  EXPECT_EQ(repeated->record.serial, issued->record.serial);
  auto listed = service_->ListRequests(std::string("issued"), std::nullopt, 10);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().serial, issued->record.serial);
}

TEST_P(EnrollTest, AnApprovedRequestIsCheckedAgainAsItWasWhenItAsked) {
  Profile({{"template", "est-line"}, {"auth", {"secret"}}, {"approval", true}}, "approve");
  auto minted = service_->CreateSecrets("approve", std::nullopt, "b-1", 1, std::chrono::hours(1), "token:ops");
  ASSERT_TRUE(minted.ok()) << minted.error().message;
  Credentials c;
  c.secret = {(*minted)[0].record.id, (*minted)[0].secret};
  const std::string csr = CsrFor(NewKey().get(), "dev-7");
  auto held = Enroll(Operation::kEnroll, csr, c, "approve");
  ASSERT_TRUE(held.ok() && held->pending) << "a new device's request waits";
  // Meanwhile the real dev-7 is provisioned another way: its thing exists now.
  pki::PkeyPtr key = NewKey();
  Register("dev-7", key.get());
  ASSERT_TRUE(Enroll(Operation::kEnroll, CsrFor(key.get(), "dev-7")).ok());
  ASSERT_TRUE(service_->Decide(*held->pending, true, "token:ops").ok());
  EXPECT_EQ(Refusal(Operation::kEnroll, csr, c, "approve"), ErrorCode::kPermissionDenied)
      << "approved for a device that was new when it asked: not issued over the thing made since";
}

TEST_P(EnrollTest, AChangedProfileOrTemplateAppliesAtOnce) {
  pki::PkeyPtr key = NewKey();
  Register("dev-1", key.get());
  ASSERT_TRUE(Enroll(Operation::kEnroll, CsrFor(key.get(), "dev-1")).ok());  // the profile is remembered now
  Profile({{"template", "est-line"}, {"auth", {"secret"}}});
  EXPECT_EQ(Refusal(Operation::kEnroll, CsrFor(key.get(), "dev-1")), ErrorCode::kUnauthenticated);
  Profile({{"template", "est-line"}, {"auth", {"registered_key"}}});
  ASSERT_TRUE(registry_
                  ->Update(
                      registry::Kind::kTemplate, "est-line",
                      [](const registry::Body& current) -> Result<registry::Body> {
                        auto t = std::get<registry::ProvisioningTemplate>(current);
                        t.validity_days = 7;
                        return registry::Body(t);
                      },
                      "t")
                  .ok());
  auto enrolled = Enroll(Operation::kEnroll, CsrFor(key.get(), "dev-1"));
  ASSERT_TRUE(enrolled.ok()) << enrolled.error().message;
  EXPECT_EQ(enrolled->record.not_after - clock_.NowMillis(), int64_t{7} * 86400 * 1000);
}

TEST_P(EnrollTest, ProfilesNameAnExistingTemplate) {
  EXPECT_EQ(service_->PutProfile("x", json::object{{"template", "nope"}, {"auth", {"secret"}}}, "t").error().code,
            ErrorCode::kInvalidArgument);
  auto profiles = service_->ListProfiles();
  ASSERT_TRUE(profiles.ok());
  ASSERT_EQ(profiles->size(), 1u);
  EXPECT_EQ(profiles->front().template_name, "est-line");
  ASSERT_TRUE(service_->DeleteProfile("default", "t").ok());
  EXPECT_EQ(service_->DeleteProfile("default", "t").error().code, ErrorCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Stores, EnrollTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::enroll
