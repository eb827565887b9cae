// `certfleet ca import`: an existing CA (made by OpenSSL, step-ca, cfssl, EJBCA) brought in,
// its key moved into the key backend.
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>

#include <iostream>

#include "cli/commands.h"
#include "core/files.h"
#include "issuance/db_key_backend.h"
#include "issuance/setup.h"
#include "pki/certificate.h"
#include "pki/file/file_key_backend.h"
#include "pki/setup.h"
#include "server/server.h"

namespace certfleet::cli {
namespace {

// CA certificates, keys and bundles are a few KiB; anything this large is the wrong file.
constexpr size_t kMaxFileBytes = size_t{1} << 20;

Result<std::string> ReadSmallFile(const std::string& path, std::string_view what) {
  auto data = ReadFile(path, kMaxFileBytes);
  if (!data.ok()) return data.error().Wrap(fmt::format("the {} {}", what, path));
  return data;
}

struct Loaded {
  pki::X509Ptr cert;
  pki::PkeyPtr key;
  std::string chain_pem;
};

Result<Loaded> Load(const CaImportArgs& args) {
  Loaded out;
  std::string password;
  if (!args.password_file.empty()) {
    CF_ASSIGN_OR_RETURN(password, ReadSmallFile(args.password_file, "password file"));
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  }
  if (!args.pkcs12.empty()) {
    CF_ASSIGN_OR_RETURN(std::string der, ReadSmallFile(args.pkcs12, "PKCS#12 file"));
    pki::BioPtr bio(BIO_new_mem_buf(der.data(), static_cast<int>(der.size())));
    std::unique_ptr<PKCS12, pki::Deleter<PKCS12_free>> p12(d2i_PKCS12_bio(bio.get(), nullptr));
    if (!p12) return pki::OpenSslError("reading " + args.pkcs12, ErrorCode::kInvalidArgument);
    EVP_PKEY* key = nullptr;
    X509* cert = nullptr;
    STACK_OF(X509)* ca = nullptr;
    if (PKCS12_parse(p12.get(), password.c_str(), &key, &cert, &ca) != 1) {
      return pki::OpenSslError("opening " + args.pkcs12 + " (wrong --password-file?)", ErrorCode::kInvalidArgument);
    }
    out.key.reset(key);
    out.cert.reset(cert);
    for (int i = 0; i < sk_X509_num(ca); ++i) {
      auto pem = pki::CertificateToPem(sk_X509_value(ca, i));
      if (pem.ok()) out.chain_pem += *pem;
    }
    sk_X509_pop_free(ca, X509_free);
    if (!out.key || !out.cert)
      return MakeError(ErrorCode::kInvalidArgument, args.pkcs12 + " holds no key and certificate");
  } else {
    CF_ASSIGN_OR_RETURN(std::string cert_pem, ReadSmallFile(args.cert, "certificate"));
    CF_ASSIGN_OR_RETURN(out.cert, pki::CertificateFromPem(cert_pem));
    CF_ASSIGN_OR_RETURN(std::string key_pem, ReadSmallFile(args.key, "key"));
    pki::BioPtr bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
    out.key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, password.data()));
    OPENSSL_cleanse(key_pem.data(), key_pem.size());
    if (!out.key)
      return pki::OpenSslError("reading the key " + args.key + " (encrypted? --password-file)",
                               ErrorCode::kInvalidArgument);
  }
  OPENSSL_cleanse(password.data(), password.size());
  if (!args.chain.empty()) {
    CF_ASSIGN_OR_RETURN(std::string chain, ReadSmallFile(args.chain, "chain"));
    out.chain_pem += chain;
  }
  return out;
}

// The store and every CA key backend, as a node opens them.
struct OpenedKeys {
  std::unique_ptr<store::Store> store;
  std::unique_ptr<pki::KeyBackends> keys;
};
Result<OpenedKeys> OpenKeys(const Config& config, const Clock& clock) {
  OpenedKeys out;
  CF_ASSIGN_OR_RETURN(out.store, server::OpenStore(config));
  CF_ASSIGN_OR_RETURN(std::string master_key,
                      pki::file::LoadMasterKey(config.Get("master_key"), config.Get("master_key_file"), false));
  CF_ASSIGN_OR_RETURN(out.keys, issuance::OpenKeyBackends(config, master_key, *out.store, clock));
  return out;
}

}  // namespace

int CaImport(const Config& config, const Clock& clock, const CaImportArgs& args) {
  auto fail = [](const Error& e) {
    std::cerr << "certfleet ca import: " << e.message << "\n";
    return 1;
  };
  if (args.pkcs12.empty() == (args.cert.empty() || args.key.empty()) || (!args.pkcs12.empty() && !args.key.empty())) {
    std::cerr << "certfleet ca import: give --cert and --key, or --pkcs12\n";
    return 2;
  }
  auto loaded = Load(args);
  if (!loaded.ok()) return fail(loaded.error());
  auto opened = OpenKeys(config, clock);
  if (!opened.ok()) return fail(opened.error());
  auto options = issuance::IssuerOptions(config, "");
  if (!options.ok()) return fail(options.error());
  issuance::Issuer issuer(*opened->store, *opened->keys, clock, *options);
  auto written = issuer.ImportCa(loaded->cert.get(), loaded->key.get(), loaded->chain_pem, args.key_backend, args.fqdn,
                                 CliActor());
  if (!written.ok()) return fail(written.error());
  for (const auto& c : *written) {
    std::cout << fmt::format("{} {} {} (serial {}, parent {}, valid until {})\n",
                             &c == &written->back() ? "imported" : "recorded external", CertTypeName(c.type), c.fqdn,
                             c.serial, c.parent_fqdn, FormatRfc3339(c.not_after));
  }
  std::cerr << fmt::format("the key is in the {} key backend now; delete or lock away the files it came from\n",
                           args.key_backend.empty() ? opened->keys->default_backend() : args.key_backend);
  return 0;
}

int MigrateKeys(const Config& config, const Clock& clock) {
  auto fail = [](const Error& e) {
    std::cerr << "certfleet migrate-keys: " << e.message << "\n";
    return 1;
  };
  auto opened = OpenKeys(config, clock);
  if (!opened.ok()) return fail(opened.error());
  auto moved = issuance::MoveFileKeys(*opened->store, *opened->keys, clock, "db", CliActor());
  if (!moved.ok()) return fail(moved.error());
  for (const auto& fqdn : *moved) std::cout << "moved the key of " << fqdn << " into the database\n";
  std::cerr << fmt::format(
      "{} CA key(s) moved; the files in {} stay for nodes of older releases: delete them once "
      "every node runs this one\n",
      moved->size(), config.Get("key_dir"));
  return 0;
}

}  // namespace certfleet::cli
