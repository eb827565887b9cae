#!/usr/bin/python3
"""The defects an outsider found by probing the running server, each checked from outside
with independent clients (openssl ocsp, openssl verify, curl, raw TLS sockets), so that
none comes back.

usage: probe_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import json
import os
import random
import shutil
import socket
import stat
import string
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, failed, finish  # noqa: E402
from harness import Certfleet, Files, run  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
# renewal.ca set: the server asks every client for a certificate of that CA.
cf = Certfleet(BINARY, DB_KIND, "probe-e2e", {"CERTFLEET_RENEWAL_CA": "hosts.example.com"})
cf.init()
cf.start()
T = cf.token
files = Files("certfleet-probe-e2e-")
path, write = files.path, files.write


def api(method, route, body=None, expect=200, bearer=T, headers=None):
    status, out, resp = cf.request(method, route, body=body, bearer=bearer, headers=headers)
    check(status == expect, f"{method} {route}: {status}, wanted {expect}: {str(out)[:300]}")
    return out, resp


def raw(data):
    """Sends bytes as they are over TLS; all the server answers until it closes."""
    sock = cf.ctx.wrap_socket(socket.create_connection(("127.0.0.1", cf.port), timeout=10),
                              server_hostname="127.0.0.1")
    sock.sendall(data)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    sock.close()
    return out


def csr_for(key):
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


root, _ = api("POST", "/v1/certificates/root", {"fqdn": "example.com"}, expect=201)
inter, _ = api("POST", "/v1/certificates/intermediate", {"fqdn": "iot.example.com"}, expect=201)
api("POST", "/v1/certificates/intermediate", {"fqdn": "hosts.example.com"}, expect=201)
cf.stop()
cf.start()  # renewal.ca exists now: its chain is the server's client CA
write("root.pem", root["certificate_pem"])
write("inter.pem", inter["certificate_pem"])
device_key = ec.generate_private_key(ec.SECP256R1())
device, _ = api("POST", "/v1/certificates/device", {"parent_fqdn": "iot.example.com", "csr_pem": csr_for(device_key)},
                expect=201)
write("device.pem", device["certificate_pem"])
write("device.key", device_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
serial = device["serial"]
check(device["subject_kind"] == "dns", f"a W1 certificate is named by a DNS name: {device.get('subject_kind')}")
curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", os.path.join(cf.data, "tls", "ca.pem")]

# 9. A client certificate from another CA than renewal.ca breaks no route.
rc, out = run(*curl, "--cert", path("device.pem"), "--key", path("device.key"), f"{cf.url}/healthz")
check(out == "200", f"/healthz with a device certificate of another CA: {out}")
rc, out = run(*curl, "--cert", path("device.pem"), "--key", path("device.key"), "-X", "POST", f"{cf.url}/v1/agent/renew")
check(out == "401", f"an mTLS route does not take a certificate of another CA: {out}")

# 8. Serials in OpenSSL's spelling (whole bytes, upper case, colons) find the certificate.
rc, out = run("openssl", "x509", "-in", path("device.pem"), "-noout", "-serial")
openssl_serial = out.strip().split("=", 1)[1]
for spelling in (openssl_serial, "0" + serial.upper(), ":".join(openssl_serial[i:i + 2] for i in range(0, len(openssl_serial), 2)),
                 "0x" + openssl_serial):
    got, _ = api("GET", f"/v1/certificates/{spelling}")
    check(got.get("serial") == serial, f"GET /v1/certificates/{spelling} finds {serial}: {got.get('serial')}")

# 4. Reasons that would not revoke for good are refused; a real revocation fails openssl verify.
for reason in ("removeFromCRL", "certificateHold"):
    out, _ = api("POST", f"/v1/certificates/{serial}/revoke", {"reason": reason}, expect=400)
    check(reason in out["error"]["message"], f"{reason} refused with a reason: {out}")
check(api("GET", f"/v1/certificates/{serial}")[0]["status"] == "active", "a refused revocation changes nothing")
api("POST", f"/v1/certificates/0{openssl_serial}/revoke", {"reason": "keyCompromise"})
status, crl, _ = cf.request("GET", "/crl/iot.example.com.crl", raw=True)
write("inter.crl.der", crl)
run("openssl", "crl", "-inform", "DER", "-in", path("inter.crl.der"), "-out", path("inter.crl.pem"))
write("crlfile.pem", open(path("inter.crl.pem")).read())
rc, out = run("openssl", "verify", "-crl_check", "-CAfile", path("root.pem"), "-untrusted", path("inter.pem"),
              "-CRLfile", path("crlfile.pem"), path("device.pem"))
check(rc != 0 and "certificate revoked" in out, f"openssl verify -crl_check: revoked: {out}")

# 1. OCSP: a nonce-less request whose CertID names another issuer cannot poison the cache.
ocsp = ["openssl", "ocsp", "-issuer", path("inter.pem"), "-serial", f"0x{serial}", "-no_nonce"]
run(*ocsp, "-reqout", path("req.der"))
request = open(path("req.der"), "rb").read()
name_hash = x509.load_pem_x509_certificate(inter["certificate_pem"].encode()).subject.public_bytes()
digest = hashes.Hash(hashes.SHA1())
digest.update(name_hash)
name_hash = digest.finalize()
check(name_hash in request, "the request carries the issuer name hash")
status, answer, _ = cf.request("POST", "/ocsp", body=request.replace(name_hash, b"\0" * 20),
                               headers={"Content-Type": "application/ocsp-request"}, raw=True)
check(status == 200, f"the poisoning request is answered: {status}")
rc, out = run(*ocsp, "-url", f"{cf.url}/ocsp", "-CAfile", path("root.pem"), "-VAfile", path("inter.pem"))
check(f"0x{serial}: revoked" in out, f"openssl ocsp still says revoked after the poisoning attempt: {out}")
status, answer, _ = cf.request("POST", "/ocsp", body=request + b"junk",
                               headers={"Content-Type": "application/ocsp-request"}, raw=True)
write("junk.der", answer)
rc, out = run("openssl", "ocsp", "-respin", path("junk.der"), "-resp_text", "-noverify")
check("malformedrequest" in out.lower(), f"an OCSP request with bytes after it is malformed: {out[:200]}")

# 7. A Transfer-Encoding that does not end in chunked: 400, and the body is no second request.
smuggled = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
out = raw(b"POST /ocsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n" + smuggled)
check(out.count(b"HTTP/1.1 ") == 1 and out.startswith(b"HTTP/1.1 400"), f"xchunked: one answer, 400: {out[:200]!r}")
out = raw(b"POST /ocsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnothex\r\n")
check(out.startswith(b"HTTP/1.1 400"), f"a malformed chunk size: 400: {out[:100]!r}")
out = raw(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
check(out.startswith(b"HTTP/1.1 400"), f"HTTP/1.1 without Host: 400: {out[:100]!r}")

# 3. Made-up methods: one metrics label, short log lines.
rng = random.Random(16)
for i in range(50):
    method = "".join(rng.choice(string.ascii_uppercase) for _ in range(40 if i else 8000))
    out = raw(f"{method} /healthz HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    check(out.startswith(b"HTTP/1.1 405"), f"a made-up method: 405: {out[:60]!r}")
metrics, _ = api("GET", "/metrics")
check('method="other",status="405"} 50' in metrics and len(metrics) < 100_000,
      f"made-up methods are one series ({len(metrics)} bytes of metrics)")
longest = max(len(line) for line in open(cf.log_path))
check(longest < 2000, f"no log line carries a long method: {longest}")

# Lower severity.
out, resp = api("POST", "/v1/tokens", {"role": "reader", "name": "ops"}, expect=201)
check(resp.getheader("Cache-Control") == "no-store", "a new token is not to be cached")
out, _ = api("POST", "/v1/tokens", body='{"role": "reader", "name": "x\\u001b[2J"}', expect=400)
check("control characters" in out["error"]["message"], f"a name with control characters: {out}")
out, _ = api("POST", "/v1/tokens", body='{"role": "reader", "role": "admin"}', expect=400)
check("twice" in out["error"]["message"], f"a key given twice: {out}")
p = cf.cli("token", "create", "--role", "reader", "--name", "x\x1b[2J", expect=1)
check("control characters" in p.stderr, f"the CLI refuses a token name with control characters: {p.stderr}")
for host in ("..", ".", "a..b", ".a"):
    api("POST", "/v1/hosts", {"host_id": host}, expect=400)
out, resp = api("POST", "/v1/hosts", {"host_id": "web-1"}, expect=201)
out, resp = api("POST", "/v1/hosts/web-1/token", expect=201)
check(resp.getheader("Cache-Control") == "no-store", "a host's enrollment token is not to be cached")
status, body, _ = cf.request("POST", "/v1/devices/keys", body=b"device_id,public_key_pem\n\xff\xfe,x\n", bearer=T,
                             headers={"Content-Type": "TEXT/CSV; charset=utf-8"}, raw=True)
check(status == 200, f"media types compare without case: {status} {body[:200]!r}")
try:
    report = json.loads(body.decode("utf-8"))  # strict: invalid UTF-8 raises
    check(report["rejections"], f"the bad row is rejected: {report}")
except (UnicodeDecodeError, ValueError) as e:
    check(False, f"the answer to a CSV with invalid UTF-8 is valid JSON in UTF-8: {e}: {body[:200]!r}")
for cipher in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES256-SHA"):
    rc, out = run("openssl", "s_client", "-connect", f"127.0.0.1:{cf.port}", "-tls1_2", "-cipher", cipher)
    check(rc != 0, f"TLS 1.2 with {cipher} is refused")
if DB_KIND == "sqlite":
    for name in ("certfleet.db", "certfleet.db-wal", "certfleet.db-shm"):
        p = os.path.join(cf.data, name)
        if os.path.exists(p):
            check(stat.S_IMODE(os.stat(p).st_mode) == 0o600, f"{name} is 0600")

cf.stop()
if not failed():
    shutil.rmtree(cf.work, ignore_errors=True)
    shutil.rmtree(files.dir, ignore_errors=True)
finish(f"probe_e2e ({DB_KIND})")
