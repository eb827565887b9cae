#!/usr/bin/python3
"""ACME (issue 20, being built) end to end: certbot registers an account with certfleet,
updates its contact and deactivates it; requests signed here (Python cryptography) get the
RFC 8555 problem documents for a bad nonce, a wrong url, a forged signature and a weak key.

usage: acme_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import base64
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402
from harness import Certfleet, Files  # noqa: E402

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa, padding, utils  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
files = Files("certfleet-acme-e2e-")
cf = Certfleet(BINARY, DB_KIND, "acme-e2e", extra_env={"CERTFLEET_ACME_CA": "iot.example.com"})
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
certbot_dir = files.path("certbot")
env = dict(os.environ, REQUESTS_CA_BUNDLE=os.path.join(cf.data, "tls", "ca.pem"))
common = ["--server", DIRECTORY, "--config-dir", f"{certbot_dir}/config", "--work-dir", f"{certbot_dir}/work",
          "--logs-dir", f"{certbot_dir}/logs", "--non-interactive"]


def certbot(*args):
    p = subprocess.run(["certbot", *args, *common], env=env, capture_output=True, text=True, timeout=120)
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


def post(path, payload, key, url=None, nonce_value=None, forge=False):
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    header = {"alg": alg, "nonce": nonce_value or nonce(), "url": url or f"{cf.url}{path}", "jwk": jwk_of(key)}
    protected = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    signing_input = f"{protected}.{body}".encode()
    if alg == "RS256":
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = utils.decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if forge:
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    status, out, resp = cf.request("POST", path, body=json.dumps({"protected": protected, "payload": body,
                                                                 "signature": b64(sig)}),
                                   headers={"Content-Type": "application/jose+json"})
    return status, out, resp


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
status, out, _ = post("/acme/default/new-account", {}, key, url=f"{cf.url}/acme/default/elsewhere")
check(status == 403 and out["type"].endswith(":unauthorized"), f"a JWS url of another request: {out}")
status, out, _ = post("/acme/default/new-account", {}, key, forge=True)
check(status == 400 and out["type"].endswith(":malformed") and "does not verify" in out["detail"],
      f"a forged signature: {out}")
status, out, _ = post("/acme/default/new-account", {}, rsa.generate_private_key(65537, 1024))
check(status == 400 and out["type"].endswith(":badPublicKey"), f"a 1024-bit RSA key: {out}")
status, out, _ = post("/acme/default/new-account", {"contact": ["tel:+4612345"]}, ec.generate_private_key(ec.SECP256R1()))
check(status == 400 and out["type"].endswith(":unsupportedContact"), f"a tel: contact: {out}")
status, out, _ = cf.request("POST", "/acme/default/new-account", body="{}", headers={"Content-Type": "application/json"})
check(status == 415, f"a body that is not application/jose+json: {status} {out}")
cf.stop()
finish("acme_e2e")
