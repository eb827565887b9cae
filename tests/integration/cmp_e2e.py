#!/usr/bin/python3
"""Lightweight CMP (RFC 9483) end to end with OpenSSL 3's own client, `openssl cmp`, over
HTTPS (and an ir over plain HTTP, server.http_listen): ir, cr and p10cr MAC-protected with one-time secrets (with certConf, and with implicit
confirmation; a certificate the client rejects in its certConf, or with an empty certConf made
by a proxy that MACs it again, is revoked, and after a rejected kur the device's certificate is its current one again), kur signed with the issued certificate, genm for
the CA certificates and the root CA update, rr of the device's own certificate, polling while
a request waits for approval, and refusals as CMP error messages (a wrong secret, a replayed transaction, a
request made days ago or that does not say when, a certConf forged with another client's transactionID, a
request for another device, a revoked certificate). Issued certificates verify with openssl
and GnuTLS certtool.

usage: cmp_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import datetime
import hashlib
import hmac
import http.server
import os
import ssl
import subprocess
import sys
import threading
import urllib.request

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet, Files, run  # noqa: E402
from servers import free_port  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
PLAIN_PORT = free_port()  # server.http_listen: CMP over plain HTTP (RFC 6712)
cf = Certfleet(BINARY, DB_KIND, "cmp-e2e", extra_env={"CERTFLEET_ENROLL_RETRY_AFTER_SECONDS": "1",
                                                      "CERTFLEET_ENROLL_CMP_CONFIRM_SECONDS": "10",
                                                      "CERTFLEET_SERVER_HTTP_LISTEN": f"127.0.0.1:{PLAIN_PORT}"})
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

# ---- ir over plain HTTP (openssl cmp without TLS), at /.well-known/cmp: the profile "default" ----
s_plain = secret_for("plc-plain")
out = openssl_cmp("openssl", "cmp", "-cmd", "ir", "-server", f"127.0.0.1:{PLAIN_PORT}", "-path", ".well-known/cmp",
                  "-msg_timeout", "20", "-total_timeout", "60", *with_secret(s_plain), "-newkey", new_key("plc-plain"),
                  "-subject", "/CN=plc-plain", "-certout", path("plc-plain.pem"))
check("sending CERTCONF" in out and "received PKICONF" in out, f"ir over plain HTTP, then certConf: {out[-500:]}")
check(subject_cn(path("plc-plain.pem")) == "plc-plain", "ir over plain HTTP: the secret's device's certificate")
verify(path("plc-plain.pem"), "the certificate enrolled over plain HTTP")
rc, est = run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary", "x",
              f"http://127.0.0.1:{PLAIN_PORT}/.well-known/est/simpleenroll")
check(est == "404", f"EST, which needs TLS, is not served over plain HTTP: {est}")

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

# ---- a certificate the client rejects is revoked (RFC 9483 4.1.1) ----
def certificates_of(device):
    return [api("GET", f"/v1/certificates/{c['serial']}") for c in api("GET", f"/v1/things/{device}")["certificates"]]


# openssl cmp rejects a certificate it cannot verify against -out_trusted (here a CA that did
# not issue it) with a certConf whose status is a rejection.
out = openssl_cmp(*cmp_args("ir"), *with_secret(secret_for("plc-r1")), "-newkey", new_key("plc-r1"), "-subject",
                  "/CN=plc-r1", "-out_trusted", os.path.join(TLS, "ca.pem"), "-certout", path("x.pem"), ok=False)
check("sending CERTCONF" in out, f"the client rejects the certificate in its certConf: {out[-500:]}")
certs = certificates_of("plc-r1")
check([c["status"] for c in certs] == ["revoked"], f"the rejected certificate is revoked: {certs[:1]}")


def der_item(data, at):
    """(start of contents, end) of the DER item at `at`."""
    n, at = data[at + 1], at + 2
    if n & 0x80:
        n, at = int.from_bytes(data[at:at + (n & 0x7f)], "big"), at + (n & 0x7f)
    return at, at + n


def der(tag, contents):
    n = len(contents)
    width = (n.bit_length() + 7) // 8
    return bytes([tag]) + (bytes([n]) if n < 0x80 else bytes([0x80 | width]) + n.to_bytes(width, "big")) + contents


def items(data):
    out, at = [], 0
    while at < len(data):
        start, end = der_item(data, at)
        out.append((data[at], data[at:end], data[start:end]))
        at = end
    return out


def oid_name(encoded):
    return {b"\x2b\x0e\x03\x02\x1a": "sha1", b"\x60\x86\x48\x01\x65\x03\x04\x02\x01": "sha256",
            b"\x2a\x86\x48\x86\xf7\x0d\x02\x07": "sha1", b"\x2b\x06\x01\x05\x05\x08\x01\x02": "sha1",
            b"\x2a\x86\x48\x86\xf7\x0d\x02\x09": "sha256"}[encoded]


def protected_again(header, body, rest, secret):
    """A PKIMessage of `header` and `body`, MAC-protected with the PasswordBasedMac its header
    names (RFC 4211 4.4), with the extraCerts among `rest`."""
    alg = next(c for t, _, c in items(items(header)[0][2]) if t == 0xa1)
    pbm = items(items(items(alg)[0][2])[1][2])  # salt, owf, iterationCount, mac
    salt, owf, count = pbm[0][2], oid_name(items(pbm[1][2])[0][2]), int.from_bytes(pbm[2][2], "big")
    key = hashlib.new(owf, secret + salt).digest()
    for _ in range(count - 1):
        key = hashlib.new(owf, key).digest()
    mac = hmac.new(key, der(0x30, header + body), oid_name(items(pbm[3][2])[0][2])).digest()
    extra = [whole for t, whole, _ in rest if t == 0xa1]
    return der(0x30, header + body + der(0xa0, der(0x03, b"\0" + mac)) + b"".join(extra))


def empty_cert_conf(message, secret):
    """The certConf `message` with no CertStatus at all (rejecting every certificate, RFC 4210
    5.3.18), MAC-protected again."""
    (_, header, _), (body_tag, _, _), *rest = items(items(message)[0][2])
    assert body_tag == 0xb8, "a certConf"
    return protected_again(header, der(0xb8, der(0x30, b"")), rest, secret)


def signed_again(header, body, rest, key_file):
    """A PKIMessage of `header` and `body` signed with the EC key in `key_file` (ECDSA with
    SHA-256, as its header's protectionAlg says), with the extraCerts among `rest`."""
    key = serialization.load_pem_private_key(open(key_file, "rb").read(), None)
    signature = key.sign(der(0x30, header + body), ec.ECDSA(hashes.SHA256()))
    extra = [whole for t, whole, _ in rest if t == 0xa1]
    return der(0x30, header + body + der(0xa0, der(0x03, b"\0" + signature)) + b"".join(extra))


def with_header_field(message, protect, tag, field):
    """`message` with its header's field [tag] (0xa0 + n) replaced by `field` (DER; None:
    without one), protected again by `protect(header, body, rest)`."""
    (_, header, fields), (_, body, _), *rest = items(items(message)[0][2])
    first, optional = items(fields)[:3], items(fields)[3:]  # pvno, sender and recipient (GeneralNames)
    kept = [(t, whole) for t, whole, _ in optional if t != tag]
    if field:  # in tag order
        kept.insert(next((i for i, (t, _) in enumerate(kept) if t > tag), len(kept)), (tag, field))
    return protect(der(0x30, b"".join(w for _, w, _ in first) + b"".join(w for _, w in kept)), body, rest)


def with_message_time(message, protect, time):
    """`message` with its header's messageTime `time` (GeneralizedTime text; None: without one)."""
    return with_header_field(message, protect, 0xa0, der(0xa0, der(0x18, time.encode())) if time else None)


def with_pbm_iterations(message, secret, count):
    """`message` with its PasswordBasedMac's iterationCount `count`, MAC-protected again."""
    (_, _, fields), *_ = items(items(message)[0][2])
    alg = next(c for t, _, c in items(fields) if t == 0xa1)
    oid, (_, _, params) = items(items(alg)[0][2])
    salt, owf, _, mac = items(params)
    pbm = der(0x30, salt[1] + owf[1] + der(0x02, count.to_bytes((count.bit_length() + 8) // 8, "big")) + mac[1])
    return with_header_field(message, lambda h, b, r: protected_again(h, b, r, secret), 0xa1,
                             der(0xa1, der(0x30, oid[1] + pbm)))


def post_cmp(message):
    """The body type of certfleet's answer to `message` (a PKIMessage's [n] tag), and the answer."""
    request = urllib.request.Request(f"https://127.0.0.1:{cf.port}/.well-known/cmp/p/default", data=message,
                                     headers={"Content-Type": "application/pkixcmp"})
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=os.path.join(TLS, "ca.pem"))) as r:
        answer = r.read()
    return items(items(answer)[0][2])[1][0], answer


class Rewriter(http.server.BaseHTTPRequestHandler):
    """Passes CMP messages on to certfleet (on the default profile), each certConf as
    `cert_conf` makes it (None: lost on the way, the client gets a 503)."""
    cert_conf = None

    def do_POST(self):
        data = self.rfile.read(int(self.headers["Content-Length"]))
        if items(items(data)[0][2])[1][0] == 0xb8:
            data = Rewriter.cert_conf(data)
        if data is None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        _, body = post_cmp(data)
        self.send_response(200)
        self.send_header("Content-Type", "application/pkixcmp")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def ir_through_proxy(device, secret_item, cert_conf, ok=True):
    """openssl cmp's ir for `device` with its secret, through a Rewriter whose certConfs
    `cert_conf` makes; what the client printed."""
    Rewriter.cert_conf = cert_conf
    proxy = http.server.HTTPServer(("127.0.0.1", 0), Rewriter)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        return openssl_cmp("openssl", "cmp", "-cmd", "ir", "-server", f"127.0.0.1:{proxy.server_address[1]}", "-path",
                           ".well-known/cmp/p/default", "-msg_timeout", "20", *with_secret(secret_item), "-newkey",
                           new_key(device), "-subject", f"/CN={device}", "-certout", path(f"{device}.pem"), ok=ok)
    finally:
        proxy.shutdown()


s_r2 = secret_for("plc-r2")
out = ir_through_proxy("plc-r2", s_r2, lambda message: empty_cert_conf(message, s_r2["secret"].encode()))
check("sending CERTCONF" in out and "received PKICONF" in out, f"an empty certConf is confirmed: {out[-500:]}")
certs = certificates_of("plc-r2")
check([c["status"] for c in certs] == ["revoked"], f"a certConf confirming nothing revokes: {certs[:1]}")

# ---- a certConf forged with the client's transactionID (seen on plain HTTP) but a wrong MAC
# gets an error, and leaves the transaction to the client's own ----
forged_answers = []


def forged_first(message):
    (_, header, _), (_, body, _), (_, _, protection), *rest = items(items(message)[0][2])
    wrong = der(0xa0, protection[:-1] + bytes([protection[-1] ^ 1]))
    forged_answers.append(post_cmp(der(0x30, header + body + wrong + b"".join(w for _, w, _ in rest)))[0])
    return message


out = ir_through_proxy("plc-r3", secret_for("plc-r3"), forged_first)
check(forged_answers == [0xb7], f"the forged certConf: a CMP error ({forged_answers})")
check("received PKICONF" in out and [c["status"] for c in certificates_of("plc-r3")] == ["active"],
      f"the client's own certConf, after it, is confirmed: {out[-300:]}")

# ---- a certConf that never arrives: once enroll.cmp_confirm_seconds (10 here) have passed,
# the certificate is revoked (RFC 9483 4.1.1), by whichever node sweeps ----
out = ir_through_proxy("plc-r4", secret_for("plc-r4"), lambda message: None, ok=False)
check("sending CERTCONF" in out, f"the client sent its certConf, which was lost: {out[-300:]}")
unconfirmed = wait_for("the unconfirmed certificate to be revoked",
                       lambda: (lambda certs: certs if certs and certs[0]["status"] == "revoked" else None)(
                           certificates_of("plc-r4")), timeout=90)
check(len(unconfirmed) == 1, f"one certificate, revoked unconfirmed: {unconfirmed}")

# ---- kur signed with the current certificate; the old one is superseded ----
key1b = new_key("plc-1b")
openssl_cmp(*cmp_args("kur"), *signed_by(path("plc-1.pem"), key1), "-newkey", key1b, "-certout", path("plc-1b.pem"))
check(subject_cn(path("plc-1b.pem")) == "plc-1", "kur keeps the subject")
verify(path("plc-1b.pem"), "the kur certificate")
states = {c["serial"]: c["attachment"] for c in api("GET", "/v1/things/plc-1")["certificates"]}
check(states.get(serial_of(path("plc-1.pem"))) == "superseded" and
      states.get(serial_of(path("plc-1b.pem"))) == "active", f"the replaced certificate is superseded: {states}")

# A kur certificate the client rejects in its certConf is revoked, and the device keeps the one
# it had: active again, no longer due for revocation, so that the device can update again.
out = openssl_cmp(*cmp_args("kur"), *signed_by(path("plc-1b.pem"), key1b), "-newkey", new_key("plc-1r"),
                  "-out_trusted", os.path.join(TLS, "ca.pem"), "-certout", path("x.pem"), ok=False)
check("sending CERTCONF" in out, f"the client rejects the kur certificate in its certConf: {out[-500:]}")
attached = {c["serial"]: c for c in api("GET", "/v1/things/plc-1")["certificates"]}
kept = attached.get(serial_of(path("plc-1b.pem")), {})
check(kept.get("attachment") == "active" and kept.get("revoke_after") is None,
      f"after a rejected kur the device's certificate is its active one again: {kept}")
refused = [c for s, c in attached.items() if s not in (serial_of(path("plc-1.pem")), serial_of(path("plc-1b.pem")))]
check(len(refused) == 1 and refused[0]["status"] == "revoked" and refused[0]["attachment"] == "superseded",
      f"the rejected kur certificate is revoked: {refused}")
check(attached.get(serial_of(path("plc-1.pem")), {}).get("attachment") == "superseded",
      "the certificate replaced before stays superseded")

out = openssl_cmp(*cmp_args("kur"), *signed_by(path("plc-1.pem"), key1), "-newkey", key1b, "-certout", path("x.pem"),
                  "-unprotected_errors", ok=False)
check("received ERROR" in out and "replaced" in out, f"kur with the replaced certificate: {out[-400:]}")
# But it may revoke itself in its grace period: the device may have rotated because its key leaked.
out = openssl_cmp(*cmp_args("rr"), *signed_by(path("plc-1.pem"), key1), "-oldcert", path("plc-1.pem"),
                  "-revreason", "1")
check("revocation accepted" in out, f"rr of the superseded certificate with itself: {out[-300:]}")
cert = api("GET", f"/v1/certificates/{serial_of(path('plc-1.pem'))}")
check(cert["status"] == "revoked" and cert["revocation_reason"] == "keyCompromise", f"revoked: {cert}")

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
# A signed request made days ago, or that does not say when it was made, is refused (badTime):
# once its transaction ID is forgotten (after a week), a replay cannot pass for new. The
# requests are made by openssl cmp (sent nowhere), changed here and signed or MACed again.
openssl_cmp("openssl", "cmp", "-cmd", "kur", "-server", f"127.0.0.1:{free_port()}", "-msg_timeout", "2",
            *signed_by(path("plc-1b.pem"), key1b), "-newkey", new_key("plc-1k"), "-reqout", path("kur-1.der"),
            "-certout", path("x.pem"), ok=False)
kur = open(path("kur-1.der"), "rb").read()
four_days_ago = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=4)).strftime("%Y%m%d%H%M%SZ")
for time, what in ((four_days_ago, "made four days ago"), (None, "without a messageTime")):
    body_type, answer = post_cmp(with_message_time(kur, lambda h, b, r: signed_again(h, b, r, key1b), time))
    check(body_type == 0xb7 and b"badTime" in answer, f"a signed kur {what}: a CMP error (badTime): {answer[-200:]}")
# A MAC-protected request is good once (its secret is one-time): its time is not judged, as a
# device's clock may not be set yet.
s6 = secret_for("plc-6")
openssl_cmp("openssl", "cmp", "-cmd", "ir", "-server", f"127.0.0.1:{free_port()}", "-msg_timeout", "2",
            *with_secret(s6), "-newkey", new_key("plc-6"), "-subject", "/CN=plc-6", "-implicit_confirm",
            "-reqout", path("ir-6.der"), "-certout", path("x.pem"), ok=False)
made = open(path("ir-6.der"), "rb").read()
mac_again = lambda h, b, r: protected_again(h, b, r, s6["secret"].encode())  # noqa: E731
body_type, answer = post_cmp(with_header_field(made, mac_again, 0xa4, der(0xa4, der(0x04, b"t" * 65))))
check(body_type == 0xb7 and b"transactionID is longer than 64 bytes" in answer,
      f"a transactionID over 64 bytes: a CMP error message, not an HTTP error: {answer[-200:]}")
# The sender chooses the MAC's iterations, and each costs a hash before the MAC is compared: more
# than 10,000 are refused unverified (OpenSSL would run up to 100,000).
body_type, answer = post_cmp(with_pbm_iterations(made, s6["secret"].encode(), 10001))
check(body_type == 0xb7 and b"iterationCount is above 10000" in answer,
      f"a MAC of 10,001 iterations: a CMP error message: {answer[-200:]}")
body_type, answer = post_cmp(with_message_time(with_pbm_iterations(made, s6["secret"].encode(), 10000), mac_again, None))
check(body_type == 0xa1,
      f"a MAC-protected ir of 10,000 iterations without a messageTime: a certificate (ip): {answer[-200:]}")

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

# A signature by a certificate certfleet does not know proves nothing: refused before anything
# is written (not even the transaction's ID).
rc, out = run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
              path("stranger-ca.key"), "-out", path("stranger-ca.pem"), "-subj", "/CN=stranger CA", "-days", "1")
check(rc == 0, f"a CA of a stranger's: {out}")
rc, out = run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
              path("anyone.key"), "-out", path("anyone.csr"), "-subj", "/CN=plc-5")
rc2, out2 = run("openssl", "x509", "-req", "-in", path("anyone.csr"), "-CA", path("stranger-ca.pem"), "-CAkey",
                path("stranger-ca.key"), "-CAcreateserial", "-days", "1", "-out", path("anyone.pem"), "-extfile",
                write("anyone.ext", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                    "subjectKeyIdentifier=hash\n"))
check(rc == 0 and rc2 == 0, f"its certificate for plc-5: {out} {out2}")
out = openssl_cmp(*cmp_args("genm", "approve"), *signed_by(path("anyone.pem"), path("anyone.key")), "-infotype",
                  "caCerts", ok=False)
check("received ERROR" in out and "neither issued nor holds" in out, f"a genm signed by a stranger: {out[-1500:]}")

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

# ---- certConf under an Ed25519 CA: certHash is SHA-512, the hash its signature algorithm uses ----
api("POST", "/v1/certificates/intermediate", {"fqdn": "ed.example.com", "organization": "Acme", "key_type": "ed25519"},
    expect=201)
api("POST", "/v1/provisioning-templates", {"name": "cmp-ed", "ca_fqdn": "ed.example.com", "endpoint":
                                           "mqtts://localhost:8883", "thing_type": "plc", "policies": []}, expect=201)
api("PUT", "/v1/enrollment/profiles/ed", {"template": "cmp-ed", "auth": ["secret"]}, expect=201)
out = openssl_cmp(*cmp_args("ir", "ed"), *with_secret(secret_for("plc-ed", profile="ed")), "-newkey", new_key("plc-ed"),
                  "-subject", "/CN=plc-ed", "-certout", path("plc-ed.pem"))
check("sending CERTCONF" in out and "received PKICONF" in out, f"ir under an Ed25519 CA, confirmed: {out[-500:]}")

enrolled = [e for e in api("GET", "/v1/audit?limit=500")["items"] if e["action"] == "device.enroll"]
check(len(enrolled) >= 6 and all(e["details"]["protocol"] == "cmp" for e in enrolled),
      f"enrollments over CMP are audited: {enrolled[:1]}")

cf.stop()
finish("cmp_e2e")
