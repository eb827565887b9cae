// CAs whose certificates are signed outside certfleet: intermediates made for an offline
// root (a CSR, then the signed certificate), existing CAs imported with their keys, and the
// external issuers above them, kept in the inventory without a key.
#include <fmt/format.h>
#include <openssl/err.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/crypto.h"
#include "core/text.h"
#include "issuance/issuer.h"
#include "pki/certificate.h"
#include "pki/crl.h"
#include "pki/csr.h"
#include "pki/ocsp.h"
#include "store/audit_repo.h"

namespace certfleet::issuance {
namespace {

namespace json = boost::json;

// Deeper than any real hierarchy: a loop or a bundle of strangers stops here.
constexpr int kMaxChainDepth = 8;

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

bool SelfSigned(X509* cert) { return X509_check_issued(cert, cert) == X509_V_OK; }

// A CA certificate certfleet can keep and sign with: basicConstraints cA (RFC 5280 4.2.1.9:
// keyCertSign alone, or a version 1 certificate, is not enough), keyCertSign, a key the lint
// accepts, a subjectKeyIdentifier, valid at `now`.
Result<void> CheckCaCertificate(X509* cert, int64_t now) {
  if (X509_check_ca(cert) != 1) {
    return Invalid(fmt::format("{} is not a CA certificate (no basicConstraints cA)", pki::SubjectText(cert)));
  }
  if (Result<void> linted = pki::LintPublicKey(X509_get0_pubkey(cert)); !linted.ok()) {
    return Invalid(fmt::format("{}: {}", pki::SubjectText(cert), linted.error().message));
  }
  if ((X509_get_extension_flags(cert) & EXFLAG_KUSAGE) == 0 || (X509_get_key_usage(cert) & KU_KEY_CERT_SIGN) == 0) {
    return Invalid(fmt::format("{} has no keyUsage keyCertSign", pki::SubjectText(cert)));
  }
  const time_t at = static_cast<time_t>(now / 1000);
  if (X509_cmp_time(X509_get0_notAfter(cert), const_cast<time_t*>(&at)) <= 0) {
    return Invalid(fmt::format("{} has expired", pki::SubjectText(cert)));
  }
  if (X509_cmp_time(X509_get0_notBefore(cert), const_cast<time_t*>(&at)) > 0) {
    return Invalid(fmt::format("{} is not valid yet", pki::SubjectText(cert)));
  }
  // What its CRLs and certificates name it by (their authorityKeyIdentifier); RFC 5280 4.2.1.2
  // asks it of every CA certificate.
  if (X509_get0_subject_key_id(cert) == nullptr) {
    return Invalid(
        fmt::format("{} has no subjectKeyIdentifier (RFC 5280 4.2.1.2): certify it again with one "
                    "(OpenSSL: subjectKeyIdentifier=hash)",
                    pki::SubjectText(cert)));
  }
  return Ok();
}

// An inventory name for a CA made elsewhere: its CN when that is a DNS name, else the CN
// made one ("ACME Offline Root" -> "acme-offline-root"), else "external-ca-<serial>".
std::string NameFor(X509* cert) {
  std::string cn = AsciiLower(pki::NameEntry(X509_get_subject_name(cert), NID_commonName));
  if (pki::IsValidDnsName(cn)) return cn;
  std::string slug;
  for (char c : cn) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.';
    if (keep) {
      slug += c;
    } else if (!slug.empty() && slug.back() != '-') {
      slug += '-';
    }
  }
  while (!slug.empty() && (slug.back() == '-' || slug.back() == '.')) slug.pop_back();
  if (pki::IsValidDnsName(slug)) return slug;
  return "external-ca-" + pki::SerialHex(X509_get0_serialNumber(cert)).substr(0, 16);
}

}  // namespace

Result<store::PendingCaRecord> Issuer::RequestCa(const std::string& name, pki::KeyType key_type,
                                                 const std::string& key_backend,
                                                 const std::optional<std::string>& parent_hint,
                                                 std::string_view actor) {
  CF_ASSIGN_OR_RETURN(auto taken, store::Read(store_, [&](store::Tx& tx) -> Result<bool> {
                        CF_ASSIGN_OR_RETURN(auto ca, store::FindCa(tx, name));
                        CF_ASSIGN_OR_RETURN(auto pending, store::FindPendingCa(tx, name));
                        return ca.has_value() || pending.has_value();
                      }));
  if (taken) return MakeError(ErrorCode::kAlreadyExists, fmt::format("a CA {} exists or is pending", name));
  CF_ASSIGN_OR_RETURN(std::string ref, keys_.Generate(key_type, key_backend));
  auto made = [&]() -> Result<store::PendingCaRecord> {
    CF_ASSIGN_OR_RETURN(auto key, keys_.Get(ref));
    store::PendingCaRecord pending;
    pending.fqdn = name;
    pending.key_ref = ref;
    CF_ASSIGN_OR_RETURN(pending.csr_pem, pki::MakeCsrPem(key.get(), name, {}));
    pending.parent_hint = parent_hint;
    pending.created_by = std::string(actor);
    pending.created_at = clock_.NowMillis();
    json::object details{{"fqdn", name}, {"key_type", pki::KeyTypeName(key_type)}};
    if (parent_hint) details["parent_hint"] = *parent_hint;
    CF_RETURN_IF_ERROR(store::Write(store_, [&](store::Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(store::InsertPendingCa(tx, pending));
      CF_RETURN_IF_ERROR(
          store::AppendAudit(tx, pending.created_at, actor, "ca.csr", "ca:" + name, json::serialize(details)));
      return Ok();
    }));
    return pending;
  }();
  if (!made.ok() && !store::MayHaveCommitted(made.error())) (void)keys_.Remove(ref);
  return made;
}

Result<std::vector<store::PendingCaRecord>> Issuer::PendingCas() {
  return store::Read(store_, [](store::Tx& tx) { return store::ListPendingCas(tx); });
}

Result<std::vector<std::shared_ptr<X509>>> Issuer::IssuersOf(X509* cert, std::string_view chain_pem) {
  std::vector<std::shared_ptr<X509>> candidates;
  if (chain_pem.find("-----BEGIN") != std::string_view::npos) {
    CF_ASSIGN_OR_RETURN(auto given, pki::CertificatesFromPem(chain_pem));
    for (auto& c : given) candidates.emplace_back(c.release(), X509_free);
  }
  CF_ASSIGN_OR_RETURN(auto inventory, store::Read(store_, [](store::Tx& tx) -> Result<std::vector<std::string>> {
                        CF_ASSIGN_OR_RETURN(auto cas, store::ListCas(tx));
                        std::vector<std::string> pems;
                        for (const auto& ca : cas) {
                          CF_ASSIGN_OR_RETURN(auto row, store::FindCertificate(tx, ca.serial));
                          if (row) pems.push_back(row->certificate_pem);
                        }
                        return pems;
                      }));
  for (const auto& pem : inventory) {
    CF_ASSIGN_OR_RETURN(pki::X509Ptr c, pki::CertificateFromPem(pem));
    candidates.emplace_back(c.release(), X509_free);
  }
  std::vector<std::shared_ptr<X509>> issuers;
  X509* current = cert;
  for (int depth = 0; !SelfSigned(current); ++depth) {
    if (depth == kMaxChainDepth) return Invalid("the chain is longer than any CA hierarchy certfleet keeps");
    auto it = std::find_if(candidates.begin(), candidates.end(),
                           [current](const auto& c) { return X509_check_issued(c.get(), current) == X509_V_OK; });
    if (it == candidates.end()) {
      return Invalid(fmt::format("the chain does not reach a root: the issuer of {} was not given and is not a CA here",
                                 pki::SubjectText(current)));
    }
    issuers.push_back(*it);
    current = it->get();
  }
  // The root's own signature too: OpenSSL does not check a trust anchor's.
  if (X509_verify(current, X509_get0_pubkey(current)) != 1) {
    ERR_clear_error();
    return Invalid(fmt::format("the root {} is not signed by its own key", pki::SubjectText(current)));
  }
  if (!issuers.empty()) {
    std::vector<pki::X509Ptr> chain;
    for (const auto& c : issuers) {
      X509_up_ref(c.get());
      chain.emplace_back(c.get());
    }
    CF_RETURN_IF_ERROR(pki::VerifyChain(cert, chain));
  }
  return issuers;
}

Result<std::vector<store::CertificateRecord>> Issuer::ActivateCa(std::string_view fqdn,
                                                                 std::string_view certificate_pem,
                                                                 std::string_view chain_pem, std::string_view actor) {
  const std::string name = AsciiLower(fqdn);
  CF_ASSIGN_OR_RETURN(auto pending, store::Read(store_, [&](store::Tx& tx) { return store::FindPendingCa(tx, name); }));
  if (!pending) return MakeError(ErrorCode::kNotFound, fmt::format("no pending CA {}", fqdn));
  CF_ASSIGN_OR_RETURN(pki::X509Ptr parsed, pki::CertificateFromPem(certificate_pem));
  std::shared_ptr<X509> cert(parsed.release(), X509_free);
  CF_ASSIGN_OR_RETURN(auto key, keys_.Get(pending->key_ref));
  if (EVP_PKEY_eq(X509_get0_pubkey(cert.get()), key.get()) != 1) {
    return Invalid(fmt::format("the certificate is not for the key of pending CA {} (signed from another CSR?)", name));
  }
  CF_RETURN_IF_ERROR(CheckCaCertificate(cert.get(), clock_.NowMillis()));
  if (SelfSigned(cert.get())) return Invalid("the certificate is self-signed: a pending CA is signed by its parent");
  CF_ASSIGN_OR_RETURN(auto issuers, IssuersOf(cert.get(), chain_pem));
  std::vector<Adopting> chain;
  for (auto it = issuers.rbegin(); it != issuers.rend(); ++it)
    chain.push_back({*it, "", NameFor(it->get()), "ca.external"});
  chain.push_back({cert, pending->key_ref, name, "ca.activate"});
  return Adopt(
      std::move(chain),
      [name](store::Tx& tx, const store::CertificateRecord&) { return store::DeletePendingCa(tx, name); }, actor);
}

Result<std::vector<store::CertificateRecord>> Issuer::ImportCa(X509* cert_in, EVP_PKEY* key, std::string_view chain_pem,
                                                               const std::string& key_backend, const std::string& fqdn,
                                                               std::string_view actor) {
  if (X509_up_ref(cert_in) != 1) return pki::OpenSslError("the certificate");
  std::shared_ptr<X509> cert(cert_in, X509_free);
  if (X509_check_private_key(cert.get(), key) != 1) {
    ERR_clear_error();
    return Invalid("the key does not match the certificate");
  }
  CF_RETURN_IF_ERROR(CheckCaCertificate(cert.get(), clock_.NowMillis()));
  const std::string name = fqdn.empty() ? NameFor(cert.get()) : AsciiLower(fqdn);
  if (!pki::IsValidDnsName(name)) return Invalid(fmt::format("'{}' is not a valid CA name (a DNS name)", name));
  CF_ASSIGN_OR_RETURN(auto issuers, IssuersOf(cert.get(), chain_pem));
  CF_ASSIGN_OR_RETURN(auto known, store::Read(store_, [&](store::Tx& tx) -> Result<bool> {
                        CF_ASSIGN_OR_RETURN(
                            auto by_serial,
                            store::FindCertificate(tx, pki::SerialHex(X509_get0_serialNumber(cert.get()))));
                        CF_ASSIGN_OR_RETURN(auto by_name, store::FindCa(tx, name));
                        CF_ASSIGN_OR_RETURN(auto pending, store::FindPendingCa(tx, name));
                        return by_serial.has_value() || by_name.has_value() || pending.has_value();
                      }));
  if (known)
    return MakeError(ErrorCode::kAlreadyExists, fmt::format("the CA {} (or its certificate) is here already", name));
  CF_ASSIGN_OR_RETURN(std::string ref, keys_.Put(key, key_backend));
  std::vector<Adopting> chain;
  for (auto it = issuers.rbegin(); it != issuers.rend(); ++it)
    chain.push_back({*it, "", NameFor(it->get()), "ca.external"});
  chain.push_back({cert, ref, name, "ca.import"});
  auto adopted = Adopt(std::move(chain), nullptr, actor);
  if (!adopted.ok() && !store::MayHaveCommitted(adopted.error())) (void)keys_.Remove(ref);
  return adopted;
}

Result<std::vector<store::CertificateRecord>> Issuer::Adopt(std::vector<Adopting> chain, InTransaction in_transaction,
                                                            std::string_view actor) {
  const int64_t now = clock_.NowMillis();
  // A CA made elsewhere has published CRLs of its own, numbered from 1 most likely: certfleet's
  // go on from the time in seconds, above them, so that none reads as older (RFC 5280 5.2.3).
  const int64_t first_number = now / 1000;
  // Everything signed is signed before the write: the first CRL of each CA certfleet holds.
  std::vector<std::string> first_crls(chain.size());
  for (size_t i = 0; i < chain.size(); ++i) {
    if (chain[i].key_ref.empty()) continue;
    CF_ASSIGN_OR_RETURN(auto key, keys_.Get(chain[i].key_ref));
    CF_ASSIGN_OR_RETURN(first_crls[i], pki::BuildCrl(chain[i].cert.get(), key.get(), {}, first_number, now,
                                                     now + Millis(options_.crl_validity)));
  }
  return store::Write(store_, [&](store::Tx& tx) -> Result<std::vector<store::CertificateRecord>> {
    std::vector<store::CertificateRecord> written;
    std::optional<store::CertificateRecord> parent;
    for (size_t i = 0; i < chain.size(); ++i) {
      Adopting& a = chain[i];
      CF_ASSIGN_OR_RETURN(pki::CertificateFacts facts, pki::Inspect(a.cert.get()));
      CF_ASSIGN_OR_RETURN(auto existing, store::FindCertificate(tx, facts.serial_hex));
      if (existing && existing->fingerprint != facts.sha256_fingerprint) {
        // Serials are unique per issuer only (two offline roots made alike both start at 1000):
        // the inventory keys certificates by serial, so this one cannot be kept beside it.
        return MakeError(ErrorCode::kAlreadyExists,
                         fmt::format("another certificate with serial {} ({}) is in the inventory; certfleet keeps "
                                     "one certificate a serial",
                                     existing->serial, existing->fqdn));
      }
      if (existing) {
        CF_ASSIGN_OR_RETURN(auto as_ca, store::FindCa(tx, existing->fqdn));
        if (!as_ca || as_ca->serial != existing->serial || !a.key_ref.empty()) {
          return MakeError(ErrorCode::kAlreadyExists,
                           fmt::format("the certificate {} is in the inventory already", existing->serial));
        }
        if (existing->status != store::CertStatus::kActive) {
          return MakeError(ErrorCode::kFailedPrecondition,
                           fmt::format("the CA {} above it is revoked", existing->fqdn));
        }
        parent = std::move(*existing);
        continue;
      }
      CF_ASSIGN_OR_RETURN(auto same_name, store::FindCa(tx, a.name));
      if (same_name && a.key_ref.empty()) {
        a.name = fmt::format("{}-{}", a.name, facts.serial_hex.substr(0, 8));  // another external CA of that name
        CF_ASSIGN_OR_RETURN(same_name, store::FindCa(tx, a.name));
      }
      if (same_name) return MakeError(ErrorCode::kAlreadyExists, fmt::format("a CA {} exists", a.name));
      store::CertificateRecord rec;
      rec.serial = facts.serial_hex;
      rec.fqdn = a.name;
      rec.type = parent ? pki::CertType::kIntermediate : pki::CertType::kRoot;
      rec.parent_fqdn = parent ? parent->fqdn : "Root";
      if (parent) {
        rec.issuer_serial = parent->serial;
        // Looked at again at the transaction's end: a cascade revoking it meanwhile misses nothing.
        CF_RETURN_IF_ERROR(
            store::CheckIssuerActive(tx, parent->serial, fmt::format("the CA {} above it is revoked", parent->fqdn)));
      }
      rec.status = store::CertStatus::kActive;
      rec.not_before = facts.not_before_millis;
      rec.not_after = facts.not_after_millis;
      rec.fingerprint = facts.sha256_fingerprint;
      rec.certificate_pem = facts.pem;
      rec.created_at = now;
      rec.created_by = std::string(actor);
      CF_RETURN_IF_ERROR(store::InsertCertificate(tx, rec));
      CF_RETURN_IF_ERROR(store::InsertCa(
          tx, store::CaRecord{
                  rec.fqdn, rec.serial, a.key_ref, HexEncode(pki::IssuerKeyHash(a.cert.get())), 0, {}, {}, {}}));
      if (!first_crls[i].empty()) {
        CF_RETURN_IF_ERROR(
            store::SaveCrl(tx, rec.fqdn, first_number, first_crls[i], now, now + Millis(options_.crl_validity)));
        CF_RETURN_IF_ERROR(QueuePublish(tx, rec.fqdn, first_number, now));
      }
      const json::object details{{"fqdn", rec.fqdn},
                                 {"type", CertTypeName(rec.type)},
                                 {"parent_fqdn", rec.parent_fqdn},
                                 {"serial", rec.serial},
                                 {"subject", pki::SubjectText(a.cert.get())},
                                 {"key_held", !a.key_ref.empty()}};
      CF_RETURN_IF_ERROR(
          store::AppendAudit(tx, now, actor, a.action, "certificate:" + rec.serial, json::serialize(details)));
      CF_RETURN_IF_ERROR(store::AppendEvent(tx, now, "certificates/created", json::serialize(details)));
      written.push_back(rec);
      parent = std::move(rec);
    }
    if (in_transaction && parent) CF_RETURN_IF_ERROR(in_transaction(tx, *parent));
    return written;
  });
}

}  // namespace certfleet::issuance
