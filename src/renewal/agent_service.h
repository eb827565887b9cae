#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/result.h"
#include "issuance/issuer.h"
#include "renewal/host_service.h"
#include "store/store.h"

namespace certfleet::renewal {

// What an agent gets when it enrolls: its first certificate and where to put it.
struct Enrolled {
  store::CertificateRecord record;
  std::string certificate_pem;
  std::string chain_pem;  // the issuers up to the root
  HostSettings settings;
};

// The certificates of W4 hosts: the server side of the certfleet-agent protocol (enrollment
// with a single-use token, after which the agent authenticates with its certificate) and
// revocation. Thread-safe.
class AgentService {
 public:
  struct Options {
    // The intermediate that issues host certificates (renewal.ca), unless one is set while
    // serving (SetRenewalCa).
    std::string ca_fqdn;
    int64_t validity_days = 90;  // of a host certificate (renewal.validity_days)
    // Before the certificate a reactivated host enrolled past is revoked: as a renewal's
    // superseded one (renewal.grace_seconds).
    std::chrono::seconds grace{86400};
  };

  AgentService(store::Store& store, HostService& hosts, issuance::Issuer& issuer, const Clock& clock, Options options)
      : store_(store), hosts_(hosts), issuer_(issuer), clock_(clock), options_(std::move(options)) {}

  // Issues the host's certificate for the key of `csr_pem` (its names are the host's: CN
  // the host id, the SANs it was registered with), spends the token and makes the host
  // active with the new certificate, in one transaction. The token is the host's single-use
  // token, or a fleet enrollment credential for its id, which registers the host with the
  // defaults if it is not, enrolls only a host that never enrolled, and takes one of its
  // uses (audited with the host). kPermissionDenied for a token that is unknown, spent,
  // expired, revoked or another host's; kNotFound for an unknown host with a host token;
  // kFailedPrecondition for a revoked host or when renewal.ca is not set. Sent again after
  // its answer was lost (the agent keeps its key until it has its certificate), with the
  // token it spent or the fleet credential, it gets the host's certificate again if that
  // certifies the CSR's key; nothing is issued or spent.
  Result<Enrolled> Enroll(std::string_view host_id, std::string_view token, const std::string& csr_pem);
  // Issues a certificate of the host for the key of `csr_pem`, with `in_transaction` in its
  // transaction (and `before_checks`, before the issuer's) and `audit_action` naming the
  // change. When `renewing`, it may overlap the host's current certificate (revoked after the
  // grace).
  Result<Enrolled> Issue(const store::HostRecord& host, const std::string& csr_pem, bool renewing,
                         std::string audit_action, issuance::InTransaction in_transaction,
                         issuance::BeforeChecks before_checks = {});
  // The host's certificate `serial` again, when it certifies the key of `csr_pem`: the
  // answer to a CSR sent again because the first answer was lost (a node stopped, a
  // connection broke), without issuing a second certificate. kFailedPrecondition otherwise.
  Result<Enrolled> IssuedBefore(const store::HostRecord& host, std::string_view serial, const std::string& csr_pem);
  // The host an agent's TLS client certificate (verified by the server) speaks for: a
  // certificate certfleet issued to that host since it was registered and has not revoked,
  // the host not revoked.
  // Named by serial and SHA-256 fingerprint: a serial alone is no identity, since any CA the
  // server trusts for clients could issue a certificate with a host's serial (which every
  // TLS client of the host sees). kPermissionDenied otherwise.
  Result<store::HostRecord> Authenticate(std::string_view serial, std::string_view fingerprint);
  // The CA that issues host certificates now: the one set while serving, else renewal.ca
  // ("" when neither).
  Result<std::string> RenewalCa();
  // Makes `fqdn` (an active intermediate) the CA of every later enrollment and renewal, on
  // every node (the settings table), audited as renewal.settings. kInvalidArgument naming it
  // otherwise.
  Result<void> SetRenewalCa(std::string_view fqdn, std::string_view actor);
  // The CAs agents' certificates chain to, PEM, each with its issuers up to the root: the
  // renewal CA and the issuers of hosts' current certificates (so that agents enrolled under
  // an earlier CA still authenticate until they are renewed).
  Result<std::string> TrustBundle();

  // Revokes the host's current certificate (its CA's CRL is re-signed) and marks the host
  // revoked, so that it is no longer renewed and cannot enroll. Run again after a failure
  // it completes what is left. kFailedPrecondition if the host has no certificate.
  Result<store::HostRecord> Revoke(std::string_view host_id, std::string_view reason, std::string_view actor);

 private:
  Result<Enrolled> EnrollWithCredential(std::string_view host_id, const std::string& token_sha256,
                                        const std::string& csr_pem);
  // The host's certificate `serial` with its chain and settings if it certifies the key of
  // `csr_pem`; nullopt otherwise.
  Result<std::optional<Enrolled>> IssuedFor(const store::HostRecord& host, std::string_view serial,
                                            const std::string& csr_pem);
  // The enrollment answered already (see Enroll): nullopt if it was not.
  Result<std::optional<Enrolled>> EnrolledBefore(std::string_view host_id, const std::string& token_sha256,
                                                 const std::string& csr_pem);

  store::Store& store_;
  HostService& hosts_;
  issuance::Issuer& issuer_;
  const Clock& clock_;
  const Options options_;
};

}  // namespace certfleet::renewal
