#!/usr/bin/python3
"""Lightweight CMP (RFC 9483) end to end with OpenSSL 3's own client, `openssl cmp`, over
HTTPS: ir, cr and p10cr MAC-protected with one-time secrets (with certConf, and with implicit
confirmation), kur signed with the issued certificate, genm for the CA certificates and the
root CA update, rr of the device's own certificate, polling while a request waits for
approval, and refusals as CMP error messages (a wrong secret, a replayed transaction, a
request for another device, a revoked certificate). Issued certificates verify with openssl
and GnuTLS certtool.

usage: cmp_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet, Files, run  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
cf = Certfleet(BINARY, DB_KIND, "cmp-e2e", extra_env={"CERTFLEET_ENROLL_RETRY_AFTER_SECONDS": "1"})
cf.init()
cf.start()
files = Files("certfleet-cmp-e2e-")
path, write = files.path, files.write
TLS = os.path.join(cf.data, "tls")


def api(method, route, body=None, expect=200, **kw):
    status, out, _ = cf.request(method, route, body=body, bearer=kw.pop("bearer", cf.token), **kw)
    check(status == expect, f"{method} {route}: {status}, wanted {expect}: {str(out)[:400]}")
    return out


def cmp_args(cmd, label="default"):
    """openssl cmp against certfleet over TLS, as the README shows it."""
    return ["openssl", "cmp", "-cmd", cmd, "-server", f"127.0.0.1:{cf.port}", "-path", f".well-known/cmp/p/{label}",
            "-tls_used", "-tls_trusted", os.path.join(TLS, "ca.pem"), "-msg_timeout", "20", "-total_timeout", "60"]


def with_secret(item):
    return ["-ref", item["id"], "-secret", f"pass:{item['secret']}", "-recipient", "/CN=certfleet"]


def signed_by(cert, key):
    return ["-cert", cert, "-key", key, "-srvcert", os.path.join(TLS, "server.pem")]


def openssl_cmp(*args, ok=True):
    rc, out = run(*args)
    check((rc == 0) == ok, f"openssl cmp {' '.join(a for a in args[2:4])} exits {'0' if ok else 'non-zero'}: {out[-600:]}")
    return out


def new_key(name):
    rc, out = run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                  path(name + ".key"))
    check(rc == 0, f"key {name}: {out}")
    return path(name + ".key")


def subject_cn(cert):
    rc, out = run("openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", cert)
    return out.strip().removeprefix("subject=").removeprefix("CN=") if rc == 0 else None


def serial_of(cert):
    rc, out = run("openssl", "x509", "-noout", "-serial", "-in", cert)
    return out.strip().split("=")[1].lower().lstrip("0")


def verify(cert, what):
    rc, out = run("openssl", "verify", "-CAfile", path("root.pem"), "-untrusted", path("inter.pem"), "-purpose",
                  "sslclient", cert)
    check(rc == 0 and ": OK" in out, f"openssl verifies {what}: {out}")
    write("gnutls.pem", open(cert).read() + open(path("inter.pem")).read())
    rc, out = run("certtool", "--verify", "--load-ca-certificate", path("root.pem"), "--infile", path("gnutls.pem"))
    check(rc == 0 and "Chain verification output: Verified" in out, f"certtool verifies {what}: {out[-300:]}")


def secret_for(device=None, batch=None, profile="default"):
    body = {"profile": profile, **({"device_id": device} if device else {"batch": batch})}
    return api("POST", "/v1/enrollment/secrets", body, expect=201)["items"][0]


# ---- the CA, the template and the profile ----
api("POST", "/v1/certificates/root", {"fqdn": "example.com", "organization": "Acme"}, expect=201)
api("POST", "/v1/certificates/intermediate", {"fqdn": "iot.example.com", "organization": "Acme"}, expect=201)
write("root.pem", api("GET", "/v1/certificates/example.com")["certificate_pem"])
write("inter.pem", api("GET", "/v1/certificates/iot.example.com")["certificate_pem"])
api("POST", "/v1/thing-types", {"name": "plc"}, expect=201)
api("POST", "/v1/provisioning-templates", {"name": "cmp-line", "ca_fqdn": "iot.example.com",
                                           "endpoint": "mqtts://localhost:8883", "thing_type": "plc",
                                           "policies": []}, expect=201)
api("PUT", "/v1/enrollment/profiles/default", {"template": "cmp-line", "auth": ["secret", "reenroll"]}, expect=201)

# ---- ir with a MAC secret, confirmed with certConf ----
s1 = secret_for("plc-1")
key1 = new_key("plc-1")
out = openssl_cmp(*cmp_args("ir"), *with_secret(s1), "-newkey", key1, "-subject", "/CN=plc-1",
                  "-certout", path("plc-1.pem"), "-cacertsout", path("capubs.pem"), "-extracertsout",
                  path("extra.pem"))
check("sending CERTCONF" in out and "received PKICONF" in out, f"ir, then certConf and pkiConf: {out[-500:]}")
check(subject_cn(path("plc-1.pem")) == "plc-1", "ir: the certificate is the secret's device's")
verify(path("plc-1.pem"), "the ir certificate")
check(open(path("capubs.pem")).read().strip() == open(path("root.pem")).read().strip(),
      "ir with a MAC: caPubs holds the root")
thing = api("GET", "/v1/things/plc-1")
check(thing["thing_type"] == "plc" and thing["certificates"][0]["attachment"] == "active", f"the thing: {thing}")

# ---- p10cr and cr with secrets, implicitly confirmed ----
key2 = new_key("plc-2")
rc, text = run("openssl", "req", "-new", "-key", key2, "-subj", "/CN=plc-2", "-out", path("plc-2.csr"))
check(rc == 0, f"openssl req: {text}")
out = openssl_cmp(*cmp_args("p10cr"), *with_secret(secret_for("plc-2")), "-csr", path("plc-2.csr"),
                  "-implicit_confirm", "-certout", path("plc-2.pem"))
check("sending CERTCONF" not in out, f"implicit confirmation: no certConf: {out[-300:]}")
check(subject_cn(path("plc-2.pem")) == "plc-2", "p10cr: the CSR's device")
verify(path("plc-2.pem"), "the p10cr certificate")
key3 = new_key("plc-3")
openssl_cmp(*cmp_args("cr"), *with_secret(secret_for(batch="line-3")), "-newkey", key3, "-subject", "/CN=plc-3",
            "-certout", path("plc-3.pem"))
check(subject_cn(path("plc-3.pem")) == "plc-3", "cr with a batch's secret enrolls a new device")

# ---- kur signed with the current certificate; the old one is superseded ----
key1b = new_key("plc-1b")
openssl_cmp(*cmp_args("kur"), *signed_by(path("plc-1.pem"), key1), "-newkey", key1b, "-certout", path("plc-1b.pem"))
check(subject_cn(path("plc-1b.pem")) == "plc-1", "kur keeps the subject")
verify(path("plc-1b.pem"), "the kur certificate")
states = {c["serial"]: c["attachment"] for c in api("GET", "/v1/things/plc-1")["certificates"]}
check(states.get(serial_of(path("plc-1.pem"))) == "superseded" and
      states.get(serial_of(path("plc-1b.pem"))) == "active", f"the replaced certificate is superseded: {states}")

out = openssl_cmp(*cmp_args("kur"), *signed_by(path("plc-1.pem"), key1), "-newkey", key1b, "-certout", path("x.pem"),
                  "-unprotected_errors", ok=False)
check("received ERROR" in out and "replaced" in out, f"kur with the replaced certificate: {out[-400:]}")

# ---- genm: the CA certificates, and the root CA update (none: roots are not rolled in place) ----
out = openssl_cmp(*cmp_args("genm"), *signed_by(path("plc-1b.pem"), key1b), "-infotype", "caCerts",
                  "-rspout", path("genp.der"))
check("genp contains ITAV of type: id-it-caCerts" in out, f"genm caCerts: {out[-300:]}")
rc, parsed = run("openssl", "asn1parse", "-inform", "DER", "-in", path("genp.der"))
check("iot.example.com" in parsed and ":example.com" in parsed, "the genp holds the intermediate and the root")
genm_default = [a if a != ".well-known/cmp/p/default" else ".well-known/cmp" for a in cmp_args("genm")]
out = openssl_cmp(*genm_default, *signed_by(path("plc-1b.pem"), key1b), "-infotype", "rootCaKeyUpdate")
check("id-it-rootCaKeyUpdate" in out, f"genm rootCaKeyUpdate answered: {out[-300:]}")

# ---- refusals, each a CMP error message ----
s4 = secret_for("plc-4")
key4 = new_key("plc-4")
wrong = dict(s4, secret=s4["secret"] + "x")
out = openssl_cmp(*cmp_args("ir"), *with_secret(wrong), "-newkey", key4, "-subject", "/CN=plc-4", "-certout",
                  path("x.pem"), "-unprotected_errors", ok=False)
check("received ERROR" in out, f"a wrong secret: a CMP error message: {out[-400:]}")
out = openssl_cmp(*cmp_args("ir"), *with_secret(s1), "-newkey", key4, "-subject", "/CN=plc-1", "-certout",
                  path("x.pem"), "-unprotected_errors", ok=False)
check("received ERROR" in out and "used" in out, f"a used secret: a CMP error message: {out[-400:]}")
out = openssl_cmp(*cmp_args("ir"), *with_secret(s4), "-newkey", key4, "-subject", "/CN=someone-else", "-certout",
                  path("x.pem"), "-unprotected_errors", ok=False)
check("received ERROR" in out and "is device plc-4" in out, f"a request for another device: {out[-400:]}")
# The request saved, then sent again: the same transaction ID is refused.
openssl_cmp(*cmp_args("ir"), *with_secret(s4), "-newkey", key4, "-subject", "/CN=plc-4", "-certout",
            path("plc-4.pem"), "-implicit_confirm", "-reqout", path("ir-4.der"))
out = openssl_cmp(*cmp_args("ir"), *with_secret(s4), "-newkey", key4, "-subject", "/CN=plc-4", "-reqin",
                  path("ir-4.der"), "-certout", path("x.pem"), "-unprotected_errors", ok=False)
check("received ERROR" in out and "transactionIdInUse" in out, f"a replayed transaction: {out[-400:]}")

# ---- rr of the device's own certificate ----
out = openssl_cmp(*cmp_args("rr"), *signed_by(path("plc-1b.pem"), key1b), "-oldcert", path("plc-1b.pem"),
                  "-revreason", "1")
check("revocation accepted" in out, f"rr: {out[-300:]}")
cert = api("GET", f"/v1/certificates/{serial_of(path('plc-1b.pem'))}")
check(cert["status"] == "revoked" and cert["revocation_reason"] == "keyCompromise", f"revoked: {cert}")
out = openssl_cmp(*cmp_args("kur"), *signed_by(path("plc-1b.pem"), key1b), "-newkey", key1, "-certout",
                  path("x.pem"), "-unprotected_errors", ok=False)
check("received ERROR" in out and "revoked" in out, f"a revoked certificate cannot update: {out[-400:]}")
out = openssl_cmp(*cmp_args("rr"), *signed_by(path("plc-2.pem"), key2), "-oldcert", path("plc-3.pem"),
                  "-unprotected_errors", ok=False)
check("received ERROR" in out and "its own certificate" in out, f"rr of another device's certificate: {out[-400:]}")

# ---- polling while an operator decides ----
api("PUT", "/v1/enrollment/profiles/approve", {"template": "cmp-line", "auth": ["secret"], "approval": True},
    expect=201)
key5 = new_key("plc-5")
client = subprocess.Popen(cmp_args("ir", "approve") + with_secret(secret_for("plc-5", profile="approve")) +
                          ["-newkey", key5, "-subject", "/CN=plc-5", "-certout", path("plc-5.pem")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
pending = wait_for("the request to wait for approval",
                   lambda: api("GET", "/v1/enrollment/requests?state=pending")["items"])
api("POST", f"/v1/enrollment/requests/{pending[0]['id']}/approve")
out, _ = client.communicate(timeout=60)
check(client.returncode == 0 and "received POLLREP" in out, f"ir polled until approved: {out[-600:]}")
check(subject_cn(path("plc-5.pem")) == "plc-5", "the approved certificate")

# ---- bad input over HTTP ----
url = f"https://127.0.0.1:{cf.port}/.well-known/cmp/p/default"
for data, ctype, want in ((b"\x30\x03\x02\x01\x05", "application/pkixcmp", "400"),
                          (open(path("ir-4.der"), "rb").read(), "application/json", "400")):
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", os.path.join(TLS, "ca.pem"),
                        "-H", f"Content-Type: {ctype}", "--data-binary", "@-", url], input=data, capture_output=True)
    check(p.stdout.decode() == want, f"a malformed PKIMessage or the wrong type: {p.stdout}")
p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", os.path.join(TLS, "ca.pem"),
                    "-H", "Content-Type: application/pkixcmp", "--data-binary", "@" + path("ir-4.der"),
                    url.replace("/p/default", "/p/nope")], capture_output=True)
check(p.stdout.decode() == "404", f"an unknown label: 404, got {p.stdout}")

enrolled = [e for e in api("GET", "/v1/audit?limit=500")["items"] if e["action"] == "device.enroll"]
check(len(enrolled) >= 6 and all(e["details"]["protocol"] == "cmp" for e in enrolled),
      f"enrollments over CMP are audited: {enrolled[:1]}")

cf.stop()
finish("cmp_e2e")
