#!/usr/bin/python3
"""EST (RFC 7030) end to end with curl and openssl as the RFC's examples use them: cacerts,
csrattrs, simpleenroll by registered key, by one-time secret (HTTP Basic) and by factory
certificate (imported from a Microchip-format manifest, or from a manufacturer CA),
simplereenroll with the issued certificate, serverkeygen, the tls-unique binding (Python's
ssl), approval with 202 and Retry-After, and bad input. Issued certificates verify with
openssl and GnuTLS certtool; the things carry the template's type and groups.

usage: est_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import base64
import datetime
import email
import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet, Files, run  # noqa: E402
from servers import SOURCE  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, utils  # noqa: E402
from cryptography.x509.oid import AttributeOID, NameOID  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
FIXTURES = os.path.join(SOURCE, "..", "shared", "fixtures", "thingpress")
cf = Certfleet(BINARY, DB_KIND, "est-e2e", extra_env={"CERTFLEET_ENROLL_RETRY_AFTER_SECONDS": "7"})
cf.init()
cf.start()
files = Files("certfleet-est-e2e-")
path, write = files.path, files.write
TLS_CA = os.path.join(cf.data, "tls", "ca.pem")
EST = f"{cf.url}/.well-known/est"


def api(method, route, body=None, expect=200, **kw):
    status, out, _ = cf.request(method, route, body=body, bearer=kw.pop("bearer", cf.token), **kw)
    check(status == expect, f"{method} {route}: {status}, wanted {expect}: {str(out)[:400]}")
    return out


def curl(url, *args, data=None):
    """curl as RFC 7030's examples: the status, the headers and the body."""
    cmd = ["curl", "-sS", "--cacert", TLS_CA, "-D", "-", *args, url]
    if data is not None:
        cmd[1:1] = ["-H", "Content-Type: application/pkcs10", "--data-binary", "@" + data]
    p = subprocess.run(cmd, capture_output=True, timeout=60)
    check(p.returncode == 0, f"curl {url}: {p.stderr.decode()}")
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def sh(*cmd, stdin=None):
    p = subprocess.run(cmd, capture_output=True, input=stdin, timeout=60)
    check(p.returncode == 0, f"{' '.join(cmd)}: {p.stderr.decode()[-400:]}")
    return p.stdout


def openssl_key(name):
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path(name + ".key"))
    return path(name + ".key")


def openssl_csr(key, cn, name):
    """A base64 DER CSR as RFC 7030 sends it, made by openssl."""
    der = sh("openssl", "req", "-new", "-key", key, "-subj", f"/CN={cn}", "-outform", "DER")
    return write(name + ".b64", base64.encodebytes(der))


def certs_of(pkcs7_b64, name):
    """The certificates of a base64 certs-only PKCS#7 answer, as openssl prints them."""
    der = base64.b64decode(pkcs7_b64)
    return write(name, sh("openssl", "pkcs7", "-inform", "DER", "-print_certs", stdin=der))


def enroll(op, csr_file, *args, label="", expect=200):
    status, headers, body = curl(f"{EST}{'/' + label if label else ''}/{op}", *args, data=csr_file)
    check(status == expect, f"{op} {label or '(default)'}: {status}, wanted {expect}: {body[:300]}")
    return headers, body


def verify(cert_file, what):
    rc, out = run("openssl", "verify", "-CAfile", path("root.pem"), "-untrusted", path("inter.pem"),
                  "-purpose", "sslclient", cert_file)
    check(rc == 0 and ": OK" in out, f"openssl verifies {what}: {out}")
    write("gnutls-chain.pem", open(cert_file).read() + open(path("inter.pem")).read())
    rc, out = run("certtool", "--verify", "--load-ca-certificate", path("root.pem"), "--infile",
                  path("gnutls-chain.pem"))
    check(rc == 0 and "Chain verification output: Verified" in out, f"certtool verifies {what}: {out[-300:]}")


def cn_of(cert_file):
    cert = x509.load_pem_x509_certificate(open(cert_file, "rb").read())
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, cert


# ---- the CA, the registry's template, the profiles ----
api("POST", "/v1/certificates/root", {"fqdn": "example.com", "organization": "Acme"}, expect=201)
api("POST", "/v1/certificates/intermediate", {"fqdn": "iot.example.com", "organization": "Acme"}, expect=201)
write("root.pem", api("GET", "/v1/certificates/example.com")["certificate_pem"])
write("inter.pem", api("GET", "/v1/certificates/iot.example.com")["certificate_pem"])
api("POST", "/v1/thing-types", {"name": "meter"}, expect=201)
api("POST", "/v1/thing-groups", {"name": "grid"}, expect=201)
api("POST", "/v1/provisioning-templates", {
    "name": "est-line", "ca_fqdn": "iot.example.com", "endpoint": "mqtts://localhost:8883", "thing_type": "meter",
    "thing_groups": ["grid"], "policies": [{"name": "meter-connect", "document": {"Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}}]}, expect=201)
ALL = ["registered_key", "secret", "factory_certificate", "reenroll"]
out = api("PUT", "/v1/enrollment/profiles/default", {"template": "est-line", "auth": ALL}, expect=201)
check(out["auth"] == ALL and out["key_type"] == "ec-p256" and out["approval"] is False, f"profile: {out}")
api("PUT", "/v1/enrollment/profiles/default", {"template": "est-line", "auth": ALL})  # replaced: 200
api("PUT", "/v1/enrollment/profiles/Bad_Label", {"template": "est-line", "auth": ALL}, expect=400)
api("PUT", "/v1/enrollment/profiles/x", {"template": "nope", "auth": ALL}, expect=400)
api("PUT", "/v1/enrollment/profiles/x", {"template": "est-line", "auth": ["password"]}, expect=400)
api("PUT", "/v1/enrollment/profiles/x", {"template": "est-line", "auth": ALL}, bearer=None, expect=401)
check([p["label"] for p in api("GET", "/v1/enrollment/profiles")["items"]] == ["default"], "profiles listed")

# ---- cacerts and csrattrs (RFC 7030 4.1, 4.5) ----
status, headers, body = curl(f"{EST}/cacerts")
check(status == 200 and headers["content-type"] == "application/pkcs7-mime" and
      headers.get("content-transfer-encoding") == "base64", f"cacerts: {status} {headers}")
cacerts = open(certs_of(body, "cacerts.pem")).read()
check("CN = iot.example.com" in cacerts and "CN = example.com" in cacerts, f"cacerts holds the chain: {cacerts}")
status, headers, body = curl(f"{EST}/csrattrs")
check(status == 200 and headers["content-type"] == "application/csrattrs", f"csrattrs: {status} {headers}")
attrs = sh("openssl", "asn1parse", "-inform", "DER", stdin=base64.b64decode(body)).decode()
check("challengePassword" in attrs and "prime256v1" in attrs and "ecdsa-with-SHA256" in attrs,
      f"csrattrs asks for the channel binding and the key type: {attrs}")
status, _, _ = curl(f"{EST}/nope/cacerts")
check(status == 404, f"a label that does not exist: 404, got {status}")

# ---- simpleenroll by registered key (W2's authorizer) ----
key1 = openssl_key("dev-1")
pub1 = sh("openssl", "pkey", "-in", key1, "-pubout").decode()
other_pub = sh("openssl", "pkey", "-in", openssl_key("other"), "-pubout").decode()
api("POST", "/v1/devices/keys", [{"device_id": "dev-1", "public_key_pem": pub1, "batch": "b-7"},
                                 {"device_id": "dev-2", "public_key_pem": other_pub, "batch": "b-7"},
                                 {"device_id": "dev-3", "public_key_pem": pub1, "batch": "b-7"}])
headers, body = enroll("simpleenroll", openssl_csr(key1, "dev-1", "csr-1"))
check(headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only", f"enroll answer: {headers}")
dev1_cert = certs_of(body, "dev-1.pem")
cn, cert = cn_of(dev1_cert)
check(cn == "dev-1", f"the certificate's CN is the device id: {cn}")
verify(dev1_cert, "the registered-key enrollment")
thing = api("GET", "/v1/things/dev-1")
check(thing["thing_type"] == "meter" and thing["thing_groups"] == ["grid"] and
      thing["certificates"][0]["status"] == "active" and
      [p["name"] for p in thing["effective_policies"]] == ["meter-connect"],
      f"the thing as the template makes it (type, groups, policies): {thing}")
check(api("GET", "/v1/devices/dev-1")["status"] == "provisioned", "the device is provisioned")
enroll("simpleenroll", openssl_csr(key1, "dev-404", "csr-404"), expect=404)
enroll("simpleenroll", openssl_csr(key1, "dev-2", "csr-2"), expect=403)  # not dev-2's key
api("POST", "/v1/devices/dev-3/disable")
enroll("simpleenroll", openssl_csr(key1, "dev-3", "csr-3"), expect=403)

# ---- simpleenroll by one-time secret (HTTP Basic) ----
minted = api("POST", "/v1/enrollment/secrets", {"profile": "default", "device_id": "dev-s1"}, expect=201)["items"]
check(len(minted) == 1 and len(minted[0]["secret"]) >= 32 and minted[0]["device_id"] == "dev-s1", f"{minted}")
sid, secret = minted[0]["id"], minted[0]["secret"]
keys1 = openssl_key("dev-s1")
enroll("simpleenroll", openssl_csr(keys1, "dev-s1", "csr-s1"), "-u", f"{sid}:wrong", expect=401)
enroll("simpleenroll", openssl_csr(keys1, "dev-zz", "csr-zz"), "-u", f"{sid}:{secret}", expect=403)  # another device
_, body = enroll("simpleenroll", openssl_csr(keys1, "dev-s1", "csr-s1"), "-u", f"{sid}:{secret}")
check(cn_of(certs_of(body, "dev-s1.pem"))[0] == "dev-s1", "the secret's device enrolled")
enroll("simpleenroll", openssl_csr(keys1, "dev-s1", "csr-s1"), "-u", f"{sid}:{secret}", expect=401)  # used
listed = api("GET", "/v1/enrollment/secrets?profile=default")["items"]
check(listed[0]["used_by"] == "dev-s1" and "secret" not in listed[0], f"secrets list without the secret: {listed}")
batch = api("POST", "/v1/enrollment/secrets", {"profile": "default", "batch": "b-9", "count": 2, "ttl_hours": 1},
            expect=201)["items"]
check(len(batch) == 2 and batch[0]["batch"] == "b-9", f"batch secrets: {batch}")
enroll("simpleenroll", openssl_csr(keys1, "dev-1", "csr-b0"), "-u", f"{batch[0]['id']}:{batch[0]['secret']}",
       expect=403)  # a batch secret does not take over an enrolled device
_, body = enroll("simpleenroll", openssl_csr(keys1, "dev-b1", "csr-b1"), "-u", f"{batch[0]['id']}:{batch[0]['secret']}")
check(cn_of(certs_of(body, "dev-b1.pem"))[0] == "dev-b1", "a batch secret enrolls a new device")
api("DELETE", f"/v1/enrollment/secrets/{batch[1]['id']}", expect=204)
enroll("simpleenroll", openssl_csr(keys1, "dev-b2", "csr-b2"), "-u", f"{batch[1]['id']}:{batch[1]['secret']}",
       expect=401)  # revoked
api("POST", "/v1/enrollment/secrets", {"profile": "default"}, expect=400)
api("POST", "/v1/enrollment/secrets", {"profile": "nope", "device_id": "d"}, expect=400)

# ---- factory certificates: a Microchip-format manifest of our own factory, imported by W3 ----
sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
   "-subj", "/O=Factory/CN=Factory CA", "-keyout", path("fca.key"), "-out", path("fca.pem"),
   "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")


def factory_device(uid):
    key = openssl_key("idev-" + uid)
    sh("openssl", "req", "-new", "-key", key, "-subj", f"/O=Factory/CN={uid}", "-out", path(f"idev-{uid}.csr"))
    sh("openssl", "x509", "-req", "-in", path(f"idev-{uid}.csr"), "-CA", path("fca.pem"), "-CAkey", path("fca.key"),
       "-days", "30", "-set_serial", str(int(hashlib.sha256(uid.encode()).hexdigest()[:12], 16)),
       "-extfile", write("ext.cnf", "extendedKeyUsage=clientAuth\n"), "-out", path(f"idev-{uid}.pem"))
    return key, path(f"idev-{uid}.pem")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


signer_key = ec.generate_private_key(ec.SECP256R1())
signer = (x509.CertificateBuilder()
          .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Manifest Signer")]))
          .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Manifest Signer")]))
          .public_key(signer_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(x509.load_pem_x509_certificate(open(path("fca.pem"), "rb").read()).not_valid_before)
          .not_valid_after(x509.load_pem_x509_certificate(open(path("fca.pem"), "rb").read()).not_valid_after)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False)
          .sign(signer_key, hashes.SHA256()))
signer_der = signer.public_bytes(serialization.Encoding.DER)
api("POST", "/v1/imports/verifiers", {"certificate_pem": signer.public_bytes(serialization.Encoding.PEM).decode()},
    expect=201)


def manifest_entry(uid, cert_file):
    """One entry as Microchip's manifests have them: a flattened JWS signed by the signer."""
    cert_der = x509.load_pem_x509_certificate(open(cert_file, "rb").read()).public_bytes(serialization.Encoding.DER)
    ca_der = x509.load_pem_x509_certificate(open(path("fca.pem"), "rb").read()).public_bytes(
        serialization.Encoding.DER)
    ski = signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    protected = b64url(json.dumps({"alg": "ES256", "kid": b64url(ski), "typ": "JWT",
                                   "x5t#S256": b64url(hashlib.sha256(signer_der).digest())}).encode())
    payload = b64url(json.dumps({"version": 1, "model": "ATECC608C", "uniqueId": uid, "publicKeySet": {"keys": [
        {"kid": "0", "kty": "EC", "crv": "P-256",
         "x5c": [base64.b64encode(cert_der).decode(), base64.b64encode(ca_der).decode()]}]}}).encode())
    r, s = utils.decode_dss_signature(signer_key.sign(f"{protected}.{payload}".encode(), ec.ECDSA(hashes.SHA256())))
    return {"payload": payload, "protected": protected, "header": {"uniqueId": uid},
            "signature": b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}


UID = "0123f2408ea1fcf2aa"
ikey, icert = factory_device(UID)
api("POST", "/v1/policies", {"name": "factory-connect", "document": {"Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}}, expect=201)
api("POST", "/v1/profiles", {"name": "meters", "thing_type": "meter", "policies": ["factory-connect"]}, expect=201)


def import_manifest(data):
    started = api("POST", "/v1/imports?supplier=microchip&profile=meters", data, expect=202,
                  headers={"Content-Type": "application/octet-stream"})
    return wait_for("the import", lambda: (lambda imp: imp if imp["state"] in ("done", "failed") else None)(
        api("GET", f"/v1/imports/{started['id']}")))


imp = import_manifest(json.dumps([manifest_entry(UID, icert)]).encode())
check(imp["state"] == "done" and imp["counts"]["imported"] == 1, f"our factory's manifest imported: {imp}")
api("PUT", "/v1/enrollment/profiles/factory", {"template": "est-line", "auth": ["factory_certificate", "reenroll"]},
    expect=201)
lkey = openssl_key("ldev")
_, body = enroll("simpleenroll", openssl_csr(lkey, UID, "csr-ldev"), "--cert", icert, "--key", ikey, label="factory")
ldev = certs_of(body, "ldev.pem")
check(cn_of(ldev)[0] == UID, "the factory certificate's thing gets its operational certificate")
verify(ldev, "the factory-certificate enrollment")
thing = api("GET", f"/v1/things/{UID}")
check([c.get("source") for c in thing["certificates"]].count("microchip") == 1 and len(thing["certificates"]) == 2,
      f"the thing has its factory and its operational certificate: {thing}")
enroll("simpleenroll", openssl_csr(lkey, "someone-else", "csr-else"), "--cert", icert, "--key", ikey,
       label="factory", expect=403)  # a CSR for another device
# A device of the same factory that no manifest brought: refused, until its CA is a profile's anchor.
UID2 = "0123f2408ea1fcf2bb"
ikey2, icert2 = factory_device(UID2)
enroll("simpleenroll", openssl_csr(lkey, UID2, "csr-u2"), "--cert", icert2, "--key", ikey2, label="factory",
       expect=401)
api("PUT", "/v1/enrollment/profiles/factory-ca", {"template": "est-line", "auth": ["factory_certificate"],
                                                   "factory_anchors": open(path("fca.pem")).read()}, expect=201)
_, body = enroll("simpleenroll", openssl_csr(lkey, UID2, "csr-u2"), "--cert", icert2, "--key", ikey2,
                 label="factory-ca")
check(cn_of(certs_of(body, "ldev2.pem"))[0] == UID2, "a certificate from a manufacturer anchor identifies its thing")
# Not a device registered with its key (W2) that has no thing yet: the manufacturer vouches for
# the name, not for the key or the template the operator chose for it.
UID4 = "0123f2408ea1fcf2dd"
api("POST", "/v1/devices/keys", [{"device_id": UID4, "public_key_pem": other_pub, "batch": "b-7"}])
ikey4, icert4 = factory_device(UID4)
_, body = enroll("simpleenroll", openssl_csr(lkey, UID4, "csr-u4"), "--cert", icert4, "--key", ikey4,
                 label="factory-ca", expect=403)
check("registered with its key" in str(body), f"refused as a registered device: {body}")

# A factory certificate that has expired, though its manifest was imported: refused.
UID3 = "0123f2408ea1fcf2cc"
fca_key = serialization.load_pem_private_key(open(path("fca.key"), "rb").read(), None)
fca = x509.load_pem_x509_certificate(open(path("fca.pem"), "rb").read())
old_key = ec.generate_private_key(ec.SECP256R1())
write("idev-old.key", old_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
expired = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, UID3)]))
           .issuer_name(fca.subject).public_key(old_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(datetime.datetime(2020, 1, 1)).not_valid_after(datetime.datetime(2021, 1, 1))
           .sign(fca_key, hashes.SHA256()))
write("idev-old.pem", expired.public_bytes(serialization.Encoding.PEM))
imp = import_manifest(json.dumps([manifest_entry(UID3, path("idev-old.pem"))]).encode())
check(imp["state"] == "done" and imp["counts"]["imported"] == 1, f"the expired certificate's manifest: {imp}")
enroll("simpleenroll", openssl_csr(lkey, UID3, "csr-old"), "--cert", path("idev-old.pem"), "--key",
       path("idev-old.key"), label="factory", expect=403)

# A factory certificate retired with its device (deleted while disabled): refused too, or it
# would enroll the deleted device again and get a certificate brokers admit.
UID5 = "0123f2408ea1fcf2ee"
ikey5, icert5 = factory_device(UID5)
imp = import_manifest(json.dumps([manifest_entry(UID5, icert5)]).encode())
check(imp["state"] == "done" and imp["counts"]["imported"] == 1, f"UID5's manifest: {imp}")
api("POST", "/v1/devices/keys", [{"device_id": UID5, "public_key_pem": other_pub, "batch": "b-7"}])
api("POST", f"/v1/devices/{UID5}/disable", {})
deleted = api("DELETE", f"/v1/devices/{UID5}")
check(deleted["deleted"] is True, f"deleted while disabled: {deleted}")
check([c["attachment"] for c in api("GET", f"/v1/things/{UID5}")["certificates"]] == ["retired"],
      "its factory certificate is retired")
_, body = enroll("simpleenroll", openssl_csr(lkey, UID5, "csr-u5"), "--cert", icert5, "--key", ikey5, label="factory",
                 expect=403)
check("retired" in str(body), f"refused as retired: {body}")

# The real Microchip fixture: the fingerprints W3 keeps are the SHA-256 of each x5c[0], what EST
# compares a TLS client certificate's DER with.
real = json.load(open(os.path.join(FIXTURES, "ECC608C-TNGTLSU-B.json")))
for name in sorted(os.listdir(os.path.join(FIXTURES, "mchp_verifiers"))):
    api("POST", "/v1/imports/verifiers", open(os.path.join(FIXTURES, "mchp_verifiers", name), "rb").read(),
        expect=201, headers={"Content-Type": "application/x-pem-file"})
imp = import_manifest(json.dumps(real).encode())
check(imp["state"] == "done" and imp["counts"]["imported"] == len(real), f"the Microchip fixture imported: {imp}")
entry = real[3]
payload = json.loads(base64.urlsafe_b64decode(entry["payload"] + "=" * (-len(entry["payload"]) % 4)))
x5c0 = base64.b64decode(payload["publicKeySet"]["keys"][0]["x5c"][0])
fixture_thing = api("GET", f"/v1/things/{payload['uniqueId']}")
check(fixture_thing["certificates"][0]["fingerprint"] == hashlib.sha256(x5c0).hexdigest(),
      f"the imported fingerprint is the SHA-256 of the device certificate's DER: {fixture_thing['certificates']}")

# ---- simplereenroll with the current certificate; the old one is superseded ----
key1b = openssl_key("dev-1b")
_, body = enroll("simplereenroll", openssl_csr(key1b, "dev-1", "csr-1b"), "--cert", dev1_cert, "--key", key1)
dev1b = certs_of(body, "dev-1b.pem")
check(cn_of(dev1b)[0] == "dev-1", "re-enrolled with the same subject")
verify(dev1b, "the re-enrolled certificate")
states = {c["serial"]: c["attachment"] for c in api("GET", "/v1/things/dev-1")["certificates"]}
old_serial = format(cn_of(dev1_cert)[1].serial_number, "x")
check(states.get(old_serial) == "superseded" and list(states.values()).count("active") == 1,
      f"the old certificate is superseded: {states}")
enroll("simplereenroll", openssl_csr(key1b, "dev-2", "csr-1c"), "--cert", dev1b, "--key", key1b, expect=403)
# The replaced certificate (its key rotated away from) renews nothing.
enroll("simplereenroll", openssl_csr(key1, "dev-1", "csr-1g"), "--cert", dev1_cert, "--key", key1, expect=403)
enroll("simplereenroll", openssl_csr(key1b, "dev-1", "csr-1d"), expect=401)  # no client certificate
enroll("simplereenroll", openssl_csr(key1b, UID, "csr-1e"), "--cert", icert, "--key", ikey, expect=401)  # not ours
api("POST", f"/v1/certificates/{old_serial}/revoke", {"reason": "keyCompromise"})
enroll("simplereenroll", openssl_csr(key1, "dev-1", "csr-1f"), "--cert", dev1_cert, "--key", key1, expect=403)

# ---- serverkeygen: the key made by certfleet, in the clear over TLS (RFC 7030 4.4) ----
sk = api("POST", "/v1/enrollment/secrets", {"profile": "default", "device_id": "dev-k1"}, expect=201)["items"][0]
headers, body = enroll("serverkeygen", openssl_csr(openssl_key("throwaway"), "dev-k1", "csr-k1"), "-u",
                       f"{sk['id']}:{sk['secret']}")
check(headers["content-type"].startswith("multipart/mixed; boundary="), f"serverkeygen: {headers}")
message = email.message_from_bytes(f"Content-Type: {headers['content-type']}\r\n\r\n".encode() + body)
parts = {p.get_content_type(): p.get_payload() for p in message.get_payload()}
check(set(parts) == {"application/pkcs8", "application/pkcs7-mime"}, f"the parts: {list(parts)}")
key_der = base64.b64decode(parts["application/pkcs8"])
genkey = write("dev-k1.key", sh("openssl", "pkey", "-inform", "DER", "-outform", "PEM", stdin=key_der))
kcert = certs_of(parts["application/pkcs7-mime"], "dev-k1.pem")
check(sh("openssl", "x509", "-noout", "-pubkey", "-in", kcert) == sh("openssl", "pkey", "-pubout", "-in", genkey),
      "the certificate is for the key served with it")
check(cn_of(kcert)[0] == "dev-k1", "serverkeygen's certificate is the secret's device's")
# A CSR that asks for the key encrypted to a key of its own (RFC 7030 4.4.1.1) gets no key,
# and leaves the secret unspent.
sk2 = api("POST", "/v1/enrollment/secrets", {"profile": "default", "device_id": "dev-k2"}, expect=201)["items"][0]
encrypted = x509.CertificateSigningRequestBuilder().subject_name(
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-k2")])).add_attribute(
    x509.ObjectIdentifier("1.2.840.113549.1.9.16.2.37"), b"kek-1").sign(ec.generate_private_key(ec.SECP256R1()),
                                                                           hashes.SHA256())
_, body = enroll("serverkeygen", write("csr-k2.b64", base64.encodebytes(encrypted.public_bytes(
    serialization.Encoding.DER))), "-u", f"{sk2['id']}:{sk2['secret']}", expect=400)
check(b"DecryptKeyIdentifier" in body, f"the refusal names the attribute: {body[:300]}")
enroll("serverkeygen", openssl_csr(openssl_key("throwaway2"), "dev-k2", "csr-k3"), "-u", f"{sk2['id']}:{sk2['secret']}")

# ---- the tls-unique binding (RFC 7030 3.5), with Python's ssl on TLS 1.2 ----
# OpenSSL's SSL_OP_NO_EXTENDED_MASTER_SECRET (bit 0), which Python's ssl does not name.
NO_EXTENDED_MASTER_SECRET = 0x1


def bound_enroll(cn, secret_item, tamper=False, no_ems=False):
    ctx = ssl.create_default_context(cafile=TLS_CA)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if no_ems:
        ctx.options |= NO_EXTENDED_MASTER_SECRET
    with socket.create_connection(("127.0.0.1", cf.port)) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        binding = s.get_channel_binding("tls-unique")
        value = base64.b64encode(binding if not tamper else bytes(len(binding))).decode()
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .add_attribute(AttributeOID.CHALLENGE_PASSWORD, value.encode()).sign(key, hashes.SHA256()))
        body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
        auth = base64.b64encode(f"{secret_item['id']}:{secret_item['secret']}".encode()).decode()
        s.sendall((f"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                   f"Authorization: Basic {auth}\r\nContent-Type: application/pkcs10\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return int(answer.split(b" ", 2)[1])


tb = api("POST", "/v1/enrollment/secrets", {"profile": "default", "batch": "b-tls", "count": 3}, expect=201)["items"]
check(bound_enroll("dev-t1", tb[0], tamper=True) == 403, "a challengePassword that is not the channel binding: 403")
check(bound_enroll("dev-t1", tb[2], no_ems=True) == 403,
      "a challengePassword on TLS 1.2 without the extended master secret (no tls-unique to check it against): 403")
check(bound_enroll("dev-t1", tb[1]) == 200, "the CSR bound to its TLS connection by tls-unique enrolls")

# ---- approval: 202 with Retry-After until an operator decides ----
api("PUT", "/v1/enrollment/profiles/approve", {"template": "est-line", "auth": ["secret"], "approval": True},
    expect=201)
ap = api("POST", "/v1/enrollment/secrets", {"profile": "approve", "batch": "b-a", "count": 2}, expect=201)["items"]
akey = openssl_key("dev-a1")
csr_a1 = openssl_csr(akey, "dev-a1", "csr-a1")
headers, _ = enroll("simpleenroll", csr_a1, "-u", f"{ap[0]['id']}:{ap[0]['secret']}", label="approve", expect=202)
check(headers.get("retry-after") == "7", f"202 with Retry-After: {headers}")
enroll("simpleenroll", csr_a1, label="approve", expect=202)  # the same CSR again: still pending
again_a1 = api("POST", "/v1/enrollment/secrets", {"profile": "approve", "device_id": "dev-a1"}, expect=201)["items"][0]
enroll("simpleenroll", openssl_csr(akey, "dev-a1", "csr-a1b"), "-u", f"{again_a1['id']}:{again_a1['secret']}",
       label="approve", expect=409)  # one request waits already
enroll("serverkeygen", csr_a1, label="approve", expect=409)  # the key would go to whoever asks again
pending = api("GET", "/v1/enrollment/requests?state=pending")["items"]
check(len(pending) == 1 and pending[0]["device_id"] == "dev-a1", f"the pending request: {pending}")
api("POST", f"/v1/enrollment/requests/{pending[0]['id']}/approve", bearer=None, expect=401)
api("POST", f"/v1/enrollment/requests/{pending[0]['id']}/approve")
_, body = enroll("simpleenroll", csr_a1, label="approve")
check(cn_of(certs_of(body, "dev-a1.pem"))[0] == "dev-a1", "approved: the next try gets the certificate")
_, again = enroll("simpleenroll", csr_a1, label="approve")
check(open(certs_of(again, "dev-a1-again.pem")).read() == open(path("dev-a1.pem")).read(),
      "asking again gives the same certificate")
csr_a2 = openssl_csr(openssl_key("dev-a2"), "dev-a2", "csr-a2")
enroll("simpleenroll", csr_a2, "-u", f"{ap[1]['id']}:{ap[1]['secret']}", label="approve", expect=202)
rid = api("GET", "/v1/enrollment/requests?state=pending")["items"][0]["id"]
api("POST", f"/v1/enrollment/requests/{rid}/reject")
api("POST", f"/v1/enrollment/requests/{rid}/approve", expect=409)
enroll("simpleenroll", csr_a2, label="approve", expect=403)

# ---- bad input ----
enroll("simpleenroll", write("bad.b64", "this is not base64!!"), expect=400)
der = bytearray(base64.b64decode(open(openssl_csr(key1, "dev-1", "csr-sig")).read()))
der[-5] ^= 0xFF  # inside the signature
enroll("simpleenroll", write("badsig.b64", base64.encodebytes(bytes(der))), expect=400)
enroll("simpleenroll", write("big.b64", b"A" * 40000), expect=413)
enroll("simpleenroll", openssl_csr(key1, "dev-1", "csr-nolabel"), label="no-such-label", expect=404)

audit = json.dumps(api("GET", "/v1/audit?limit=500"))
check(audit.count('"device.enroll"') >= 8 and "enroll.request.approve" in audit and "enroll.secret.create" in audit,
      "enrollments, secrets and decisions are audited")

cf.stop()
finish("est_e2e")
