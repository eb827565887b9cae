#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "core/clock.h"
#include "issuance/issuer.h"
#include "pki/file/file_key_backend.h"
#include "pki/key.h"
#include "renewal/agent_service.h"
#include "renewal/host_service.h"
#include "testing/db.h"

namespace certfleet::renewal {

// A fresh store of the parameter's dialect with a root (example.com) and the intermediate
// that issues host certificates (hosts.example.com), the host and agent services over it
// (defaults: /etc/pki/{certs,private,ca}, ec-p256, profile host, 30 days' threshold, 90
// days' validity) and a P-256 key for CSRs. Time is a ManualClock.
class HostsFixture : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    keys_ = std::make_unique<pki::file::FileKeyBackend>(testing::TempDir() + "/keys", std::string(64, 'k'));
    issuer_ = std::make_unique<issuance::Issuer>(*store_, *keys_, clock_, issuance::Issuer::Options{"https://ca.test"});
    for (auto [type, fqdn] : {std::pair{pki::CertType::kRoot, "example.com"},
                              std::pair{pki::CertType::kIntermediate, "hosts.example.com"}}) {
      issuance::IssueRequest r;
      r.type = type;
      r.name = fqdn;
      r.parent = type == pki::CertType::kRoot ? "" : "example.com";
      r.organization = "Acme";
      ASSERT_TRUE(issuer_->Issue(r, "test").ok());
    }
    HostService::Options options;
    options.defaults = {{}, "/etc/pki/certs", "/etc/pki/private", "/etc/pki/ca", "ec-p256", "host", 30, std::nullopt};
    options.token_ttl = std::chrono::hours(1);
    hosts_ = std::make_unique<HostService>(*store_, clock_, options);
    agents_ = std::make_unique<AgentService>(*store_, *hosts_, *issuer_, clock_,
                                             AgentService::Options{"hosts.example.com", 90});
    key_ = std::move(pki::GenerateKey(pki::KeyType::kEcP256)).value();
  }

  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<pki::KeyBackend> keys_;
  std::unique_ptr<issuance::Issuer> issuer_;
  std::unique_ptr<HostService> hosts_;
  std::unique_ptr<AgentService> agents_;
  pki::PkeyPtr key_;
};

}  // namespace certfleet::renewal
