// Writes a manifest in Thingpress's "generated" format for bench/bulk_import/run: N distinct
// P-256 device certificates (CN bench-<n>) from a test CA, one base64 PEM per line. Not timed.
//
// usage: bulk_generate COUNT OUT_FILE
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "core/crypto.h"
#include "pki/certificate.h"
#include "pki/key.h"
#include "pki/profile.h"

using namespace certfleet;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: bulk_generate COUNT OUT_FILE\n";
    return 2;
  }
  const long count = std::atol(argv[1]);
  auto ca_key = pki::GenerateKey(pki::KeyType::kEcP256);
  auto device_key = pki::GenerateKey(pki::KeyType::kEcP256);  // one key: the import never looks at it
  if (!ca_key.ok() || !device_key.ok()) return 1;
  constexpr int64_t kYearMs = int64_t{365} * 86'400'000;
  const int64_t now = 1'767'225'600'000;  // 2026-01-01
  pki::CertificateSpec ca;
  ca.common_name = "bench import CA";
  ca.is_ca = true;
  ca.not_before_millis = now;
  ca.not_after_millis = now + 10 * kYearMs;
  auto ca_cert = pki::SignCertificate(ca, ca_key->get(), nullptr, ca_key->get());
  if (!ca_cert.ok()) {
    std::cerr << ca_cert.error().message << "\n";
    return 1;
  }
  std::ofstream out(argv[2], std::ios::binary);
  for (long i = 0; i < count; ++i) {
    pki::CertificateSpec spec;
    spec.common_name = "bench-" + std::to_string(i);
    spec.client_auth = true;
    spec.not_before_millis = now;
    spec.not_after_millis = now + 5 * kYearMs;
    auto issued = pki::IssueCertificate(spec, device_key->get(), ca_cert->get(), ca_key->get(), {});
    if (!issued.ok()) {
      std::cerr << issued.error().message << "\n";
      return 1;
    }
    out << Base64Encode(issued->facts.pem) << "\n";
  }
  return out ? 0 : 1;
}
