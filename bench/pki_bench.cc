// The PKI core's costs per certificate issued from a CSR: parsing and verifying the CSR,
// and building and signing the certificate, single-threaded. bench/issue compares the whole
// path with cfssl; this splits it.
#include <benchmark/benchmark.h>
#include <openssl/pem.h>

#include "pki/certificate.h"
#include "pki/csr.h"
#include "pki/key.h"
#include "pki/profile.h"

namespace certfleet::pki {
namespace {

std::string MakeCsr() {
  auto key = GenerateKey(KeyType::kEcP256);
  X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), key->get());
  X509_REQ_sign(req.get(), key->get(), EVP_sha256());
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  return BioToString(bio.get());
}

void BM_ParseCsr(benchmark::State& state) {
  const std::string pem = MakeCsr();
  for (auto _ : state) {
    auto csr = ParseCsr(pem);
    if (!csr.ok()) state.SkipWithError(csr.error().message.c_str());
    benchmark::DoNotOptimize(csr);
  }
}
BENCHMARK(BM_ParseCsr)->Unit(benchmark::kMicrosecond);

void BM_SignDeviceFromCsr(benchmark::State& state) {
  auto ca_key = GenerateKey(KeyType::kEcP256);
  CertificateSpec ca_spec;
  ca_spec.common_name = "iot.example.com";
  ca_spec.is_ca = true;
  ca_spec.path_len = 0;
  ca_spec.not_after_millis = 4'000'000'000'000;
  auto ca = SignCertificate(ca_spec, ca_key->get(), nullptr, ca_key->get());
  auto csr = ParseCsr(MakeCsr());
  ProfileInput in;
  in.type = CertType::kDevice;
  in.fqdn = "0b7c1e7a-1d0f-4a57-9d7b-6f1f9e0e2d11.iot.example.com";
  in.not_before_millis = 1'795'456'605'000;
  in.not_after_millis = in.not_before_millis + int64_t{365} * 86'400'000;
  in.crl_url = "https://ca.example.com/crl/iot.example.com.crl";
  in.ocsp_url = "https://ca.example.com/ocsp";
  for (auto _ : state) {
    auto spec = ApplyProfile(in, csr->public_key.get(), ca->get());
    auto issued = IssueCertificate(spec->spec, csr->public_key.get(), ca->get(), ca_key->get(), csr->spki_der);
    if (!issued.ok()) state.SkipWithError(issued.error().message.c_str());
    benchmark::DoNotOptimize(issued);
  }
}
BENCHMARK(BM_SignDeviceFromCsr)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace certfleet::pki
