#include "http/setup.h"

namespace certfleet::http {
namespace {

constexpr int64_t kMiB = int64_t{1024} * 1024;

constexpr ConfigKey kKeys[] = {
    {"auth.token_cache_ms", ConfigType::kInt, "1000",
     "How long a verified API token is remembered; other nodes refuse a revoked token within this. 0: never.", 0,
     60000},
    {"server.listen", ConfigType::kString, "127.0.0.1:8443",
     "HTTPS listen address host:port (port 0 picks a free port)."},
    {"server.http_listen", ConfigType::kString, "",
     "Plain HTTP listen address host:port for CRLs, OCSP and CMP only, which need no TLS (relying parties fetch "
     "revocation without it; CMP messages are protected themselves); put its URL in certificates with "
     "ca.revocation_url. Empty: none."},
    {"server.tls_cert", ConfigType::kPath, "{data_dir}/tls/server.pem", "Server certificate chain (PEM)."},
    {"server.tls_key", ConfigType::kPath, "{data_dir}/tls/server.key", "Server private key (PEM)."},
    {"server.tls_sans", ConfigType::kString, "localhost,127.0.0.1",
     "Names and IP addresses `certfleet init` puts in the server certificate, comma-separated."},
    {"server.client_ca", ConfigType::kPath, "",
     "PEM file of CAs whose client certificates are accepted (mTLS routes), beside the agents' CAs."},
    {"server.threads", ConfigType::kInt, "0",
     "Threads serving HTTPS connections and running handlers; 0: twice the CPU cores, at least 4.", 0, 256},
    {"server.max_connections", ConfigType::kInt, "10000",
     "Connections open at once; more wait in the kernel's queue until one closes. Lowered to fit the open-file "
     "limit, whose soft value is raised to the hard one.",
     1, 10000000},
    {"server.max_connections_per_client", ConfigType::kInt, "0",
     "Connections open at once from one client address; more are closed as they come (logged once while at "
     "the limit). 0: no limit, as behind a load balancer, from whose address every connection comes.",
     0, 10000000},
    {"server.body_limit", ConfigType::kInt, "1048576", "Largest request body in bytes; larger ones get 413.", 1024,
     1024 * kMiB},
    {"server.header_timeout", ConfigType::kInt, "10",
     "Seconds a client has to send the TLS handshake and a request's headers (on a kept-alive connection, from the "
     "request's first bytes).",
     1, 3600},
    {"server.body_timeout", ConfigType::kInt, "60", "Seconds a client has to send the request body.", 1, 3600},
    {"server.idle_timeout", ConfigType::kInt, "60",
     "Seconds an idle keep-alive connection waits for the next request's first bytes.", 1, 3600},
    {"server.shutdown_grace", ConfigType::kInt, "5", "Seconds in-flight requests get to finish on SIGTERM/SIGINT.", 0,
     300},
    {"server.shutdown_drain", ConfigType::kInt, "0",
     "Seconds a node keeps serving on SIGTERM/SIGINT while /readyz answers 503, so that a load balancer takes it "
     "out before it stops accepting; a second signal ends it. 0: stop accepting at once.",
     0, 300},
};

}  // namespace

std::span<const ConfigKey> ConfigKeys() { return kKeys; }

}  // namespace certfleet::http
