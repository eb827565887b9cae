#!/usr/bin/python3
"""ACME end to end, with the clients people run: certbot registers an account with
certfleet, updates its contact and deactivates it, then obtains (standalone http-01), renews
and revokes a certificate, which openssl verifies against certfleet's chain and finds revoked
in the CRL and by OCSP; lego obtains certificates through http-01, tls-alpn-01 and dns-01 (a
wildcard, its TXT record in a small DNS server the test runs) and renews one; Caddy gets a
site's certificate and serves it, and curl verifies it against certfleet's root; Caddy and nginx
staple certfleet's OCSP answers, fetched over plain HTTP. Requests signed
here (Python cryptography) get the RFC 8555 problem documents for a bad nonce, a wrong url, a
forged signature, a weak key, a forbidden name, a CSR that differs from its order and a
challenge answered wrongly.

usage: acme_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet, Files  # noqa: E402
from servers import DnsServer, Http01Responder, LoopbackGetServer, free_port  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa, padding, utils  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
files = Files("certfleet-acme-e2e-")
dns = DnsServer(files.path("dns"))
HTTP01_PORT, TLSALPN01_PORT = free_port(), free_port()
# CRLs and OCSP over plain HTTP, as relying parties fetch them (Caddy staples OCSP from it).
REVOCATION_URL = f"http://127.0.0.1:{free_port()}"
cf = Certfleet(BINARY, DB_KIND, "acme-e2e", extra_env={
    "CERTFLEET_ACME_CA": "iot.example.com", "CERTFLEET_ACME_RESOLVER": f"127.0.0.1:{dns.port}",
    "CERTFLEET_ACME_HTTP01_PORT": str(HTTP01_PORT), "CERTFLEET_ACME_TLSALPN01_PORT": str(TLSALPN01_PORT),
    "CERTFLEET_ACME_VALIDATION_ATTEMPTS": "3",
    "CERTFLEET_SERVER_HTTP_LISTEN": REVOCATION_URL.removeprefix("http://"),
    "CERTFLEET_CA_REVOCATION_URL": REVOCATION_URL,
    # A challenge's POST is answered at the end of its validation's first attempt, well within
    # this: what it says is decided by the validation, not by how busy the machine is.
    "CERTFLEET_ACME_CHALLENGE_WAIT_MS": "10000"})
cf.init()
cf.start()
cf.api("POST", "/v1/certificates/root", {"fqdn": "example.com"}, expect=201)
cf.api("POST", "/v1/certificates/intermediate", {"fqdn": "iot.example.com"}, expect=201)
DIRECTORY = f"{cf.url}/acme/default/directory"

directory = cf.api("GET", "/acme/default/directory", bearer="-")
check(directory["newAccount"] == f"{cf.url}/acme/default/new-account", f"the directory: {directory}")
status, _, resp = cf.request("HEAD", "/acme/default/new-nonce", raw=True)
check(status == 200 and resp.getheader("Replay-Nonce"), "HEAD new-nonce answers a Replay-Nonce")
status, _, resp = cf.request("GET", "/acme/default/new-nonce", raw=True)
check(status == 204 and resp.getheader("Replay-Nonce") and "no-store" in resp.getheader("Cache-Control"),
      "GET new-nonce: 204, a nonce, not cached")
status, out, _ = cf.request("GET", "/acme/nope/directory")
check(status == 404 and out["type"] == "urn:ietf:params:acme:error:malformed", f"an unknown profile: {out}")

# ---- certbot: register, update the contact, deactivate ----
TLS_CA = os.path.join(cf.data, "tls", "ca.pem")
env = dict(os.environ, REQUESTS_CA_BUNDLE=TLS_CA)


def certbot(*args, folder="certbot"):
    d = files.path(folder)
    common = ["--server", DIRECTORY, "--config-dir", f"{d}/config", "--work-dir", f"{d}/work", "--logs-dir",
              f"{d}/logs", "--non-interactive"]
    p = subprocess.run(["certbot", *args, *common], env=env, capture_output=True, text=True, timeout=180)
    check(p.returncode == 0, f"certbot {' '.join(args)}: {p.stdout[-1500:]} {p.stderr[-1500:]}")
    return p.stdout + p.stderr


certbot("register", "--agree-tos", "-m", "ops@example.com", "--no-eff-email")
shown = certbot("show_account")
check(f"{cf.url}/acme/default/account/" in shown and "ops@example.com" in shown,
      f"certbot show_account fetches the account (POST-as-GET with kid): {shown}")
certbot("update_account", "-m", "pki@example.com", "--no-eff-email")
shown = certbot("show_account")
check("pki@example.com" in shown, f"certbot update_account changed the contact: {shown}")
certbot("unregister")
audit = [a["action"] for a in cf.api("GET", "/v1/audit?limit=100")["items"]]
for action in ("acme.account.create", "acme.account.update", "acme.account.deactivate"):
    check(action in audit, f"the audit log has {action}")

# ---- certbot: obtain with standalone http-01, renew, revoke ----
root_pem = cf.api("GET", "/v1/certificates/example.com")["certificate_pem"]
chain_files = {"root": files.write("root.pem", root_pem)}
standalone = ["--standalone", "--preferred-challenges", "http", "--http-01-address", "127.0.0.1",
              "--http-01-port", str(HTTP01_PORT)]
certbot("certonly", *standalone, "--agree-tos", "-m", "ops@example.com", "--no-eff-email", "--cert-name", "web",
        "-d", "www.example.test", "-d", "api.example.test", folder="certbot2")
live = os.path.join(files.path("certbot2"), "config", "live", "web")


def sh(*cmd, stdin=None):
    return subprocess.run(cmd, capture_output=True, input=stdin, timeout=60, text=stdin is None)


def verify(cert, chain):
    return sh("openssl", "verify", "-CAfile", chain_files["root"], "-untrusted", chain, cert)


def serial_of(path):
    return sh("openssl", "x509", "-noout", "-serial", "-in", path).stdout.strip().split("=")[1].lower()


check(verify(f"{live}/cert.pem", f"{live}/chain.pem").returncode == 0,
      "openssl verifies certbot's certificate against certfleet's chain")
first_serial = serial_of(f"{live}/cert.pem")
sans = sh("openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", f"{live}/cert.pem").stdout
check("DNS:www.example.test" in sans and "DNS:api.example.test" in sans, f"both names are in it: {sans}")
record = cf.api("GET", f"/v1/certificates/{first_serial}")
check(record["parent_fqdn"] == "iot.example.com" and record["created_by"].startswith("acme:account/")
      and "/order/" in record["created_by"], f"it is in the inventory under the ACME CA, by account and order: {record}")
check("BEGIN CERTIFICATE" in open(f"{live}/chain.pem").read() and root_pem.strip() not in open(
    f"{live}/fullchain.pem").read(), "the default chain ends below the root")

certbot("renew", "--force-renewal", "--no-random-sleep-on-renew", *standalone, folder="certbot2")
renewed_serial = serial_of(f"{live}/cert.pem")
check(renewed_serial != first_serial and verify(f"{live}/cert.pem", f"{live}/chain.pem").returncode == 0,
      "certbot renew --force-renewal got a new certificate that verifies")

certbot("revoke", "--cert-path", f"{live}/cert.pem", "--reason", "keycompromise", "--no-delete-after-revoke",
        folder="certbot2")
record = cf.api("GET", f"/v1/certificates/{renewed_serial}")
check(record["status"] == "revoked" and record.get("revocation_reason") in ("keyCompromise", 1),
      f"certbot revoke: revoked in the inventory: {record}")
# Fetched where the certificate says, over plain HTTP (server.http_listen, ca.revocation_url).
ext = sh("openssl", "x509", "-noout", "-ext", "crlDistributionPoints,authorityInfoAccess", "-in",
         f"{live}/cert.pem").stdout
crl_url, ocsp_url = f"{REVOCATION_URL}/crl/iot.example.com.crl", f"{REVOCATION_URL}/ocsp"
check(f"URI:{crl_url}" in ext and f"OCSP - URI:{ocsp_url}" in ext, f"the certificate's CRL and OCSP URLs: {ext}")
crl = sh("curl", "-sS", "--fail", crl_url, stdin=b"")
crl_text = sh("openssl", "crl", "-inform", "DER", "-noout", "-text", stdin=crl.stdout).stdout.decode()
check(crl.returncode == 0 and renewed_serial.upper() in crl_text.upper().replace(":", ""),
      "the revoked certificate is on iot.example.com's CRL, fetched over plain HTTP")
ocsp = sh("openssl", "ocsp", "-issuer", files.write("int.pem", cf.api("GET", "/v1/certificates/iot.example.com")[
    "certificate_pem"]), "-cert", f"{live}/cert.pem", "-url", ocsp_url, "-CAfile", chain_files["root"],
           "-verify_other", files.path("int.pem"), "-no_nonce")
check(": revoked" in ocsp.stdout, f"OCSP over plain HTTP answers revoked: {ocsp.stdout} {ocsp.stderr}")
api = sh("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{REVOCATION_URL}/v1/certificates?limit=1")
check(api.stdout == "404", f"plain HTTP serves no API route: {api.stdout}")

# ---- lego: http-01, tls-alpn-01, dns-01 (a wildcard), renewal ----
lego_env = dict(os.environ, LEGO_CA_CERTIFICATES=TLS_CA, EXEC_PATH=files.write("dns-hook.sh", f"""#!/bin/sh
# lego's exec DNS provider: present|cleanup FQDN VALUE, into the test DNS server's TXT files.
name=$(printf '%s' "$2" | sed 's/[.]$//' | tr A-Z a-z)
case "$1" in
  present) echo "$3" >> "{dns.txt_dir}/$name" ;;
  cleanup) grep -v -x -- "$3" "{dns.txt_dir}/$name" > "{dns.txt_dir}/$name.new"; mv "{dns.txt_dir}/$name.new" "{dns.txt_dir}/$name" ;;
esac
"""), EXEC_POLLING_INTERVAL="1", EXEC_PROPAGATION_TIMEOUT="30")
os.chmod(lego_env["EXEC_PATH"], 0o755)
LEGO_PATH = files.path("lego")


def lego(*args, directory=DIRECTORY, path=LEGO_PATH, expect_ok=True):
    p = subprocess.run(["lego", "--server", directory, "--path", path, "--email", "lego@example.com",
                        "--accept-tos", *args], env=lego_env, capture_output=True, text=True, timeout=180)
    if expect_ok:
        check(p.returncode == 0, f"lego {' '.join(args)}: {p.stdout[-1500:]} {p.stderr[-1500:]}")
    return p


def lego_cert(name):
    return os.path.join(LEGO_PATH, "certificates", f"{name}.crt")




def authz_requests():
    metrics = cf.request("GET", "/metrics", bearer=cf.token)[1]
    return sum(int(n) for n in re.findall(r'certfleet_http_requests_total\{route="/acme/\{profile\}/authz/\{id\}",'
                                          r'method="POST",status="\d+"\} (\d+)', metrics))


before = authz_requests()
lego("--http", "--http.port", f"127.0.0.1:{HTTP01_PORT}", "-d", "h.example.test", "run")
# lego reads the authorization once; the challenge's answer says valid, so it does not poll.
check(authz_requests() - before == 1, f"lego read the authorization once: {authz_requests() - before}")
lego("--tls", "--tls.port", f"127.0.0.1:{TLSALPN01_PORT}", "-d", "t.example.test", "run")
lego("--dns", "exec", "--dns.resolvers", f"127.0.0.1:{dns.port}", "--dns.disable-cp", "-d", "*.w.example.test",
     "-d", "w.example.test", "run")
for name in ("h.example.test", "t.example.test", "_.w.example.test"):
    # lego writes the leaf and its issuers into one file.
    pem = open(lego_cert(name)).read()
    leaf = files.write(f"{name}.leaf.pem", pem[:pem.index("-----END CERTIFICATE-----") + 25] + "\n")
    check(verify(leaf, lego_cert(name)).returncode == 0, f"lego's {name} verifies against certfleet's chain")
sans = sh("openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", lego_cert("_.w.example.test")).stdout
check("DNS:*.w.example.test" in sans and "DNS:w.example.test" in sans, f"the dns-01 wildcard certificate: {sans}")
check(any(q == ("_acme-challenge.w.example.test", 16) for q in dns.queries),
      "certfleet looked the TXT record up through acme.resolver")
before = serial_of(lego_cert("h.example.test"))
lego("--http", "--http.port", f"127.0.0.1:{HTTP01_PORT}", "-d", "h.example.test", "renew", "--days", "1000", "--no-random-sleep")
check(serial_of(lego_cert("h.example.test")) != before, "lego renew got a new certificate")

# ---- Caddy: its automatic HTTPS gets a site's certificate from certfleet and serves it ----
CADDY_NAME = "caddy.example.test"
caddyfile = files.write("Caddyfile", f"""{{
\tadmin off
\tstorage file_system {files.path("caddy-data")}
\tacme_ca {DIRECTORY}
\tacme_ca_root {TLS_CA}
\temail caddy@example.com
\thttp_port {HTTP01_PORT}
\thttps_port {TLSALPN01_PORT}
}}
{CADDY_NAME} {{
\trespond "served by caddy"
}}
""")
caddy_log = files.path("caddy.log")
caddy_env = dict(os.environ, HOME=files.path("caddy-home"), XDG_CONFIG_HOME=files.path("caddy-config"))
with open(caddy_log, "w") as log:
    caddy = subprocess.Popen(["caddy", "run", "--config", caddyfile, "--adapter", "caddyfile"], env=caddy_env,
                             stdout=log, stderr=subprocess.STDOUT)


def caddy_said(*events):
    """The first of `events` (its JSON log's messages) Caddy has logged, or None."""
    # A line still being written (no newline yet) is read next time.
    lines = [json.loads(line) for line in open(caddy_log) if line.startswith("{") and line.endswith("\n")]
    return next((line for line in lines if line.get("msg") in events), None)


wait_for("Caddy to obtain its certificate or give up",
         lambda: caddy_said("certificate obtained successfully", "could not get certificate from issuer")
         or caddy.poll() is not None, timeout=60)
check(caddy_said("certificate obtained successfully") is not None,
      f"Caddy obtained {CADDY_NAME}'s certificate: {open(caddy_log).read()[-3000:]}")
# Caddy logs that it obtained the certificate before it has put it in its cache (after fetching
# its OCSP answer): until then a handshake for the name fails.
attempts = []
wait_for("Caddy to serve its certificate", lambda: attempts.append(
    sh("curl", "-sS", "--cacert", chain_files["root"], "--resolve", f"{CADDY_NAME}:{TLSALPN01_PORT}:127.0.0.1",
       "-w", "\n%{certs}", f"https://{CADDY_NAME}:{TLSALPN01_PORT}/")) or attempts[-1].returncode == 0, timeout=30)
served = attempts[-1]
if check(served.returncode == 0 and served.stdout.startswith("served by caddy") and "-----BEGIN" in served.stdout,
         f"Caddy serves it, and curl verifies it against certfleet's root: {served.stdout[:300]} {served.stderr}"):
    caddy_serial = serial_of(files.write("caddy.pem", served.stdout[served.stdout.index("-----BEGIN"):]))
    record = cf.api("GET", f"/v1/certificates/{caddy_serial}")
    check(record["fqdn"] == CADDY_NAME and record["created_by"].startswith("acme:account/"),
          f"Caddy's certificate is in the inventory, by its ACME account: {record}")

def stapled(port, name):
    """What `openssl s_client -status` reads of the OCSP response the server on `port` staples
    for `name`, once it staples one (a server fetches it once a handshake asks for one)."""
    out = sh("openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name, "-status",
             stdin=b"").stdout.decode(errors="replace")
    return out if "OCSP Response Status: successful" in out else None


# Caddy fetches its OCSP response from the certificate's http:// URL and staples it.
response = wait_for("Caddy to staple an OCSP response", lambda: stapled(TLSALPN01_PORT, CADDY_NAME),
                    timeout=30) or ""
check("Cert Status: good" in response, f"Caddy staples certfleet's OCSP response, good: {response[:1500]}")
caddy.terminate()
caddy.wait(timeout=30)

# ---- nginx staples OCSP for lego's certificate (nginx takes only http:// responders) ----
NGINX_PORT = free_port()
nginx_conf = files.write("nginx.conf", f"""daemon off;
pid {files.path("nginx.pid")};
error_log {files.path("nginx-error.log")} info;
events {{ worker_connections 16; }}
http {{
  access_log off;
  client_body_temp_path {files.dir};
  server {{
    listen 127.0.0.1:{NGINX_PORT} ssl;
    ssl_certificate {lego_cert("h.example.test")};
    ssl_certificate_key {LEGO_PATH}/certificates/h.example.test.key;
    ssl_stapling on;
    ssl_stapling_verify on;
    ssl_trusted_certificate {files.write("nginx-trusted.pem", open(
        os.path.join(LEGO_PATH, "certificates", "h.example.test.issuer.crt")).read() + root_pem)};
    location / {{ return 200 "served by nginx"; }}
  }}
}}
""")
with open(files.path("nginx-stderr.log"), "w") as log:
    nginx = subprocess.Popen(["nginx", "-c", nginx_conf, "-p", files.dir], stdout=log, stderr=subprocess.STDOUT)


response = wait_for("nginx to staple an OCSP response", lambda: stapled(NGINX_PORT, "h.example.test"),
                    timeout=30) or ""
check("Cert Status: good" in response, f"nginx staples certfleet's OCSP response, good: {response[:1500]} "
      f"{open(files.path('nginx-stderr.log')).read()[-500:]}")
nginx.terminate()
nginx.wait(timeout=30)

# ---- a profile of its own: names under partner.test, P-256 keys, 30 days, EAB required ----
status, out, _ = cf.request("PUT", "/v1/acme/profiles/partners", bearer=cf.token, body={
    "ca": "iot.example.com", "dns_suffixes": ["partner.test"], "key_types": ["ec-p256"], "validity_days": 30,
    "eab_required": True})
check(status == 201 and out["eab_required"] is True and out["source"] == "store", f"PUT a profile: {status} {out}")
status, out, _ = cf.request("PUT", "/v1/acme/profiles/other", bearer=cf.token, body={"ca": "nowhere.example.com"})
check(status == 400 and "nowhere.example.com" in out["error"]["message"], f"a profile under no CA is refused: {out}")
names = [p["name"] for p in cf.api("GET", "/v1/acme/profiles")["items"]]
check(names == ["default", "partners"], f"the profiles: acme.ca's default and the stored one: {names}")
PARTNERS = f"{cf.url}/acme/partners/directory"
check(cf.api("GET", "/acme/partners/directory", bearer="-")["meta"]["externalAccountRequired"] is True,
      "its directory says EAB is required")
p = lego("--http", "--http.port", f"127.0.0.1:{HTTP01_PORT}", "-d", "a.partner.test", "run", directory=PARTNERS,
         path=files.path("lego-noeab"), expect_ok=False)
check(p.returncode != 0 and "requires External Account Binding" in p.stdout + p.stderr,
      f"lego sees the directory ask for EAB: {p.stderr[-500:]}")
made = cf.cli("acme", "eab", "create", "--profile", "partners").stdout.split()
eab_kid, eab_hmac = made[made.index("kid") + 1], made[made.index("hmac_key") + 1]
partner_path = files.path("lego-partner")
lego("--eab", "--kid", eab_kid, "--hmac", eab_hmac, "--http", "--http.port", f"127.0.0.1:{HTTP01_PORT}", "-d",
     "a.partner.test", "run", directory=PARTNERS, path=partner_path)
partner_cert = os.path.join(partner_path, "certificates", "a.partner.test.crt")
end = sh("openssl", "x509", "-noout", "-enddate", "-in", partner_cert).stdout
check(str(time.gmtime(time.time() + 30 * 86400).tm_year) in end, f"lego with EAB got a 30-day certificate: {end}")
p = lego("--eab", "--kid", eab_kid, "--hmac", eab_hmac, "--http", "--http.port", f"127.0.0.1:{HTTP01_PORT}", "-d",
         "b.partner.test", "run", directory=PARTNERS, path=files.path("lego-reuse"), expect_ok=False)
check(p.returncode != 0 and "unauthorized" in p.stdout + p.stderr, "an EAB kid binds one account only")
with_eab = ["--eab", "--kid", eab_kid, "--hmac", eab_hmac]
p = lego(*with_eab, "--http", "--http.port", f"127.0.0.1:{HTTP01_PORT}", "-d", "c.example.test", "run",
         directory=PARTNERS, path=partner_path, expect_ok=False)
check(p.returncode != 0 and "rejectedIdentifier" in p.stdout + p.stderr,
      f"a name outside the profile's suffixes: rejectedIdentifier: {p.stderr[-400:]}")
p = lego(*with_eab, "-k", "rsa2048", "--http", "--http.port", f"127.0.0.1:{HTTP01_PORT}", "-d", "d.partner.test", "run",
         directory=PARTNERS, path=partner_path, expect_ok=False)
check(p.returncode != 0 and "badCSR" in p.stdout + p.stderr, f"an RSA key where P-256 is asked: badCSR: {p.stderr[-400:]}")
api_eab = cf.api("POST", "/v1/acme/eab", {"profile": "partners"}, expect=201)
check(api_eab["kid"] and len(api_eab["hmac_key"]) == 43 and api_eab["directory"] == PARTNERS,
      f"POST /v1/acme/eab: {api_eab}")
cf.api("POST", "/v1/acme/eab", {"profile": "nope"}, expect=400)
audit = [a["action"] for a in cf.api("GET", "/v1/audit?limit=300")["items"]]
check("acme.profile.put" in audit and "acme.eab.create" in audit, "profiles and EAB credentials are audited")

metrics = cf.request("GET", "/metrics", bearer=cf.token)[1]
check('certfleet_acme_orders{status="valid"}' in metrics and 'certfleet_acme_validations_total{outcome="valid"}'
      in metrics, "orders and validations are in /metrics")
jobs = cf.api("GET", "/v1/jobs?kind=acme.validate&limit=500")["items"]
check(jobs and all(j["state"] in ("done", "dead") for j in jobs) and any(j["state"] == "done" for j in jobs),
      f"every validation job ended, completed with its outcome: {[(j['id'], j['state']) for j in jobs][:10]}")


# ---- requests signed here: the problem types ----
def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_of(key):
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.public_key().public_numbers()
        return {"kty": "RSA", "n": b64(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")), "e": b64(n.e.to_bytes(3, "big"))}
    n = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}


def nonce():
    return cf.request("HEAD", "/acme/default/new-nonce", raw=True)[2].getheader("Replay-Nonce")


def post(path, payload, key, url=None, nonce_value=None, forge=False, kid=None):
    """A JWS POST signed with `key`, named by `kid` (an account URL) or its jwk; payload None is
    a POST-as-GET. `path` may be a full URL of this server."""
    return send(*signed(path, payload, key, url, nonce_value, forge, kid))


def send(path, jws):
    return cf.request("POST", path, body=jws, headers={"Content-Type": "application/jose+json"})


def signed(path, payload, key, url=None, nonce_value=None, forge=False, kid=None):
    """What post() sends: the path and the JWS."""
    path = path.removeprefix(cf.url)
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    header = {"alg": alg, "nonce": nonce_value or nonce(), "url": url or f"{cf.url}{path}"}
    header.update({"kid": kid} if kid else {"jwk": jwk_of(key)})
    protected = b64(json.dumps(header).encode())
    body = "" if payload is None else b64(json.dumps(payload).encode())
    signing_input = f"{protected}.{body}".encode()
    if alg == "RS256":
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = utils.decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if forge:
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    return path, json.dumps({"protected": protected, "payload": body, "signature": b64(sig)})


key = ec.generate_private_key(ec.SECP256R1())
status, out, resp = post("/acme/default/new-account", {"termsOfServiceAgreed": True}, key)
check(status == 201 and resp.getheader("Location") and resp.getheader("Replay-Nonce"), f"new account: {status} {out}")
status, out, _ = post("/acme/default/new-account", {"onlyReturnExisting": True}, key)
check(status == 200 and out["status"] == "valid", f"onlyReturnExisting finds it: {status} {out}")
status, out, _ = post("/acme/default/new-account", {"onlyReturnExisting": True}, ec.generate_private_key(ec.SECP256R1()))
check(status == 400 and out["type"].endswith(":accountDoesNotExist"), f"no account for a new key: {out}")
used = nonce()
post("/acme/default/new-account", {}, key, nonce_value=used)
status, out, resp = post("/acme/default/new-account", {}, key, nonce_value=used)
check(status == 400 and out["type"].endswith(":badNonce") and resp.getheader("Replay-Nonce"),
      f"a nonce used twice: badNonce with a fresh nonce: {out}")
# The same nonce spelled otherwise: base64url's last character has spare low bits.
alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
used = nonce()
post("/acme/default/new-account", {}, key, nonce_value=used)
respelled = used[:-1] + alphabet[alphabet.index(used[-1]) ^ 1]
status, out, _ = post("/acme/default/new-account", {}, key, nonce_value=respelled)
check(status == 400 and out["type"].endswith(":badNonce"), f"a used nonce spelled otherwise: badNonce: {status} {out}")
status, out, _ = post("/acme/default/new-account", {}, key, url=f"{cf.url}/acme/default/elsewhere")
check(status == 403 and out["type"].endswith(":unauthorized"), f"a JWS url of another request: {out}")
status, out, _ = post("/acme/default/new-account", {}, key, forge=True)
check(status == 400 and out["type"].endswith(":malformed") and "does not verify" in out["detail"],
      f"a forged signature: {out}")
status, out, _ = post("/acme/default/new-account", {}, rsa.generate_private_key(65537, 1024))
check(status == 400 and out["type"].endswith(":badPublicKey"), f"a 1024-bit RSA key: {out}")
status, out, _ = post("/acme/default/new-account", {"contact": ["tel:+4612345"]}, ec.generate_private_key(ec.SECP256R1()))
check(status == 400 and out["type"].endswith(":unsupportedContact"), f"a tel: contact: {out}")
gone = ec.generate_private_key(ec.SECP256R1())
_, _, resp = post("/acme/default/new-account", {"termsOfServiceAgreed": True}, gone)
gone_kid = resp.getheader("Location")
status, out, _ = post(gone_kid, {"status": "deactivated"}, gone, kid=gone_kid)
check(status == 200 and out["status"] == "deactivated", f"an account deactivated: {status} {out}")
for what, (status, out, _) in (("a request of the deactivated account", post(gone_kid, None, gone, kid=gone_kid)),
                               ("new-account with its key", post("/acme/default/new-account",
                                                                 {"termsOfServiceAgreed": True}, gone))):
    check(status == 403 and out["type"].endswith(":unauthorized"), f"{what}: unauthorized: {status} {out}")
status, out, _ = cf.request("POST", "/acme/default/new-account", body="{}", headers={"Content-Type": "application/json"})
check(status == 415 and out["status"] == 415, f"a body that is not application/jose+json: {status} {out}")
# One key registered by several requests at once (on PostgreSQL none sees the others' account
# before it commits): one account, every answer 200 or 201 with its URL, no store error.
racing = ec.generate_private_key(ec.SECP256R1())
raced = [None] * 12
racers = [threading.Thread(target=lambda i=i: raced.__setitem__(
    i, post("/acme/default/new-account", {"termsOfServiceAgreed": True}, racing))) for i in range(len(raced))]
for t in racers:
    t.start()
for t in racers:
    t.join()
check(all(status in (200, 201) for status, _, _ in raced) and len({r.getheader("Location") for _, _, r in raced}) == 1,
      f"one key registered {len(raced)} times at once: one account: {[(st, str(o)[:120]) for st, o, _ in raced]}")

# ---- orders from a client written here: the problems of bad orders, CSRs and answers ----
account_key = ec.generate_private_key(ec.SECP256R1())
_, _, resp = post("/acme/default/new-account", {"termsOfServiceAgreed": True}, account_key)
kid = resp.getheader("Location")
jwk = jwk_of(account_key)
thumbprint = b64(hashlib.sha256(json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"),
                                           sort_keys=True).encode()).digest())


def kpost(path, payload):
    return post(path, payload, account_key, kid=kid)


def settled(order_url):
    """The order once its validation has decided, or as it is after 30 s of looking."""
    for _ in range(600):
        _, order, _ = kpost(order_url, None)
        if order["status"] != "pending":
            break
        time.sleep(0.05)
    return order


def order_dns01(name, txt, account=None):
    """An order for `name` whose dns-01 challenge is answered with the TXT value `txt` (None: the
    right one), by `account` (key, kid, thumbprint; None: the account above); returns the
    order's URL once validation has decided."""
    signer, signer_kid, signer_thumbprint = account or (account_key, kid, thumbprint)

    def kpost(path, payload):
        return post(path, payload, signer, kid=signer_kid)

    status, order, resp = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": name}]})
    check(status == 201 and order["status"] == "pending", f"new order for {name}: {status} {order}")
    order_url = resp.getheader("Location")
    _, authz, _ = kpost(order["authorizations"][0], None)
    challenge = next(c for c in authz["challenges"] if c["type"] == "dns-01")
    key_authorization = f"{challenge['token']}.{signer_thumbprint}"
    dns.set_txt(f"_acme-challenge.{name}", txt or b64(hashlib.sha256(key_authorization.encode()).digest()))
    status, answered, resp = kpost(challenge["url"], {})
    decided = "invalid" if txt else "valid"
    check(status == 200 and answered["status"] == decided and ("validated" in answered) == (decided == "valid")
          and "rel=\"up\"" in ",".join(resp.headers.get_all("Link")),
          f"the challenge is answered once its validation decided ({decided}): {answered}")
    for _ in range(600):  # until the validation job has decided; certbot and lego poll the same way
        _, order, _ = kpost(order_url, None)
        if order["status"] != "pending":
            return order_url, order, challenge["url"]
        time.sleep(0.05)
    check(False, f"the validation of {name} ended")


status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "z.example.test"}],
                                                  "notBefore": "0001-01-01T00:00:00Z", "notAfter": "0001-01-01T00:00:00Z"})
check(status == 201 and "notAfter" not in out, f"an order with Go's zero times, as the step CLI sends: {status} {out}")
status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "z.example.test"}],
                                                  "notAfter": "2030-01-01T00:00:00Z"})
check(status == 400 and out["type"].endswith(":malformed") and "notAfter" in out["detail"],
      f"an order asking for its own notAfter: the profile sets the validity: {out}")
status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "bad_name.example.test"}]})
check(status == 400 and out["type"].endswith(":rejectedIdentifier"), f"a name certfleet does not issue for: {out}")
status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "email", "value": "a@example.test"}]})
check(status == 400 and out["type"].endswith(":unsupportedIdentifier"), f"an email identifier: {out}")
for name in ("10.1", "167772161", "www.example.123"):  # resolvers read the first two as addresses
    status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": name}]})
    check(status == 400 and out["type"].endswith(":rejectedIdentifier"), f"a name whose last label is a number: {out}")
long_name = "a" * 60 + ".example.test"
status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": long_name}]})
check(status == 400 and out["type"].endswith(":rejectedIdentifier") and "64" in out["detail"],
      f"an order with no name that fits a common name: {out}")

order_url, order, _ = order_dns01("c.example.test", None)
check(order["status"] == "ready", f"a right dns-01 answer makes the order ready: {order}")
status, out, _ = kpost(order_url, {"status": "valid"})
check(status == 400 and out["type"].endswith(":malformed"), f"a POST-as-GET with a payload: {out}")
csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
    x509.SubjectAlternativeName([x509.DNSName("c.example.test")]), critical=False).sign(account_key, hashes.SHA256())
status, out, _ = kpost(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
check(status == 400 and out["type"].endswith(":badCSR") and "account's key" in out["detail"],
      f"a CSR with the account's own key: {out}")
other_key = ec.generate_private_key(ec.SECP256R1())
csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
    x509.SubjectAlternativeName([x509.DNSName("other.example.test")]), critical=False).sign(other_key, hashes.SHA256())
status, out, _ = kpost(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
check(status == 400 and out["type"].endswith(":badCSR") and "other.example.test" in out["detail"],
      f"a CSR naming another name than the order: {out}")
csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
    x509.SubjectAlternativeName([x509.DNSName("c.example.test")]), critical=False).sign(other_key, hashes.SHA256())
status, out, _ = kpost(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
check(status == 200 and out["status"] == "valid" and out["certificate"], f"the right CSR is issued: {out}")
status, chain, resp = post(out["certificate"], None, account_key, kid=kid)
alternate = [link for link in resp.headers.get_all("Link") if "alternate" in link]
check(status == 200 and resp.getheader("Content-Type") == "application/pem-certificate-chain" and alternate,
      f"the certificate chain, with an alternate chain linked: {resp.headers}")
status, alt_chain, _ = post(alternate[0].split(">")[0].lstrip("<"), None, account_key, kid=kid)
check(status == 200 and root_pem.strip() in str(alt_chain) and root_pem.strip() not in str(chain)
      and str(alt_chain).startswith(str(chain)), "the alternate chain is the default one and the root")
status, _, _ = post(out["certificate"], None, ec.generate_private_key(ec.SECP256R1()), kid=kid)
check(status == 400, "a certificate download signed by another key than the account's is refused")

# ---- revokeCert by an account that did not order the certificate (RFC 8555 7.6) ----
def another_account():
    other = ec.generate_private_key(ec.SECP256R1())
    _, _, created = post("/acme/default/new-account", {"termsOfServiceAgreed": True}, other)
    other_jwk = jwk_of(other)
    return other, created.getheader("Location"), b64(hashlib.sha256(json.dumps(
        other_jwk, separators=(",", ":"), sort_keys=True).encode()).digest())


_, order, _ = order_dns01("r.example.test", None)
csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
    x509.SubjectAlternativeName([x509.DNSName("r.example.test")]), critical=False).sign(other_key, hashes.SHA256())
_, out, _ = kpost(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
_, r_chain, _ = kpost(out["certificate"], None)
r_cert = x509.load_pem_x509_certificate(r_chain if isinstance(r_chain, bytes) else r_chain.encode())
revocation = {"certificate": b64(r_cert.public_bytes(serialization.Encoding.DER))}
stranger, stranger_kid, _ = another_account()
status, out, _ = post("/acme/default/revoke-cert", revocation, stranger, kid=stranger_kid)
check(status == 403 and out["type"].endswith(":unauthorized"),
      f"an account with no authorization for its names may not revoke it: {status} {out}")
holder = another_account()
_, held, _ = order_dns01("r.example.test", None, account=holder)
check(held["status"] == "ready", f"another account validates r.example.test: {held}")
status, out, _ = post("/acme/default/revoke-cert", revocation, holder[0], kid=holder[1])
check(status == 200, f"an account authorized for every name of the certificate may revoke it: {status} {out}")
check(cf.api("GET", f"/v1/certificates/{format(r_cert.serial_number, 'x')}")["status"] == "revoked",
      "and the certificate is revoked")

# Revocation by a certificate's own key: only of certificates this profile issued.
api_cert = cf.api("POST", "/v1/certificates/server", {"fqdn": "api-issued.iot.example.com",
                                                      "parent_fqdn": "iot.example.com"}, expect=201)
api_key = serialization.load_pem_private_key(api_cert["private_key_pem"].encode(), None)
api_der = x509.load_pem_x509_certificate(api_cert["certificate_pem"].encode()).public_bytes(serialization.Encoding.DER)
status, out, _ = post("/acme/default/revoke-cert", {"certificate": b64(api_der)}, api_key)
check(status == 403 and out["type"].endswith(":unauthorized") and cf.api(
    "GET", f"/v1/certificates/{api_cert['serial']}")["status"] == "active",
      f"a certificate issued through the API is not revoked through ACME, even signed by its key: {status} {out}")

# ---- ACME Renewal Information (RFC 9773) ----
leaf = x509.load_pem_x509_certificate(chain if isinstance(chain, bytes) else chain.encode())
aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
serial = leaf.serial_number
cert_id = f"{b64(aki)}.{b64(serial.to_bytes(serial.bit_length() // 8 + 1, 'big'))}"
check(cf.api("GET", "/acme/default/directory", bearer="-")["renewalInfo"] == f"{cf.url}/acme/default/renewal-info",
      "the directory names renewalInfo")
status, info, resp = cf.request("GET", f"/acme/default/renewal-info/{cert_id}")
window = info["suggestedWindow"] if status == 200 else {}
check(status == 200 and resp.getheader("Retry-After") and time.time() + 50 * 86400 < datetime.datetime.fromisoformat(
    window["start"].replace("Z", "+00:00")).timestamp() < datetime.datetime.fromisoformat(
    window["end"].replace("Z", "+00:00")).timestamp(), f"renewalInfo: a window in the last third of its life: {info}")
status, info, _ = cf.request("GET", "/acme/default/renewal-info/AAAA.AAAA")
check(status == 404, f"renewalInfo of an unknown certificate: {status} {info}")
status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "other.example.test"}],
                                                   "replaces": cert_id})
check(status == 400 and out["type"].endswith(":malformed") and "shares no identifier" in out["detail"],
      f"an order replacing a certificate it shares no name with: {status} {out}")
# Several orders replacing it at once (signed before, sent together): the first written is
# taken, the others are refused.
requests = [signed("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "c.example.test"}],
                                               "replaces": cert_id}, account_key, kid=kid) for _ in range(8)]
raced, start = [None] * len(requests), threading.Barrier(len(requests))


def race(i):
    start.wait()
    raced[i] = send(*requests[i])


racers = [threading.Thread(target=race, args=(i,)) for i in range(len(raced))]
for t in racers:
    t.start()
for t in racers:
    t.join()
taken = [out for status, out, _ in raced if status == 201]
check(len(taken) == 1 and taken[0]["replaces"] == cert_id
      and all(out["type"].endswith(":alreadyReplaced") for status, out, _ in raced if status != 201),
      f"{len(raced)} orders replacing it at once: one taken: {[(st, str(o)[:100]) for st, o, _ in raced]}")
status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "c.example.test"}],
                                                   "replaces": cert_id})
check(status == 409 and out["type"].endswith(":alreadyReplaced"), f"a second order replacing it: {status} {out}")
respelled = f"{b64(aki)}.{b64(bytes(1) + serial.to_bytes(serial.bit_length() // 8 + 1, 'big'))}"
status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "c.example.test"}],
                                                   "replaces": respelled})
check(status == 409 and out["type"].endswith(":alreadyReplaced"),
      f"its id spelled with a leading zero octet names the same certificate: {status} {out}")
status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "c.example.test"}],
                                                   "replaces": "AAAA.AAAA"})
check(status == 400 and out["type"].endswith(":malformed"), f"replaces naming no certificate: {out}")
cf.api("POST", f"/v1/certificates/{format(serial, 'x')}/revoke", {"reason": "superseded"})
status, info, _ = cf.request("GET", f"/acme/default/renewal-info/{cert_id}")
check(status == 200 and datetime.datetime.fromisoformat(info["suggestedWindow"]["end"].replace("Z", "+00:00")
                                                        ).timestamp() <= time.time() + 1,
      f"once revoked (through /v1), renewalInfo says renew now: {info}")

# ---- key rollover (RFC 8555 7.3.5): the inner JWS signed by the new key ----
def sign(key, header, payload):
    """A flattened JWS of `payload` (None: the empty payload of a POST-as-GET)."""
    protected = b64(json.dumps(header).encode())
    body = "" if payload is None else b64(json.dumps(payload).encode())
    r, s_ = utils.decode_dss_signature(key.sign(f"{protected}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return {"protected": protected, "payload": body, "signature": b64(r.to_bytes(32, "big") + s_.to_bytes(32, "big"))}


new_key = ec.generate_private_key(ec.SECP256R1())
key_change = f"{cf.url}/acme/default/key-change"
inner = sign(new_key, {"alg": "ES256", "jwk": jwk_of(new_key), "url": key_change}, {"account": kid, "oldKey": jwk})
status, out, _ = post(key_change, inner, account_key, kid=kid)
check(status == 200 and out["status"] == "valid", f"key change: {status} {out}")
status, _, _ = post(kid, None, account_key, kid=kid)
check(status == 400, "the old key no longer signs for the account")
status, out, _ = cf.request("POST", "/acme/default/new-account", body=json.dumps(sign(
    new_key, {"alg": "PS256", "nonce": nonce(), "url": f"{cf.url}/acme/default/new-account", "jwk": jwk_of(new_key)},
    {})), headers={"Content-Type": "application/jose+json"})
check(status == 400 and out["type"].endswith(":badSignatureAlgorithm") and out.get("algorithms") == [
    "ES256", "ES384", "RS256", "EdDSA"], f"an algorithm not accepted: the problem lists those that are: {out}")
account_key = new_key
jwk = jwk_of(new_key)
thumbprint = b64(hashlib.sha256(json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"),
                                           sort_keys=True).encode()).digest())
status, _, _ = kpost(kid, None)
check(status == 200, "the new key does")
taken = ec.generate_private_key(ec.SECP256R1())
_, _, resp = post("/acme/default/new-account", {"termsOfServiceAgreed": True}, taken)
inner = sign(taken, {"alg": "ES256", "jwk": jwk_of(taken), "url": key_change}, {"account": kid, "oldKey": jwk})
status, out, resp2 = kpost(key_change, inner)
check(status == 409 and resp2.getheader("Location") == resp.getheader("Location"),
      f"a key another account has: 409 naming that account: {status} {out}")
check("acme.account.key_change" in [a["action"] for a in cf.api("GET", "/v1/audit?limit=200")["items"]],
      "the key change is audited")

order_url, order, challenge_url = order_dns01("d.example.test", "not-the-key-authorization")
_, challenge, _ = kpost(challenge_url, None)
check(order["status"] == "invalid" and challenge["status"] == "invalid"
      and challenge["error"]["type"].endswith(":incorrectResponse")
      and order["error"]["subproblems"][0]["identifier"]["value"] == "d.example.test",
      f"a challenge answered wrongly: invalid, incorrectResponse: {challenge} {order}")
# ---- an order's notAfter (RFC 8555 7.4), as cert-manager's duration and Caddy's lifetime ask:
# a shorter life than the profile's; a notBefore or a longer life is refused ----
status, out, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "short.example.test"}],
                                                  "notBefore": "2030-01-01T00:00:00Z"})
check(status == 400 and out["type"].endswith(":malformed") and "notBefore" in out["detail"],
      f"an order asking for its own notBefore: {out}")
wanted = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=2)
status, order, resp = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "short.example.test"}],
                                                      "notAfter": wanted.strftime("%Y-%m-%dT%H:%M:%SZ")})
check(status == 201 and order["notAfter"].startswith(wanted.strftime("%Y-%m-%dT%H:%M:%S")),
      f"an order for a two-day certificate echoes its notAfter: {status} {order}")
_, authz, _ = kpost(order["authorizations"][0], None)
challenge = next(c for c in authz["challenges"] if c["type"] == "dns-01")
dns.set_txt("_acme-challenge.short.example.test",
            b64(hashlib.sha256(f"{challenge['token']}.{thumbprint}".encode()).digest()))
check(kpost(challenge["url"], {})[1]["status"] == "valid", "the two-day order's dns-01 challenge is valid")
csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
    x509.SubjectAlternativeName([x509.DNSName("short.example.test")]), critical=False).sign(other_key, hashes.SHA256())
status, order, _ = kpost(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
_, pem, _ = post(order["certificate"], None, account_key, kid=kid)
short_leaf = x509.load_pem_x509_certificate(pem if isinstance(pem, bytes) else pem.encode())
check(short_leaf.not_valid_after == wanted.replace(tzinfo=None),
      f"the certificate ends at the notAfter asked for: {short_leaf.not_valid_after} {wanted}")

# ---- a TXT record not there yet: answered as processing when the first attempt ends, valid
# once it is there and the validation is tried again ----
status, order, resp = kpost("/acme/default/new-order", {"identifiers": [{"type": "dns", "value": "late.example.test"}]})
late_url = resp.getheader("Location")
_, authz, _ = kpost(order["authorizations"][0], None)
challenge = next(c for c in authz["challenges"] if c["type"] == "dns-01")
status, answered, resp = kpost(challenge["url"], {})
check(status == 200 and answered["status"] == "processing" and resp.getheader("Retry-After") == "1",
      f"a challenge whose record is not there yet: processing, Retry-After: {answered}")
dns.set_txt("_acme-challenge.late.example.test",
            b64(hashlib.sha256(f"{challenge['token']}.{thumbprint}".encode()).digest()))
order = settled(late_url)  # the retry comes after a backoff of about 2 s
check(order["status"] == "ready", f"the record there, the retried validation makes the order ready: {order}")
status, out, _ = post("/acme/partners/new-account", {"termsOfServiceAgreed": True}, ec.generate_private_key(
    ec.SECP256R1()))
check(status == 403 and out["type"].endswith(":externalAccountRequired"), f"a new account without EAB: {out}")
# ---- an IP identifier (RFC 8738), validated by http-01 against a responder written here ----
responder = Http01Responder(HTTP01_PORT, lambda: thumbprint)
status, order, resp = kpost("/acme/default/new-order", {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})
ip_order_url = resp.getheader("Location")
_, authz, _ = kpost(order["authorizations"][0], None)
check(sorted(c["type"] for c in authz["challenges"]) == ["http-01", "tls-alpn-01"] and authz["identifier"] == {
    "type": "ip", "value": "127.0.0.1"}, f"an address is offered http-01 and tls-alpn-01: {authz}")
kpost(next(c["url"] for c in authz["challenges"] if c["type"] == "http-01"), {})
order = settled(ip_order_url)
check(order["status"] == "ready", f"http-01 on the address validates: {order}")
csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
    x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False).sign(
    other_key, hashes.SHA256())
status, order, _ = kpost(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
_, pem, _ = post(order["certificate"], None, account_key, kid=kid)
ip_leaf = x509.load_pem_x509_certificate(pem if isinstance(pem, bytes) else pem.encode())
check(ip_leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
    x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")], "the certificate names the address as an IP SAN")
responder.stop()

# ---- http-01 through redirects (RFC 8555 8.3: SHOULD), as Let's Encrypt follows them: to http
# on acme.http01_port or https on acme.tlsalpn01_port, to hosts the profile issues for ----
redirect_to = {}


def redirecting(path):
    token = path.rsplit("/", 1)[-1]
    if path.startswith("/.well-known/acme-challenge/"):
        return 302, {"Location": redirect_to["target"].format(token=token)}, b""
    if path.startswith("/internal/"):
        return 200, {}, b"internal-secret"
    return 200, {}, f"{token}.{thumbprint}".encode()


def http01_answer(value):
    """The answer to an http-01 challenge of an order for the address `value`."""
    _, order, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "ip", "value": value}]})
    _, authz, _ = kpost(order["authorizations"][0], None)
    return kpost(next(c["url"] for c in authz["challenges"] if c["type"] == "http-01"), {})[1]


redirector = LoopbackGetServer(HTTP01_PORT, redirecting)
redirect_to["target"] = "/moved/{token}"
answered = http01_answer("127.0.0.1")
check(answered["status"] == "valid", f"http-01 answered through a redirect to another path: {answered}")
redirect_to["target"] = f"http://moved.example.test:{HTTP01_PORT}/moved/{{token}}"
answered = http01_answer("127.0.0.1")
check(answered["status"] == "valid", f"through a redirect to a name, looked up through acme.resolver: {answered}")
redirect_to["target"] = f"http://127.0.0.1:{free_port()}/moved/{{token}}"
answered = http01_answer("127.0.0.1")
check(answered["status"] == "invalid" and answered["error"]["type"].endswith(":unauthorized")
      and "only http on port" in answered["error"]["detail"], f"a redirect to another port: {answered}")
# Validation may reach servers only certfleet reaches: what they answer is never shown.
redirect_to["target"] = "/internal/{token}"
answered = http01_answer("127.0.0.1")
check(answered["status"] == "invalid" and answered["error"]["type"].endswith(":incorrectResponse")
      and "internal-secret" not in json.dumps(answered), f"a wrong answer is not quoted to the client: {answered}")
answered = http01_answer("169.254.169.254")
check(answered["status"] == "invalid" and answered["error"]["type"].endswith(":rejectedIdentifier")
      and "link-local" in answered["error"]["detail"], f"a link-local address is not connected to: {answered}")
# Nor the same address inside IPv6 (IPv4-mapped: the kernel would connect to it over IPv4).
answered = http01_answer("::ffff:169.254.169.254")
check(answered["status"] == "invalid" and answered["error"]["type"].endswith(":rejectedIdentifier")
      and "link-local" in answered["error"]["detail"], f"an IPv4-mapped link-local address: {answered}")
# A default profile stored with a DNS suffix only issues for no address.
cf.api("PUT", "/v1/acme/profiles/default", {"ca": "iot.example.com", "dns_suffixes": ["example.test"]}, expect=201)
status, refused, _ = kpost("/acme/default/new-order", {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})
check(status == 400 and refused["type"].endswith(":rejectedIdentifier"),
      f"a profile limited to names refuses an address: {status} {refused}")
# With loopback in its ranges too: a redirect to a name outside its suffixes is not followed.
cf.api("PUT", "/v1/acme/profiles/default", {"ca": "iot.example.com", "dns_suffixes": ["example.test"],
                                             "ip_ranges": ["127.0.0.0/8"]})
redirect_to["target"] = f"http://elsewhere.test:{HTTP01_PORT}/moved/{{token}}"
answered = http01_answer("127.0.0.1")
check(answered["status"] == "invalid" and "does not issue for" in answered["error"]["detail"],
      f"a redirect to a host the profile does not issue for: {answered}")
check(not any(q[0] == "elsewhere.test" for q in dns.queries), "and that host was not even looked up")
status, _, _ = cf.request("DELETE", "/v1/acme/profiles/default", bearer=cf.token)
check(status == 204, f"the stored default profile removed: {status}")
redirector.stop()

# ---- a profile changed is served so at once by the node that changed it (which had just read it) ----
check(cf.api("GET", "/acme/partners/directory", bearer="-")["meta"]["externalAccountRequired"] is True,
      "the partners profile needs EAB")
cf.api("PUT", "/v1/acme/profiles/partners", {"ca": "iot.example.com", "dns_suffixes": ["partner.test"]})
check(cf.api("GET", "/acme/partners/directory", bearer="-")["meta"]["externalAccountRequired"] is False,
      "changed to need no EAB, its directory says so at once")

# ---- two nodes on one PostgreSQL: a nonce made by one is taken once by either ----
if DB_KIND == "postgres":
    node2 = cf.another_node()
    # Each node reads a profile at most once a second: the second node sees a change within it.
    check(node2.api("GET", "/acme/partners/directory", bearer="-")["meta"]["externalAccountRequired"] is False,
          "the second node serves the changed profile")
    cf.api("PUT", "/v1/acme/profiles/partners", {"ca": "iot.example.com", "eab_required": True})
    deadline = time.monotonic() + 5
    while node2.api("GET", "/acme/partners/directory", bearer="-")["meta"]["externalAccountRequired"] is False:
        check(time.monotonic() < deadline, "the second node sees a profile changed on the first within 5 s")
        time.sleep(0.05)
    used = nonce()  # made by the first node
    status, out, _ = node2.request("POST", kid.removeprefix(cf.url), body=json.dumps(sign(account_key, {
        "alg": "ES256", "nonce": used, "url": kid, "kid": kid}, {})), headers={"Content-Type": "application/jose+json"})
    check(status == 200 and out["status"] == "valid", f"the second node takes the first node's nonce: {status} {out}")
    status, out, _ = post(kid, None, account_key, kid=kid, nonce_value=used)
    check(status == 400 and out["type"].endswith(":badNonce"), f"and the first node refuses it then: {out}")
    status, out, _ = node2.request("POST", order_url.removeprefix(cf.url), body=json.dumps(sign(account_key, {
        "alg": "ES256", "nonce": nonce(), "url": order_url, "kid": kid}, None)), headers={
        "Content-Type": "application/jose+json"})
    check(status == 200 and out["status"] == "invalid",
          f"an order made through one node, read through the other: {status} {out}")
    node2.stop()
# ---- the wait runs out first: an http-01 server that answers only once the test lets it ----
released = threading.Event()


def held_answer(path):
    released.wait(60)
    return {}, f"{path.rsplit('/', 1)[-1]}.{thumbprint}".encode()


held = LoopbackGetServer(0, held_answer)
cf.stop()
cf.env.update({"CERTFLEET_SERVER_LISTEN": f"127.0.0.1:{cf.port}", "CERTFLEET_ACME_CHALLENGE_WAIT_MS": "300",
               "CERTFLEET_ACME_HTTP01_PORT": str(held.port)})
cf.start()


def retried():
    metrics = cf.request("GET", "/metrics", bearer=cf.token)[1]
    return int(re.search(r'certfleet_acme_validations_total\{outcome="retried"\} (\d+)', metrics).group(1))


retried_before = retried()
status, order, resp = kpost("/acme/default/new-order", {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})
held_url = resp.getheader("Location")
_, authz, _ = kpost(order["authorizations"][0], None)
status, answered, resp = kpost(next(c["url"] for c in authz["challenges"] if c["type"] == "http-01"), {})
check(status == 200 and answered["status"] == "processing" and resp.getheader("Retry-After") == "1",
      f"a validation still waiting for its server when acme.challenge_wait_ms ends: processing: {answered}")
released.set()
order = settled(held_url)
check(order["status"] == "ready", f"and the validation goes on: the order is ready once the server answered: {order}")
check(retried() == retried_before, "answered by the wait's end, not by a first attempt that timed out")
held.stop()

# ---- a node dies during a validation's last attempt: once the job's lease has run out, the
# challenge, its authorization and order are invalid (serverInternal), not processing forever ----
reached, let_go = threading.Event(), threading.Event()


def stalled_answer(path):
    reached.set()
    let_go.wait(60)
    return {}, b"too late"


stalled = LoopbackGetServer(0, stalled_answer)
cf.stop()
cf.env.update({"CERTFLEET_ACME_HTTP01_PORT": str(stalled.port), "CERTFLEET_ACME_VALIDATION_ATTEMPTS": "1",
               "CERTFLEET_JOBS_LEASE_SECONDS": "5", "CERTFLEET_ACME_SWEEP_SECONDS": "5"})
cf.start()
status, order, resp = kpost("/acme/default/new-order", {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})
lost_url = resp.getheader("Location")
_, authz, _ = kpost(order["authorizations"][0], None)
lost_challenge = next(c["url"] for c in authz["challenges"] if c["type"] == "http-01")
status, answered, _ = kpost(lost_challenge, {})
check(status == 200 and answered["status"] == "processing", f"the validation waits on its server: {answered}")
check(reached.wait(30), "its only attempt reached the http-01 server")
cf.kill()
cf.start()
lost = wait_for("the lost validation's order to be decided",
                lambda: (lambda o: o if o["status"] != "pending" else None)(kpost(lost_url, None)[1]), timeout=90)
_, authz, _ = kpost(order["authorizations"][0], None)
_, challenge, _ = kpost(lost_challenge, None)
check(lost["status"] == "invalid" and lost["error"]["type"].endswith(":serverInternal")
      and authz["status"] == "invalid" and challenge["status"] == "invalid"
      and challenge["error"]["type"].endswith(":serverInternal") and "lease" not in json.dumps(challenge),
      f"a validation whose node died is invalid once its job is dead, without the node's story: {lost} {challenge}")
check(re.search(r'"msg":"ACME validation abandoned".*lease expired', open(cf.log_path).read()),
      "the log says why: the lease of its job ran out")
let_go.set()
stalled.stop()
status, _, _ = cf.request("DELETE", "/v1/acme/profiles/partners", bearer=cf.token)
check(status == 204, f"DELETE a profile: {status}")
status, out, _ = cf.request("GET", "/acme/partners/directory")
check(status == 404 and out["type"].endswith(":malformed"), f"a deleted profile is not served at once: {status} {out}")
cf.stop()
finish("acme_e2e")
