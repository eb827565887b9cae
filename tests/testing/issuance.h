#pragma once

#include <memory>
#include <string>

#include "core/clock.h"
#include "issuance/issuer.h"
#include "pki/file/file_key_backend.h"
#include "store/store.h"
#include "testing/db.h"

namespace certfleet::testing {

// An issuer over `store` for tests, its CA keys in files under a temporary folder. Header
// only: tests that link the issuance module include it.
struct TestIssuer {
  std::unique_ptr<pki::file::FileKeyBackend> keys;
  std::unique_ptr<issuance::Issuer> issuer;
};

inline TestIssuer MakeIssuer(store::Store& store, const Clock& clock) {
  TestIssuer out;
  out.keys = std::make_unique<pki::file::FileKeyBackend>(TempDir() + "/keys", std::string(64, 'k'));
  out.issuer =
      std::make_unique<issuance::Issuer>(store, *out.keys, clock, issuance::Issuer::Options{"https://ca.test"});
  return out;
}

// The root `root` and the intermediate `intermediate` under it (organization Acme); false if
// either could not be issued.
inline bool IssueHierarchy(issuance::Issuer& issuer, const std::string& root = "example.com",
                           const std::string& intermediate = "iot.example.com") {
  issuance::IssueRequest r;
  r.type = pki::CertType::kRoot;
  r.name = root;
  r.organization = "Acme";
  issuance::IssueRequest i;
  i.type = pki::CertType::kIntermediate;
  i.name = intermediate;
  i.parent = root;
  i.organization = "Acme";
  return issuer.Issue(r, "test").ok() && issuer.Issue(i, "test").ok();
}

}  // namespace certfleet::testing
