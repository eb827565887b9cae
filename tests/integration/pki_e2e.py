#!/usr/bin/python3
"""A real PKI end to end (issue 19): an offline root made by `openssl req -x509` signs
certfleet's intermediate CSR with `openssl x509 -req`; certfleet activates it, issues under it,
and openssl, GnuTLS certtool and Python cryptography verify the chain; its CRL is served.
Existing CAs are imported with `certfleet ca import` (PEM and PKCS#12), and bad ones refused.
Then CA keys on a SoftHSM2 token: made there (pkcs11-tool sees them never extractable), W1
issuance, W2 provisioning, CRL and OCSP signed through it; a wrong PIN or a missing token stops
`serve`; a token that goes away gives 503 and stores nothing, and service comes back with it.

usage: pki_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import datetime
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402
from harness import Certfleet, Files, run  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
files = Files("certfleet-pki-e2e-")
path, write = files.path, files.write
CA_EXT = ("[v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, digitalSignature, keyCertSign, cRLSign\n"
          "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n")
write("ca.ext", CA_EXT)
write("leaf.ext", "[v3_leaf]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n")


def ok(*cmd, what):
    rc, out = run(*cmd)
    check(rc == 0, f"{what}: {out[-800:]}")
    return out


def offline_root(name, cn):
    """A root made by openssl alone, as an offline ceremony would."""
    ok("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-days", "3650",
       "-subj", f"/O=Acme/CN={cn}", "-keyout", path(f"{name}.key"), "-out", path(f"{name}.pem"),
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
       what=f"openssl makes the root {cn}")


def sign_csr(csr_pem, issuer, out, extensions="v3_ca"):
    write(out + ".csr", csr_pem)
    ok("openssl", "x509", "-req", "-in", path(out + ".csr"), "-CA", path(issuer + ".pem"), "-CAkey",
       path(issuer + ".key"), "-CAcreateserial", "-days", "730", "-sha384", "-extfile", path("ca.ext" if
                                                                                             extensions == "v3_ca" else "leaf.ext"),
       "-extensions", extensions, "-out", path(out + ".pem"), what=f"openssl signs {out}")
    return open(path(out + ".pem")).read()


def device_csr():
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d")])).sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def verify_with_cryptography(chain):
    """Each certificate's signature checked with its issuer's public key, by Python cryptography."""
    certs = [x509.load_pem_x509_certificate(c.encode()) for c in chain]
    for child, parent in zip(certs, certs[1:]):
        key = parent.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(child.signature_hash_algorithm))
        else:
            key.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(),
                       child.signature_hash_algorithm)
    return True


def verify_everywhere(leaf_pem, inter_pem, root_file, what):
    write("v-leaf.pem", leaf_pem)
    write("v-inter.pem", inter_pem)
    write("v-chain.pem", leaf_pem + inter_pem)
    rc, out = run("openssl", "verify", "-CAfile", root_file, "-untrusted", path("v-inter.pem"), path("v-leaf.pem"))
    check(rc == 0 and ": OK" in out, f"{what}: openssl verify: {out}")
    rc, out = run("certtool", "--verify", "--load-ca-certificate", root_file, "--infile", path("v-chain.pem"))
    check(rc == 0 and "Chain verification output: Verified" in out, f"{what}: GnuTLS certtool --verify: {out[-600:]}")
    check(verify_with_cryptography([leaf_pem, inter_pem, open(root_file).read()]), f"{what}: Python cryptography")


# ================= the ceremony and imports, keys in files =================
cf = Certfleet(BINARY, DB_KIND, "pki-e2e")
cf.init()
cf.start()

offline_root("offline", "Acme Offline Root")
pending = cf.api("POST", "/v1/cas/intermediate/csr", {"fqdn": "iot.example.com", "parent_hint": "Acme Offline Root",
                                                      "key_type": "ec-p384"}, expect=201)
check(pending["status"] == "pending" and "BEGIN CERTIFICATE REQUEST" in pending["csr_pem"]
      and pending["key_backend"] == ("db" if DB_KIND == "postgres" else "file"),
      f"a pending intermediate and its CSR, its key in the default backend of the store: {pending}")
ok("openssl", "req", "-verify", "-noout", "-in", write("inter.csr", pending["csr_pem"]), what="the CSR verifies")
cf.api("POST", "/v1/cas/intermediate/csr", {"fqdn": "iot.example.com"}, expect=409)
cf.api("POST", "/v1/cas/intermediate/csr", {"fqdn": "example.com"}, expect=400)
listed = cf.api("GET", "/v1/cas/pending")["items"]
check([p["fqdn"] for p in listed] == ["iot.example.com"], f"GET /v1/cas/pending: {listed}")
key, csr = device_csr()
cf.api("POST", "/v1/certificates/device", {"parent_fqdn": "iot.example.com", "csr_pem": csr}, expect=404)

# What the offline root signs, and what activation refuses.
other_key, other_csr = device_csr()
wrong_key = sign_csr(other_csr, "offline", "wrong-key")
out = cf.api("POST", "/v1/cas/iot.example.com/certificate", {"certificate_pem": wrong_key,
                                                             "chain_pem": open(path("offline.pem")).read()}, expect=400)
check("not for the key" in out["error"]["message"], f"another key's certificate is refused: {out}")
not_ca = sign_csr(pending["csr_pem"], "offline", "not-ca", extensions="v3_leaf")
out = cf.api("POST", "/v1/cas/iot.example.com/certificate", {"certificate_pem": not_ca,
                                                             "chain_pem": open(path("offline.pem")).read()}, expect=400)
check("not a CA certificate" in out["error"]["message"], f"a non-CA certificate is refused: {out}")
inter_pem = sign_csr(pending["csr_pem"], "offline", "inter")
out = cf.api("POST", "/v1/cas/iot.example.com/certificate", {"certificate_pem": inter_pem}, expect=400)
check("does not reach a root" in out["error"]["message"], f"no chain: refused: {out}")
cf.api("POST", "/v1/cas/iot.example.com/certificate", {"certificate_pem": "junk"}, expect=400)
cf.api("POST", "/v1/cas/nope.example.com/certificate", {"certificate_pem": inter_pem}, expect=404)
cf.api("POST", "/v1/cas/iot.example.com/certificate", {"certificate_pem": inter_pem}, bearer="cf_bogus", expect=401)

activated = cf.api("POST", "/v1/cas/iot.example.com/certificate",
                   {"certificate_pem": inter_pem, "chain_pem": open(path("offline.pem")).read()}, expect=201)
certs = activated["certificates"]
check([(c["fqdn"], c["type"], c["parent_fqdn"]) for c in certs] ==
      [("acme-offline-root", "root", "Root"), ("iot.example.com", "intermediate", "acme-offline-root")],
      f"the external root and the activated intermediate are in the inventory: {certs}")
check(cf.api("GET", "/v1/cas/pending")["items"] == [], "nothing pending any more")
roots = cf.api("GET", "/v1/certificates?type=root")["items"]
check([r["fqdn"] for r in roots] == ["acme-offline-root"], f"the inventory lists the external root: {roots}")

device = cf.api("POST", "/v1/certificates/device", {"parent_fqdn": "iot.example.com", "csr_pem": csr}, expect=201)
check(device["chain_pem"] == inter_pem.strip() + "\n" + open(path("offline.pem")).read().strip() + "\n"
      or device["chain_pem"].count("BEGIN CERTIFICATE") == 2, "the chain goes up to the offline root")
verify_everywhere(device["certificate_pem"], certs[1]["certificate_pem"], path("offline.pem"), "device under it")
server = cf.api("POST", "/v1/certificates/server", {"fqdn": "mqtt.iot.example.com", "parent_fqdn": "iot.example.com"},
                expect=201)
verify_everywhere(server["certificate_pem"], certs[1]["certificate_pem"], path("offline.pem"), "server under it")
out = cf.api("POST", "/v1/certificates/intermediate", {"fqdn": "more.example.com", "parent_fqdn": "acme-offline-root"},
             expect=409)
check("external" in out["error"]["message"], f"nothing is issued under the external root: {out}")
# The offline root signed it without a pathLen (CA_EXT): still no intermediate under it.
out = cf.api("POST", "/v1/certificates/intermediate", {"fqdn": "sub.iot.example.com", "parent_fqdn": "iot.example.com"},
             expect=400)
check("is an intermediate" in out["error"]["message"], f"no intermediate under an intermediate: {out}")

cf.api("POST", f"/v1/certificates/{device['serial']}/revoke", {"reason": "keyCompromise"})
status, der, _ = cf.request("GET", "/crl/iot.example.com.crl", raw=True)
check(status == 200, f"the intermediate's CRL is served: {status}")
write("inter.crl", der)
write("crl-ca.pem", certs[1]["certificate_pem"] + open(path("offline.pem")).read())
out = ok("openssl", "crl", "-inform", "DER", "-in", path("inter.crl"), "-CAfile", path("crl-ca.pem"), "-noout",
         "-text", what="openssl crl verifies the intermediate's CRL")
check("verify OK" in out and device["serial"].upper().lstrip("0") in out.replace(":", "").upper(),
      f"the CRL is signed by the intermediate and lists the revoked device: {out[:600]}")
status, out, _ = cf.request("GET", "/crl/acme-offline-root.crl")
check(status == 404 and "external" in out["error"]["message"], f"no CRL is made for the external root: {out}")

# ---- import ----
offline_root("imported", "imported.example.org")
imported = cf.cli("ca", "import", "--cert", path("imported.pem"), "--key", path("imported.key")).stdout
check("imported root imported.example.org" in imported, f"ca import of an openssl root: {imported}")
server = cf.api("POST", "/v1/certificates/server", {"fqdn": "www.imported.example.org",
                                                    "parent_fqdn": "imported.example.org"}, expect=201)
rc, out = run("openssl", "verify", "-CAfile", path("imported.pem"), write("s.pem", server["certificate_pem"]))
check(rc == 0, f"a certificate issued under the imported root verifies with openssl: {out}")
refused = cf.cli("ca", "import", "--cert", path("imported.pem"), "--key", path("imported.key"), expect=1).stderr
check("here already" in refused, f"importing the same CA again is refused: {refused}")
refused = cf.cli("ca", "import", "--cert", path("imported.pem"), "--key", path("offline.key"), expect=1).stderr
check("does not match" in refused, f"a key that does not match is refused: {refused}")
# An intermediate as a PKCS#12 file, its issuer found in the inventory; then a non-CA and an expired CA.
ok("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
   "/CN=sub.imported.example.org", "-keyout", path("sub.key"), "-out", path("sub.csr"), what="openssl makes a CSR")
sign_csr(open(path("sub.csr")).read(), "imported", "sub")
ok("openssl", "pkcs12", "-export", "-in", path("sub.pem"), "-inkey", path("sub.key"), "-passout", "pass:s3cret",
   "-out", path("sub.p12"), what="openssl pkcs12 -export")
write("p12.pass", "s3cret\n")
out = cf.cli("ca", "import", "--pkcs12", path("sub.p12"), "--password-file", path("p12.pass")).stdout
check("imported intermediate sub.imported.example.org" in out and "parent imported.example.org" in out,
      f"a PKCS#12 intermediate under the imported root: {out}")
sign_csr(open(path("sub.csr")).read(), "imported", "leaf", extensions="v3_leaf")
refused = cf.cli("ca", "import", "--cert", path("leaf.pem"), "--key", path("sub.key"), "--fqdn", "leaf.example.org",
                 expect=1).stderr
check("not a CA certificate" in refused, f"a non-CA certificate is refused: {refused}")
old_key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example.net")])
now = datetime.datetime.utcnow()
expired = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(old_key.public_key())
           .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=800))
           .not_valid_after(now - datetime.timedelta(days=1))
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
           .sign(old_key, hashes.SHA256()))
write("expired.pem", expired.public_bytes(serialization.Encoding.PEM))
write("expired.key", old_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
refused = cf.cli("ca", "import", "--cert", path("expired.pem"), "--key", path("expired.key"), expect=1).stderr
check("has expired" in refused, f"an expired CA is refused: {refused}")
audit = cf.api("GET", "/v1/audit?limit=200")["items"]
actions = [a["action"] for a in audit]
for action in ("ca.csr", "ca.external", "ca.activate", "ca.import"):
    check(action in actions, f"the audit log has {action}")
cf.stop()

# ================= CA keys on a SoftHSM2 token =================
hsm = files.path("softhsm")
os.makedirs(os.path.join(hsm, "tokens"))
conf = write("softhsm2.conf", f"directories.tokendir = {hsm}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
hsm_env = {"SOFTHSM2_CONF": conf}
os.environ["SOFTHSM2_CONF"] = conf  # for pkcs11-tool
subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "certfleet-ca", "--pin", "8642", "--so-pin",
                "97531"], env=dict(os.environ, **hsm_env), check=True, capture_output=True)
pin_file = write("pin", "8642\n")
os.chmod(pin_file, 0o600)
write("wrong-pin", "1111\n")
os.chmod(path("wrong-pin"), 0o600)
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
hsm_env.update({"CERTFLEET_PKCS11_MODULE": MODULE, "CERTFLEET_PKCS11_TOKEN_LABEL": "certfleet-ca",
                "CERTFLEET_PKCS11_PIN_FILE": pin_file, "CERTFLEET_CA_KEY_BACKEND": "pkcs11"})
hs = Certfleet(BINARY, DB_KIND, "pki-e2e-hsm", extra_env=hsm_env)
hs.init()
hs.env["CERTFLEET_PKCS11_PIN_FILE"] = path("wrong-pin")
out = hs.cli("serve", expect=1).stderr
check("wrong PIN" in out and "8642" not in out and "1111" not in out, f"a wrong PIN stops serve, PIN unsaid: {out}")
hs.env["CERTFLEET_PKCS11_PIN_FILE"] = pin_file
hs.env["CERTFLEET_PKCS11_TOKEN_LABEL"] = "no-such-token"
out = hs.cli("serve", expect=1).stderr
check("no PKCS#11 token labelled 'no-such-token'" in out, f"a missing token stops serve: {out}")
hs.env["CERTFLEET_PKCS11_TOKEN_LABEL"] = "certfleet-ca"
hs.start()

root = hs.api("POST", "/v1/certificates/root", {"fqdn": "example.com", "key_type": "rsa-3072"}, expect=201)
inter = hs.api("POST", "/v1/certificates/intermediate", {"fqdn": "iot.example.com"}, expect=201)
hs.api("POST", "/v1/certificates/intermediate", {"fqdn": "bad.example.com", "key_type": "ed25519"}, expect=400)
write("hsm-root.pem", root["certificate_pem"])
listing = ok("pkcs11-tool", "--module", MODULE, "--token-label", "certfleet-ca", "--login", "--pin", "8642",
             "--list-objects", "--type", "privkey", what="pkcs11-tool lists the token's private keys")
check(listing.count("Private Key Object") == 2, f"both CA keys are on the token: {listing}")
check(listing.count("never extractable") == 2 and listing.count("sensitive") >= 2,
      f"the CA keys are sensitive and never extractable: {listing}")
check(not any(f for f in os.listdir(os.path.join(hs.data, "keys"))) if os.path.isdir(os.path.join(hs.data, "keys"))
      else True, "no CA key file is written")

key, csr = device_csr()
server = hs.api("POST", "/v1/certificates/server", {"fqdn": "mqtt.iot.example.com"}, expect=201)
verify_everywhere(server["certificate_pem"], inter["certificate_pem"], path("hsm-root.pem"), "W1 through the token")
# W2: a registered device key, a template, and a device provisioning itself.
hs.api("POST", "/v1/provisioning-templates", {"name": "t", "ca_fqdn": "iot.example.com", "endpoint": "mqtts://x",
                                              "batches": ["b"]},
       expect=201)
pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
hs.api("POST", "/v1/devices/keys", [{"device_id": "dev-1", "public_key_pem": pub.decode(), "batch": "b"}])
csr_dev = x509.CertificateSigningRequestBuilder().subject_name(
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1")])).sign(key, hashes.SHA256())
status, prov, _ = hs.request("POST", "/v1/provision", headers={
    "device-csr": csr_dev.public_bytes(serialization.Encoding.PEM).decode().replace("\n", "\\n")})
check(status == 200, f"W2 provisioning through the token: {status} {prov}")
verify_everywhere(prov["certificate_pem"], inter["certificate_pem"], path("hsm-root.pem"), "W2 through the token")
hs.api("POST", f"/v1/certificates/{server['serial']}/revoke", {"reason": "superseded"})
status, der, _ = hs.request("GET", "/crl/iot.example.com.crl", raw=True)
write("hsm.crl", der)
write("hsm-ca.pem", inter["certificate_pem"] + root["certificate_pem"])
out = ok("openssl", "crl", "-inform", "DER", "-in", path("hsm.crl"), "-CAfile", path("hsm-ca.pem"), "-noout",
         what="the CRL signed on the token verifies")
check("verify OK" in out, f"openssl crl: {out}")
write("hsm-inter.pem", inter["certificate_pem"])
write("prov.pem", prov["certificate_pem"])
rc, out = run("openssl", "ocsp", "-issuer", path("hsm-inter.pem"), "-cert", path("prov.pem"), "-url",
              f"{hs.url}/ocsp", "-CAfile", path("hsm-ca.pem"))
check(rc == 0 and "prov.pem: good" in out and "Response verify OK" in out, f"OCSP signed on the token: {out}")

# The token goes away mid-run: 503, nothing stored; back: issuance works again.
before = len(hs.api("GET", "/v1/certificates?limit=1000")["items"])
shutil.move(os.path.join(hsm, "tokens"), os.path.join(hsm, "away"))
status, out, _ = hs.request("POST", "/v1/certificates/server", body={"fqdn": "down.iot.example.com"}, bearer=hs.token)
check(status == 503, f"issuance without the token: 503: {status} {out}")
check("PKCS#11 token 'certfleet-ca'" in open(hs.log_path).read(), "the log says the token failed")
check(len(hs.api("GET", "/v1/certificates?limit=1000")["items"]) == before, "nothing was stored")
shutil.move(os.path.join(hsm, "away"), os.path.join(hsm, "tokens"))
back = hs.api("POST", "/v1/certificates/server", {"fqdn": "down.iot.example.com"}, expect=201)
verify_everywhere(back["certificate_pem"], inter["certificate_pem"], path("hsm-root.pem"), "after the token is back")

# An imported CA's key goes onto the token too.
out = hs.cli("ca", "import", "--cert", path("imported.pem"), "--key", path("imported.key"), "--key-backend",
             "pkcs11").stdout
check("imported root imported.example.org" in out, f"ca import onto the token: {out}")
listing = ok("pkcs11-tool", "--module", MODULE, "--token-label", "certfleet-ca", "--login", "--pin", "8642",
             "--list-objects", "--type", "privkey", what="pkcs11-tool lists the token's private keys")
access = [line for line in listing.splitlines() if "Access:" in line]
check(listing.count("Private Key Object") == 3 and all("sensitive" in a for a in access)
      and not any("extractable" in a.replace("never extractable", "") for a in access),
      f"the imported key is on the token, sensitive, not extractable: {listing}")
check(listing.count("Usage:      sign\n") == 3, f"CA keys only sign: {listing}")
hs.stop()

# ---- certfleet migrate-keys: CA keys of key_dir moved into the database (PostgreSQL) ----
if DB_KIND == "postgres":
    old = Certfleet(BINARY, DB_KIND, "pki-e2e-keys", extra_env={"CERTFLEET_CA_KEY_BACKEND": "file"})
    old.init()
    old.start()
    old.api("POST", "/v1/certificates/root", {"fqdn": "example.org", "organization": "Acme"}, expect=201)
    old.api("POST", "/v1/certificates/intermediate", {"fqdn": "keys.example.org", "parent_fqdn":
                                                      "example.org", "organization": "Acme"}, expect=201)
    key_dir = os.path.join(old.data, "keys")
    check(len(os.listdir(key_dir)) == 2, "with ca.key_backend file the CA keys are files")
    out = old.cli("migrate-keys")
    check("moved the key of example.org" in out.stdout and "moved the key of keys.example.org" in out.stdout,
          f"migrate-keys moves both: {out.stdout} {out.stderr}")
    check("0 CA key(s) moved" in old.cli("migrate-keys").stderr, "a second run has nothing to move")
    old.stop()
    shutil.move(key_dir, key_dir + ".old")  # no node reads the files any more
    old.start()
    old.api("POST", "/v1/certificates/server", {"fqdn": "www.keys.example.org",
                                                "parent_fqdn": "keys.example.org"}, expect=201)
    audit = old.api("GET", "/v1/audit?action=ca.key.move")
    check(len(audit["items"]) == 2, f"each move is audited: {audit}")
    old.stop()
finish("pki_e2e")
