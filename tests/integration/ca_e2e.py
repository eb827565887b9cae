#!/usr/bin/python3
"""W1 end to end: the real binary issues a CA hierarchy over its API, and independent
implementations agree with what it issued: openssl verify, GnuTLS certtool, Python
cryptography, an openssl s_server/s_client handshake, Mosquitto with
require_certificate and a CRL, openssl crl and openssl ocsp. A server certificate is renewed
(from an openssl CSR, and kept) and the one it replaced is revoked superseded.

usage: ca_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, failed, finish, wait_for  # noqa: E402
from harness import Certfleet, Files, run  # noqa: E402
from servers import free_port, mosquitto_publish, wait_port  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
# A renewed certificate is revoked at once (no grace), so that the test sees it.
cf = Certfleet(BINARY, DB_KIND, "ca-e2e", extra_env={"CERTFLEET_CA_RENEW_GRACE_HOURS": "0"})
cf.init()
cf.start()
T = cf.token
files = Files("certfleet-ca-e2e-")
path, write = files.path, files.write



def create(kind, body, expect=201):
    status, out, _ = cf.request("POST", f"/v1/certificates/{kind}", body=body, bearer=T)
    check(status == expect, f"create {kind} {body}: {status} {out}")
    return out


def count():
    return len(cf.request("GET", "/v1/certificates?limit=1000", bearer=T)[1]["items"])


# The hierarchy.
root = create("root", {"fqdn": "example.com", "country": "SE", "organization": "Acme", "state": "Skane"})
check(root["parent_fqdn"] == "Root" and "private_key_pem" not in root, "root: parent Root, no key returned")
inter = create("intermediate", {"fqdn": "iot.example.com"})
check(inter["parent_fqdn"] == "example.com", "intermediate's parent defaults to its registrable domain")
server = create("server", {"fqdn": "mqtt.iot.example.com", "sans": ["localhost"], "key_type": "rsa-2048"})
check(server["parent_fqdn"] == "iot.example.com" and "private_key_pem" in server, "server: default parent, key once")

device_key = ec.generate_private_key(ec.SECP256R1())
csr = x509.CertificateSigningRequestBuilder().subject_name(
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")])).sign(device_key, hashes.SHA256())
csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
device = create("device", {"parent_fqdn": "iot.example.com", "csr_pem": csr_pem})
check("private_key_pem" not in device, "a device from a CSR gets no key back")
check(device["fqdn"].endswith(".iot.example.com") and len(device["fqdn"]) == 36 + 16, "device fqdn is <uuid4>.<parent>")

write("root.pem", root["certificate_pem"])
write("inter.pem", inter["certificate_pem"])
write("cafile.pem", root["certificate_pem"] + inter["certificate_pem"])
write("server.pem", server["certificate_pem"])
write("server-chain.pem", server["certificate_pem"] + inter["certificate_pem"])
write("server.key", server["private_key_pem"])
write("device.pem", device["certificate_pem"])
write("device-chain.pem", device["certificate_pem"] + inter["certificate_pem"])
write("device.key", device_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
check(device["chain_pem"] == inter["certificate_pem"] + root["certificate_pem"], "chain_pem: issuers up to the root")

# openssl verify
for leaf, purpose in (("device.pem", "sslclient"), ("server.pem", "sslserver")):
    rc, out = run("openssl", "verify", "-CAfile", path("root.pem"), "-untrusted", path("inter.pem"), "-purpose", purpose,
                  path(leaf))
    check(rc == 0 and ": OK" in out, f"openssl verify {leaf}: {out}")

# GnuTLS certtool
for leaf in ("device-chain.pem", "server-chain.pem"):
    rc, out = run("certtool", "--verify", "--load-ca-certificate", path("root.pem"), "--infile", path(leaf))
    check(rc == 0 and "Chain verification output: Verified" in out, f"certtool --verify {leaf}: {out[-400:]}")
rc, out = run("certtool", "--verify-chain", "--infile", path("cafile.pem"))
check(rc == 0 or "Verified" in out, f"certtool --verify-chain on intermediate+root: {out[-300:]}")

# Python cryptography: signatures and extensions, read independently.
certs = {n: x509.load_pem_x509_certificate(open(path(n + ".pem"), "rb").read())
         for n in ("root", "inter", "server", "device")}


def signed_by(child, parent):
    try:
        pub = parent.public_key()
        pub.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(child.signature_hash_algorithm))
        return True
    except Exception as e:  # noqa: BLE001
        print("verify:", e)
        return False


check(signed_by(certs["root"], certs["root"]) and signed_by(certs["inter"], certs["root"])
      and signed_by(certs["server"], certs["inter"]) and signed_by(certs["device"], certs["inter"]),
      "cryptography verifies every signature of the chain")
bc = certs["inter"].extensions.get_extension_for_class(x509.BasicConstraints)
check(bc.critical and bc.value.ca and bc.value.path_length == 0, "intermediate: CA:TRUE, pathLen 0, critical")
ku = certs["device"].extensions.get_extension_for_class(x509.KeyUsage).value
check(ku.digital_signature and not ku.key_cert_sign, "device key usage")
eku = certs["device"].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
check(list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH], "device EKU clientAuth")
san = certs["server"].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
check(san.get_values_for_type(x509.DNSName) == ["mqtt.iot.example.com", "localhost"], "server SANs")
check(certs["server"].extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment,
      "an RSA server certificate has keyEncipherment")
check(certs["root"].subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "SE", "root subject C=SE")
check(certs["device"].serial_number.bit_length() > 100, "serials are 128-bit random")

# TLS handshake with the issued server certificate.
port = free_port()
s_server = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", path("server.pem"), "-key",
                             path("server.key"), "-cert_chain", path("inter.pem"), "-quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_port(port, s_server, "openssl s_server")
rc, out = run("openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", path("root.pem"),
              "-verify_return_error", "-verify_hostname", "mqtt.iot.example.com", "-brief", stdin="")
check(rc == 0 and "Verification: OK" in out, f"s_client verifies the issued server certificate: {out[-300:]}")
s_server.kill()


def fetch_crl(name):
    status, der, resp = cf.request("GET", f"/crl/{name}.crl", raw=True)
    check(status == 200 and resp.getheader("Content-Type") == "application/pkix-crl", f"CRL of {name}: {status}")
    max_age = re.search(r"max-age=(\d+)", resp.getheader("Cache-Control") or "")
    check(max_age and 0 < int(max_age.group(1)) <= 60 and "must-revalidate" in resp.getheader("Cache-Control")
          and resp.getheader("Last-Modified") and resp.getheader("Expires")
          and resp.getheader("ETag") == f'"{hashlib.sha256(der).hexdigest()}"',
          f"the CRL of {name} may be cached for a minute at most: {resp.getheaders()}")
    write(f"{name}.crl", der)
    rc, pem = run("openssl", "crl", "-inform", "DER", "-in", path(f"{name}.crl"))
    write(f"{name}.crl.pem", pem)
    return der


# Mosquitto with require_certificate and the intermediate's CRL.
def mosquitto_run():
    return mosquitto_publish(files.dir, path("server-chain.pem"), path("server.key"), path("cafile.pem"),
                             path("iot.example.com.crl.pem"), path("device-chain.pem"), path("device.key"))


fetch_crl("iot.example.com")
rc, out = mosquitto_run()
check(rc == 0, f"Mosquitto accepts the device certificate: {out}")

# OCSP: good before revocation.
# Without a nonce, so the second answer would come from the cache if revocation did not drop it.
ocsp = ["openssl", "ocsp", "-issuer", path("inter.pem"), "-cert", path("device.pem"), "-url", f"{cf.url}/ocsp",
        "-CAfile", path("root.pem"), "-no_nonce"]
rc, out = run(*ocsp)
check(rc == 0 and "device.pem: good" in out and "Response verify OK" in out, f"openssl ocsp: good: {out}")
rc, out = run("openssl", "ocsp", "-issuer", path("inter.pem"), "-serial", "0x1234abcd", "-url", f"{cf.url}/ocsp",
              "-CAfile", path("root.pem"))
check(rc == 0 and "0x1234abcd: unknown" in out, f"openssl ocsp: a serial this CA never issued is unknown: {out}")

status, revoked, _ = cf.request("POST", f"/v1/certificates/{device['serial']}/revoke", body={"reason": "keyCompromise"},
                                bearer=T)
check(status == 200 and revoked["status"] == "revoked" and revoked["revocation_reason"] == "keyCompromise",
      f"revoke: {status} {revoked}")
status, again, _ = cf.request("POST", f"/v1/certificates/{device['serial']}/revoke", body={"reason": "keyCompromise"},
                              bearer=T)
check(status == 200 and again["newly_revoked"] == 0, "revoking again changes nothing")

rc, out = run(*ocsp)
check(rc == 0 and "device.pem: revoked" in out and "keyCompromise" in out, f"openssl ocsp: revoked: {out}")
fetch_crl("iot.example.com")
rc, out = run("openssl", "crl", "-inform", "DER", "-in", path("iot.example.com.crl"), "-noout", "-text")
check(device["serial"].upper() in out.replace(":", "") and "Key Compromise" in out, "openssl crl lists the serial")
check("CRL Number: \n                3" in out or "X509v3 CRL Number:" in out, "the CRL has a number")
rc, out = mosquitto_run()
check(rc != 0, f"Mosquitto refuses the revoked device certificate: rc={rc}")

# GET by OCSP too (base64 of the DER request in the path).
rc, _ = run("openssl", "ocsp", "-issuer", path("inter.pem"), "-cert", path("server.pem"), "-reqout", path("req.der"),
            "-no_nonce")
req_b64 = base64.b64encode(open(path("req.der"), "rb").read()).decode()
status, body, resp = cf.request("GET", "/ocsp/" + req_b64.replace("/", "%2F"), raw=True)
write("resp.der", body)
rc, out = run("openssl", "ocsp", "-respin", path("resp.der"), "-issuer", path("inter.pem"), "-cert", path("server.pem"),
              "-CAfile", path("root.pem"))
check(status == 200 and "server.pem: good" in out, f"OCSP over GET: {out}")
cache_control = resp.getheader("Cache-Control") or ""
check(re.search(r"max-age=\d+", cache_control) and "public" in cache_control and resp.getheader("Last-Modified")
      and resp.getheader("Expires") and resp.getheader("ETag"),
      f"a GET's answer carries RFC 5019's caching headers: {resp.getheaders()}")
# A SHA-256 CertID (RFC 6960 lets the client choose), through openssl's client.
rc, out = run("openssl", "ocsp", "-sha256", "-issuer", path("inter.pem"), "-cert", path("server.pem"), "-url",
              f"{cf.url}/ocsp", "-CAfile", path("root.pem"))
check(rc == 0 and "server.pem: good" in out, f"openssl ocsp -sha256: {out}")

# Renew the server certificate for a key of openssl's; the old one is revoked superseded.
rc, out = run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
              path("renewed.key"), "-out", path("renewed.csr"), "-subj", "/CN=ignored")
status, renewed, _ = cf.request("POST", f"/v1/certificates/{server['serial']}/renew",
                                body={"csr_pem": open(path("renewed.csr")).read()}, bearer=T)
check(status == 201 and renewed["fqdn"] == server["fqdn"] and renewed["serial"] != server["serial"] and
      "private_key_pem" not in renewed, f"renewed: {status} {renewed}")
write("renewed.pem", renewed["certificate_pem"])
rc, out = run("openssl", "x509", "-in", path("renewed.pem"), "-noout", "-ext", "subjectAltName")
check("DNS:mqtt.iot.example.com" in out and "DNS:localhost" in out, f"the same names: {out}")
rc, out = run("openssl", "verify", "-CAfile", path("root.pem"), "-untrusted", path("inter.pem"), "-purpose",
              "sslserver", path("renewed.pem"))
check(rc == 0, f"openssl verifies the renewed certificate: {out}")
rc, out = run("openssl", "x509", "-in", path("renewed.pem"), "-noout", "-pubkey")
rc2, key_out = run("openssl", "pkey", "-in", path("renewed.key"), "-pubout")
check(out.strip() == key_out.strip(), "for the CSR's key")
wait_for("the old certificate revoked", lambda: cf.request(
    "GET", f"/v1/certificates/{server['serial']}", bearer=T)[1]["status"] == "revoked")
rc, out = run(*[a if a != path("device.pem") else path("server.pem") for a in ocsp])
check("server.pem: revoked" in out and "superseded" in out, f"openssl ocsp: the old one is superseded: {out}")
status, kept, _ = cf.request("POST", f"/v1/certificates/{renewed['serial']}/renew", body={"keep": True}, bearer=T)
check(status == 201 and "private_key_pem" in kept, f"renewed again with a key of certfleet's: {status}")
check(cf.request("GET", f"/v1/certificates/{renewed['serial']}", bearer=T)[1]["status"] == "active",
      "kept: the previous one stays active")
status, out, _ = cf.request("POST", f"/v1/certificates/{server['serial']}/renew", body={}, bearer=T)
check(status == 409 and "revoked" in out["error"]["message"], f"a revoked certificate is not renewed: {status} {out}")
status, out, _ = cf.request("POST", f"/v1/certificates/{inter['serial']}/renew", body={}, bearer=T)
check(status == 409 and "rotated" in out["error"]["message"], f"a CA is not renewed: {status} {out}")

# Bad input: 4xx, a clear message, nothing stored.
before = count()
bad_sig = bytearray(csr.public_bytes(serialization.Encoding.DER))
bad_sig[-1] ^= 0x01
wrongly_signed = "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(bad_sig)).decode() + \
    "-----END CERTIFICATE REQUEST-----\n"
cases = [
    ("device", {"parent_fqdn": "iot.example.com", "csr_pem": "garbage"}, 400, "PKCS#10"),
    ("device", {"parent_fqdn": "iot.example.com", "csr_pem": csr_pem[: len(csr_pem) // 2]}, 400, "CSR"),
    ("device", {"parent_fqdn": "iot.example.com", "csr_pem": wrongly_signed}, 400, "signature"),
    ("device", {"parent_fqdn": "iot.example.com", "csr_pem": "A" * 17000}, 400, "longer than"),
    ("server", {"fqdn": "k.iot.example.com", "key_type": "rsa-1024"}, 400, "key type"),
    ("server", {"fqdn": "not a name.example.com"}, 400, "valid DNS name"),
    ("server", {"fqdn": "v.iot.example.com", "validity_days": 0}, 400, "validity_days"),
    ("server", {"fqdn": "v.iot.example.com", "validity_days": -5}, 400, "validity_days"),
    ("server", {"fqdn": "x.mqtt.iot.example.com", "parent_fqdn": "mqtt.iot.example.com"}, 400, "not a CA"),
    ("intermediate", {"fqdn": "iot.example.com"}, 409, "exists"),
    ("intermediate", {"fqdn": "a.unknown.com", "parent_fqdn": "unknown.com"}, 404, "no CA"),
    ("root", {"fqdn": "sub.example.org"}, 400, "registrable"),
]
for kind, body, want, needle in cases:
    status, out, _ = cf.request("POST", f"/v1/certificates/{kind}", body=body, bearer=T)
    msg = out["error"]["message"] if isinstance(out, dict) and "error" in out else str(out)
    check(status == want and needle in msg, f"{kind} {str(body)[:60]}: {status} {msg}")
status, out, _ = cf.request("POST", "/v1/certificates/server", body="x" * 70000, bearer=T)
check(status == 413, f"a body over the route's limit: {status}")
check(count() == before, "refused requests stored nothing")
check(cf.request("POST", "/v1/certificates/server", body={"fqdn": "r.iot.example.com"})[0] == 401, "creation needs a token")
reader = cf.cli("token", "create", "--role", "reader").stdout.strip()
check(cf.request("POST", "/v1/certificates/server", body={"fqdn": "r.iot.example.com"}, bearer=reader)[0] == 403,
      "creation needs the operator role")

# The seed's own paths and base64 names.
status, seed_srv, _ = cf.request("POST", "/certificates/server", body={"fqdn": "seed.iot.example.com"}, bearer=T)
check(status == 201, f"POST /certificates/server: {status}")
b64 = base64.b64encode(b"iot.example.com").decode()
status, listed, _ = cf.request("GET", f"/certificates?parent={b64}&limit=2", bearer=reader)
check(status == 200 and len(listed["items"]) == 2 and listed["next"], "GET /certificates?parent=<base64>&limit=2")
status, page2, _ = cf.request("GET", f"/v1/certificates?parent=iot.example.com&limit=2&next={listed['next']}",
                              bearer=reader)
check(status == 200 and {c["serial"] for c in page2["items"]}.isdisjoint({c["serial"] for c in listed["items"]}),
      f"the next page continues after the first: {status} {page2} {listed}")
status, roots, _ = cf.request("GET", "/v1/certificates?parent=Um9vdA==", bearer=reader)
check(status == 200 and [c["fqdn"] for c in roots["items"]] == ["example.com"], "parent=Um9vdA== lists the roots")
status, got, _ = cf.request("GET", "/certificates/" + base64.b64encode(b"seed.iot.example.com").decode(), bearer=reader)
check(status == 200 and got["serial"] == seed_srv["serial"], "GET /certificates/{base64 fqdn}")
status, got, _ = cf.request("GET", f"/v1/certificates/{device['serial']}", bearer=reader)
check(status == 200 and got["status"] == "revoked", "GET /v1/certificates/{serial}")
status, listed, _ = cf.request("GET", "/v1/certificates?status=revoked&type=device", bearer=reader)
check(status == 200 and [c["serial"] for c in listed["items"]] == [device["serial"]], "filter by status and type")
status, listed, _ = cf.request("GET", "/v1/certificates?expires_before=2030-01-01T00:00:00Z", bearer=reader)
check(status == 200 and all(c["type"] in ("server", "device") for c in listed["items"]) and listed["items"],
      "filter by expiry")
check(cf.request("GET", "/v1/certificates?type=bogus", bearer=reader)[0] == 400, "bad type filter: 400")

# Two nodes on one PostgreSQL: a revocation through one is answered by the other's OCSP
# responder within 5 s, though it had cached the good answer; a revoked token likewise.
if DB_KIND == "postgres":
    node2 = cf.another_node()
    key2 = ec.generate_private_key(ec.SECP256R1())
    csr2 = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")])).sign(key2, hashes.SHA256())
    device2 = create("device", {"parent_fqdn": "iot.example.com",
                                "csr_pem": csr2.public_bytes(serialization.Encoding.PEM).decode()})
    write("device2.pem", device2["certificate_pem"])
    ocsp2 = ["openssl", "ocsp", "-issuer", path("inter.pem"), "-cert", path("device2.pem"), "-url",
             f"{node2.url}/ocsp", "-CAfile", path("root.pem"), "-no_nonce"]
    for _ in range(2):  # the second from node 2's cache
        rc, out = run(*ocsp2)
        check(rc == 0 and "device2.pem: good" in out, f"node 2's OCSP: good: {out}")
    status, _, _ = cf.request("POST", f"/v1/certificates/{device2['serial']}/revoke", body={"reason": "keyCompromise"},
                              bearer=T)
    check(status == 200, "revoked through node 1")
    wait_for("node 2's OCSP to answer revoked", lambda: "device2.pem: revoked" in run(*ocsp2)[1], timeout=5)
    # A token revoked through one node stops working on the other within auth.token_cache_ms.
    status, token, _ = cf.request("POST", "/v1/tokens", body={"role": "reader", "name": "two-nodes"}, bearer=T)
    check(status == 201, f"a token: {status}")
    for _ in range(2):  # the second from node 2's token cache
        check(node2.request("GET", "/v1/certificates?limit=1", bearer=token["token"])[0] == 200, "node 2 takes it")
    check(cf.request("DELETE", f"/v1/tokens/{token['id']}", bearer=T)[0] in (200, 204), "revoked through node 1")
    wait_for("node 2 to refuse the revoked token",
             lambda: node2.request("GET", "/v1/certificates?limit=1", bearer=token["token"])[0] == 401, timeout=3)
    node2.stop()

# Cascade: revoking the intermediate revokes everything below it.
status, out, _ = cf.request("POST", f"/v1/certificates/{inter['serial']}/revoke",
                            body={"reason": "cACompromise", "cascade": True}, bearer=T)
check(status == 200 and out["newly_revoked"] == 4, f"cascade revokes the intermediate and its 3 active leaves: {out}")
status, root_crl, _ = cf.request("GET", "/crl/example.com.crl", raw=True)
write("root.crl", root_crl)
rc, out = run("openssl", "crl", "-inform", "DER", "-in", path("root.crl"), "-noout", "-text")
check(inter["serial"].upper() in out.replace(":", ""), "the root's CRL lists the intermediate")
check("certificate.revoke" in str(cf.request("GET", "/v1/audit?action=certificate.revoke", bearer=T)[1]),
      "revocations are audited")

cf.stop()
if not failed():
    shutil.rmtree(files.dir, ignore_errors=True)
    shutil.rmtree(cf.work, ignore_errors=True)
finish(f"ca_e2e ({DB_KIND})")
