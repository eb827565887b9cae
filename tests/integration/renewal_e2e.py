#!/usr/bin/python3
"""W4 end to end, the host registry and enrollment: hosts registered over HTTPS with their
checks and defaults, listed by status and due date, an agent's enrollment token made with
`certfleet host token`, and an enrollment with it (a key and CSR made here with Python
cryptography), whose certificate `openssl verify` accepts as a TLS server and client.

A real certfleet-agent process enrolls too: key, certificate and chain land in the folders
registered for its host, the key with mode 0400, and `openssl verify` accepts the chain.

usage: renewal_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import datetime
import json
import hashlib
import hmac
import http.client
import http.server
import os
import shutil
import socket
import stat
import subprocess
import ssl
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet  # noqa: E402
from servers import S3Server, SmtpServer  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
mail_dir = tempfile.mkdtemp(prefix="renewal-smtp-", dir=os.environ.get("CERTFLEET_TEST_STATE", "/tmp"))
smtp = SmtpServer(mail_dir)


class Hooks(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: keeps each POST's headers and JSON body, answering 200 with a large
    page; refuses the next `failures` POSTs with 500 (their delivery ids in `refused`)."""
    received = []
    refused = []
    failures = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hooks.failures > 0:
            Hooks.failures -= 1
            Hooks.refused.append(self.headers["X-Certfleet-Delivery"])
            self.send_response(500)
        else:
            # Accepted with a page of 100 KiB, as some receivers answer: only the status counts.
            Hooks.received.append((dict(self.headers), body))
            page = b"<html>" + b"x" * 100 * 1024 + b"</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        self.end_headers()

    def log_message(self, *args):
        pass


hooks = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
# With PostgreSQL (the multi-node setup), CRLs are published to an S3-compatible store.
s3 = S3Server(mail_dir, "crls") if DB_KIND == "postgres" else None
blobs_env = {"CERTFLEET_BLOBS": f"s3://crls?endpoint={s3.endpoint}&region=us-east-1",
             "CERTFLEET_S3_ACCESS_KEY_ID": "S3RVER", "CERTFLEET_S3_SECRET_ACCESS_KEY": "S3RVER"} if s3 else {}
threading.Thread(target=hooks.serve_forever, daemon=True).start()
# A second webhook URL that refuses connections: its port is bound, never listened on.
refusing = socket.socket()
refusing.bind(("127.0.0.1", 0))
down_url = f"http://hook:down-pw@127.0.0.1:{refusing.getsockname()[1]}/down"
# Short deadlines and grace, one attempt: a killed agent's renewal fails within seconds. The
# deadline leaves room for agent-5's two reload timeouts and four agents' fsynced swaps at once.
cf = Certfleet(BINARY, DB_KIND, "renewal-e2e", extra_env={
    "CERTFLEET_RENEWAL_KEY_PATH": "/etc/pki/private", "CERTFLEET_RENEWAL_THRESHOLD_DAYS": "7",
    "CERTFLEET_RENEWAL_CA": "hosts.example.com", "CERTFLEET_RENEWAL_VALIDITY_DAYS": "30",
    "CERTFLEET_RENEWAL_DEADLINE_SECONDS": "15", "CERTFLEET_RENEWAL_MAX_ATTEMPTS": "1",
    "CERTFLEET_RENEWAL_GRACE_SECONDS": "3", "CERTFLEET_RENEWAL_NOTIFY": "ops@example.com",
    "CERTFLEET_MAIL": f"smtp://127.0.0.1:{smtp.port}",
    "CERTFLEET_WEBHOOKS_URLS": f"http://127.0.0.1:{hooks.server_address[1]}/hook,{down_url}",
    "CERTFLEET_WEBHOOKS_SECRET": "hook-s3cret", "CERTFLEET_WEBHOOKS_EVERY_SECONDS": "1", **blobs_env})
cf.init()
cf.start()


def api(method, route, body=None, expect=200, bearer=None):
    status, out, _ = cf.request(method, route, body=body, bearer=bearer or cf.token)
    check(status == expect, f"{method} {route}: {status}, wanted {expect}: {str(out)[:300]}")
    return out


web = api("POST", "/v1/hosts", {"host_id": "web-1.example.com", "sans": ["web-1.example.com", "10.0.0.7"],
                                "cert_path": "/srv/tls", "reload_command": "systemctl reload nginx"}, expect=201)
check(web["status"] == "enrolling" and web["certificate"] is None, f"a new host has no certificate yet: {web}")
check(web["cert_path"] == "/srv/tls" and web["key_path"] == "/etc/pki/private" and
      web["cacert_path"] == "/etc/certfleet/certs" and web["renewal_threshold_days"] == 7 and
      web["key_type"] == "ec-p256" and web["profile"] == "host",
      f"the host's own settings, the configuration's for the rest: {web}")
api("POST", "/v1/hosts", {"host_id": "db-1", "renewal_threshold_days": 2, "key_type": "rsa-3072"}, expect=201)
api("POST", "/v1/hosts", {"host_id": "web-1.example.com"}, expect=409)

for body, field in [({"host_id": "web_1"}, "host_id"), ({"host_id": "h", "key_path": "../keys"}, "key_path"),
                    ({"host_id": "h", "cacert_path": "/etc/../x"}, "cacert_path"),
                    ({"host_id": "h", "sans": "a.example.com"}, "sans"),
                    ({"host_id": "h", "renewal_threshold_days": "2"}, "renewal_threshold_days"),
                    ({"host_id": "h", "key_type": "dsa"}, "key_type"), ({}, "host_id")]:
    out = api("POST", "/v1/hosts", body, expect=400)
    check(field in out["error"]["message"], f"{body}: the error names {field}: {out}")
status, _, _ = cf.request("POST", "/v1/hosts", body={"host_id": "x" * 10}, bearer=None)
check(status == 401, f"registering a host needs a token: {status}")

listed = api("GET", "/v1/hosts")
check([h["host_id"] for h in listed["items"]] == ["db-1", "web-1.example.com"], f"hosts by id: {listed}")
check(len(api("GET", "/v1/hosts?status=enrolling&due_before=2100-01-01T00:00:00Z")["items"]) == 2,
      "both are due: they have no certificate")
check(api("GET", "/v1/hosts?due_before=2000-01-01T00:00:00Z")["items"] == [], "none was due in 2000")
page = api("GET", "/v1/hosts?limit=1")
check(len(page["items"]) == 1 and page["next"], f"pages: {page}")
check(api("GET", f"/v1/hosts?limit=1&next={page['next']}")["items"][0]["host_id"] == "web-1.example.com",
      "the next page")
api("GET", "/v1/hosts?status=sleeping", expect=400)
api("GET", "/v1/hosts?due_before=tomorrow", expect=400)
check(api("GET", "/v1/hosts/db-1")["key_type"] == "rsa-3072", "one host")
api("GET", "/v1/hosts/nope", expect=404)

p = cf.cli("host", "token", "db-1")
token = p.stdout.strip()
check(len(token) >= 40 and "single use" in p.stderr, f"certfleet host token prints a token: {p.stdout} {p.stderr}")
p = cf.cli("host", "token", "nope", expect=1)
check("no host nope" in p.stderr, f"a token for an unknown host is refused: {p.stderr}")
# Enrollment: the agent's key never leaves it; the CSR carries it.
api("POST", "/v1/certificates/root", {"fqdn": "example.com", "organization": "Acme"}, expect=201)
api("POST", "/v1/certificates/intermediate", {"fqdn": "hosts.example.com", "organization": "Acme"}, expect=201)
# Agents authenticate with certificates of renewal.ca, which now exists: the server trusts it from its start.
cf.stop()
cf.start()
key = ec.generate_private_key(ec.SECP256R1())
csr = (x509.CertificateSigningRequestBuilder()
       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db-1")]))
       .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


def enroll(host_id, bearer, expect, csr=csr):
    status, out, _ = cf.request("POST", "/v1/agent/enroll", body={"host_id": host_id, "csr": csr},
                                headers={"Authorization": f"Bearer {bearer}"} if bearer else None)
    check(status == expect, f"enroll {host_id}: {status}, wanted {expect}: {str(out)[:300]}")
    return out


enroll("web-1.example.com", token, 403)  # another host's token
enroll("db-1", None, 401)
enroll("db-1", "x" * 43, 403)
got = enroll("db-1", token, 201)
other_csr = (x509.CertificateSigningRequestBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db-1")]))
             .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
             .public_bytes(serialization.Encoding.PEM).decode())
enroll("db-1", token, 403, csr=other_csr)  # single use
again = enroll("db-1", token, 201)  # the same key again (an answer lost): the same certificate
check(again.get("serial") == got["serial"], f"asked again, the certificate issued before: {again.get('serial')}")
cert = x509.load_pem_x509_certificate(got["certificate"].encode())
check(cert.public_key().public_numbers() == key.public_key().public_numbers(), "the certificate is for the agent's key")
check(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "db-1", "CN = host id")
eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
check(ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku, f"server and client: {eku}")
check(got["key_path"] == "/etc/pki/private" and got["cacert_path"] == "/etc/certfleet/certs", f"where it goes: {got}")
folder = os.path.join(cf.work, "enrolled")
os.makedirs(folder)
for name, pem in [("cert.pem", got["certificate"]), ("chain.pem", got["chain"])]:
    with open(os.path.join(folder, name), "w") as f:
        f.write(pem)
root = api("GET", "/v1/certificates/example.com")["certificate_pem"]
with open(os.path.join(folder, "root.pem"), "w") as f:
    f.write(root)
for purpose in ("sslclient", "sslserver"):
    p = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(folder, "root.pem"), "-untrusted",
                        os.path.join(folder, "chain.pem"), "-purpose", purpose, os.path.join(folder, "cert.pem")],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"openssl verify -purpose {purpose}: {p.stdout} {p.stderr}")
host = api("GET", "/v1/hosts/db-1")
not_after = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
renewal = datetime.datetime.fromisoformat(host["renewal_date"].replace("Z", "+00:00"))
check(host["status"] == "active" and host["certificate"]["serial"] == got["serial"] and
      abs((not_after - renewal) - datetime.timedelta(days=2)) < datetime.timedelta(seconds=2),
      f"the host is active with its certificate, due 2 days (its threshold) before expiry: {host}")
check(datetime.timedelta(days=29) < not_after - datetime.datetime.now(datetime.timezone.utc) <
      datetime.timedelta(days=31), f"valid renewal.validity_days: {not_after}")

# A real agent, in a folder of its own as a host would be.
AGENT = os.path.join(os.path.dirname(BINARY), "certfleet-agent")
home = os.path.join(cf.work, "agent-1")
api("POST", "/v1/hosts", {"host_id": "agent-1", "cert_path": f"{home}/certs", "key_path": f"{home}/private",
                          "cacert_path": f"{home}/ca", "sans": ["agent-1.example.com"]}, expect=201)
agent_token = cf.cli("host", "token", "agent-1").stdout.strip()
run_agent = [AGENT, "--server", cf.url, "--host-id", "agent-1", "--ca-file", os.path.join(cf.data, "tls", "ca.pem"),
             "--state-dir", f"{home}/state", "--enroll-only"]
p = subprocess.run(run_agent, capture_output=True, text=True, timeout=60)
check(p.returncode == 1 and "bootstrap-token" in p.stderr, f"the first start needs a token: {p.stderr}")
p = subprocess.run(run_agent + ["--bootstrap-token", agent_token], capture_output=True, text=True, timeout=60)
check(p.returncode == 0 and '"msg":"enrolled"' in p.stderr, f"certfleet-agent enrolls: {p.stdout} {p.stderr}")
key_file, cert_file = f"{home}/private/agent-1.key", f"{home}/certs/agent-1.crt"
chain_file = f"{home}/ca/ca_chain_certificate.crt"
check(all(os.path.exists(f) for f in (key_file, cert_file, chain_file)), "key, certificate and chain by their names")
check(stat.S_IMODE(os.stat(key_file).st_mode) == 0o400, f"the key is 0400: {oct(os.stat(key_file).st_mode)}")
agent_key = serialization.load_pem_private_key(open(key_file, "rb").read(), None)
agent_cert = x509.load_pem_x509_certificate(open(cert_file, "rb").read())
check(agent_cert.public_key().public_numbers() == agent_key.public_key().public_numbers(),
      "the certificate is for the key made on the host")
p = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(folder, "root.pem"), "-untrusted", chain_file,
                    "-purpose", "sslclient", cert_file], capture_output=True, text=True)
check(p.returncode == 0, f"openssl verify accepts the agent's chain: {p.stdout} {p.stderr}")
check(api("GET", "/v1/hosts/agent-1")["status"] == "active", "the host is active")
p = subprocess.run(run_agent + ["--bootstrap-token", agent_token], capture_output=True, text=True, timeout=60)
check(p.returncode == 0 and '"msg":"enrolled"' not in p.stderr, f"a second start does not enroll again: {p.stderr}")


def hook_events(kind):
    out = []
    for headers, body in list(Hooks.received):
        signature = "sha256=" + hmac.new(b"hook-s3cret", body, hashlib.sha256).hexdigest()
        event = json.loads(body)
        if event["type"] == kind and headers.get("X-Certfleet-Signature") == signature:
            out.append(event)
    return out


# Revoking a host puts its certificate on its CA's CRL; the host is no longer renewed.
api("POST", "/v1/hosts/nope/revoke", {}, expect=404)
api("POST", "/v1/hosts/web-1.example.com/revoke", {}, expect=409)  # no certificate yet
# Each CA's first CRL is published (and announced) as it is made: those events first.
first_crls = wait_for("the CAs' first CRLs announced", lambda: (lambda h: h if {e["data"]["ca"] for e in h} >= {
    "example.com", "hosts.example.com"} else None)(hook_events("crl/published")))
Hooks.failures = 2  # the receiver is down for the first two tries of the next event
revoked = api("POST", "/v1/hosts/db-1/revoke", {"reason": "keyCompromise"})
check(revoked["status"] == "revoked", f"the host is revoked: {revoked}")
api("POST", "/v1/hosts/db-1/revoke", {"reason": "notAReason"}, expect=400)
status, crl, _ = cf.request("GET", "/crl/hosts.example.com.crl", raw=True)
with open(os.path.join(folder, "hosts.crl"), "wb") as f:
    f.write(crl)
p = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", os.path.join(folder, "hosts.crl"), "-noout", "-text"],
                   capture_output=True, text=True)
check(status == 200 and got["serial"].upper().lstrip("0") in p.stdout.replace(":", "").upper(),
      f"openssl reads the host's serial on the CRL: {p.stdout[-400:]}")
check(cf.cli("host", "token", "db-1", expect=1).returncode == 1, "a revoked host gets no enrollment token")


def published_crl():
    if s3:  # read back with an independent S3 client
        out = os.path.join(folder, "published.crl")
        try:
            s3.aws("s3", "cp", "--only-show-errors", "s3://crls/crl/hosts.example.com.crl", out)
        except RuntimeError:
            return None
        return open(out, "rb").read()
    path = os.path.join(cf.data, "blobs", "crl", "hosts.example.com.crl")
    return open(path, "rb").read() if os.path.exists(path) else None


wait_for("the CRL in the blob store", lambda: published_crl() == crl)


published = wait_for("the crl/published webhook", lambda: hook_events("crl/published")[len(first_crls):])
check(Hooks.refused == [str(published[0]["id"])] * 2, f"refused twice, then delivered again: {Hooks.refused}")
check(published[-1]["data"]["ca"] == "hosts.example.com" and published[-1]["data"]["key"] == "crl/hosts.example.com.crl"
      and published[-1]["data"]["url"].endswith("/crl/hosts.example.com.crl"),
      f"a signed crl/published event names the CA, the object and the URL: {published[-1]}")

audit = api("GET", "/v1/audit?limit=100")
actions = [e["action"] for e in audit["items"]]
check(actions.count("host.create") == 3 and actions.count("host.token") == 2 and actions.count("host.enroll") == 2 and actions.count("host.revoke") == 1,
      f"audited: {actions}")

# --- The renewal workflow with real agents, each in a folder of its own. ---
CA_FILE = os.path.join(cf.data, "tls", "ca.pem")
ROOT_PEM = os.path.join(folder, "root.pem")
agents = {}


def files_of(name):
    h = os.path.join(cf.work, name)
    return {"key": f"{h}/private/{name}.key", "cert": f"{h}/certs/{name}.crt", "chain": f"{h}/ca/ca_chain_certificate.crt"}


def add_host(name, **extra):
    h = os.path.join(cf.work, name)
    api("POST", "/v1/hosts", {"host_id": name, "cert_path": f"{h}/certs", "key_path": f"{h}/private",
                              "cacert_path": f"{h}/ca", "sans": [f"{name}.example.com"], **extra}, expect=201)
    return cf.cli("host", "token", name).stdout.strip()


def start_agent(name, token=None, *extra):
    h = os.path.join(cf.work, name)
    cmd = [AGENT, "--server", cf.url, "--host-id", name, "--ca-file", CA_FILE, "--state-dir", f"{h}/state",
           "--poll-wait", "2", *extra]
    if token:
        cmd += ["--bootstrap-token", token]
    log = open(os.path.join(cf.work, f"{name}.log"), "a")
    agents[name] = subprocess.Popen(cmd, stdout=log, stderr=log)


def serial_of(path):
    return format(x509.load_pem_x509_certificate(open(path, "rb").read()).serial_number, "x")


def run_renewals(body):
    started = api("POST", "/v1/renewals/run", body, expect=201)
    done = wait_for(f"run {started['run_id']} to finish", lambda: (
        lambda items: items if items and all(r["state"] in ("validated", "failed") for r in items) else None)(
        api("GET", f"/v1/renewals?run={started['run_id']}")["items"]))
    return started, {r["host_id"]: r for r in done}


def verify(name):
    f = files_of(name)
    p = subprocess.run(["openssl", "verify", "-CAfile", ROOT_PEM, "-untrusted", f["chain"], "-purpose", "sslserver",
                        f["cert"]], capture_output=True, text=True)
    return p.returncode == 0


# The agent proves who it is with its certificate: none, or a revoked host's, is refused.
status, _, _ = cf.request("GET", "/v1/agent/tasks")
check(status == 401, f"the agent protocol needs a client certificate: {status}")
revoked_ctx = ssl.create_default_context(cafile=CA_FILE)
with open(os.path.join(folder, "db-1.key"), "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
revoked_ctx.load_cert_chain(os.path.join(folder, "cert.pem"), os.path.join(folder, "db-1.key"))
conn = http.client.HTTPSConnection("127.0.0.1", cf.port, context=revoked_ctx, timeout=10)
conn.request("GET", "/v1/agent/tasks")
check(conn.getresponse().status == 403, "a revoked host's certificate is refused")
conn.close()

tokens = {"agent-2": add_host("agent-2", reload_command=f"cp {files_of('agent-2')['cert']} {cf.work}/agent-2/reloaded.pem"),
          "agent-3": add_host("agent-3", reload_command="echo broken config >&2; exit 3"),
          "agent-4": add_host("agent-4"), "agent-5": add_host("agent-5", reload_command="sleep 600")}
start_agent("agent-1")
for name, token in tokens.items():
    start_agent(name, token, *(["--reload-timeout", "1"] if name == "agent-5" else []))
# The host is active once the server has issued; its agent writes the files after the answer.
wait_for("the agents to enroll", lambda: all(api("GET", f"/v1/hosts/{n}")["status"] == "active" for n in tokens))
wait_for("the agents to write what they enrolled with",
         lambda: all(os.path.exists(p) for n in ["agent-1", *tokens] for p in files_of(n).values()))
old = {n: serial_of(files_of(n)["cert"]) for n in ["agent-1", *tokens]}

# Operators' mistakes are refused.
api("POST", "/v1/renewals/run", {"hosts": ["nope"]}, expect=400)
api("POST", "/v1/renewals/run", {"hosts": ["agent-1"], "all": True}, expect=400)
api("POST", "/v1/renewals/run", {"hosts": "agent-1"}, expect=400)
api("GET", "/v1/renewals?state=sleeping", expect=400)
status, _, _ = cf.request("POST", "/v1/renewals/run", body={})
check(status == 401, "starting a run needs a token")

# A forced run: agents 1, 2 renew; agent 3's reload command fails, so its old files stay.
seen = set()
run, done = run_renewals({"hosts": ["agent-1", "agent-2", "agent-3", "agent-5"]})
check(run["queued"] == 4, f"four renewals queued: {run}")
for name in ("agent-1", "agent-2"):
    r, f = done[name], files_of(name)
    states = [h["state"] for h in r["history"]]
    check(r["state"] == "validated" and states == ["queued", "awaiting_csr", "issued", "deployed", "validated"],
          f"{name} went through every state: {states} {r.get('error')}")
    check(serial_of(f["cert"]) == r["serial"] != old[name] and r["old_serial"] == old[name],
          f"{name} has its new certificate in place: {r}")
    check(stat.S_IMODE(os.stat(f["key"]).st_mode) == 0o400, f"{name}'s new key is 0400")
    new_key = serialization.load_pem_private_key(open(f["key"], "rb").read(), None)
    check(new_key.public_key().public_numbers() ==
          x509.load_pem_x509_certificate(open(f["cert"], "rb").read()).public_key().public_numbers(),
          f"{name}'s new certificate is for its new key")
    check(verify(name), f"openssl verify accepts {name}'s new chain")
    check(not any(p.endswith((".new", ".prev")) for p in os.listdir(os.path.dirname(f["cert"]))),
          f"{name} left no temporary files")
    host = api("GET", f"/v1/hosts/{name}")
    check(host["certificate"]["serial"] == r["serial"] and host["status"] == "active" and host["last_run"] == r["id"],
          f"the inventory has {name}'s new certificate: {host}")
check(open(f"{cf.work}/agent-2/reloaded.pem").read() == open(files_of("agent-2")["cert"]).read(),
      "the reload command ran with the new certificate in place")
r3 = done["agent-3"]
check(r3["state"] == "failed" and r3["failed_step"] == "reload" and "exit status 3" in r3["error"],
      f"agent-3 failed at its reload: {r3}")
check(serial_of(files_of("agent-3")["cert"]) == old["agent-3"] and verify("agent-3"),
      "agent-3 keeps its old valid files")
check(api("GET", "/v1/hosts/agent-3")["status"] == "failed", "agent-3 is marked failed")
# agent-5's reload command hangs: killed at the agent's --reload-timeout, the old files back.
r5 = done["agent-5"]
check(r5["state"] == "failed" and r5["failed_step"] == "reload" and "did not finish within 1 s" in r5["error"],
      f"a hanging reload command fails the renewal at its step: {r5}")
check(serial_of(files_of("agent-5")["cert"]) == old["agent-5"] and verify("agent-5"), "agent-5 keeps its old files")
mails = []
wait_for("the failure mails and the digest",
         lambda: mails.extend(m for _, m in smtp.new_messages(seen)) or len(mails) >= 3)
mail3 = [m for m in mails if "agent-3" in m["Subject"]]
digests = [m for m in mails if "ended" in m["Subject"]]
check(len(mails) == 3 and len(mail3) == 1 and "reload" in mail3[0]["Subject"] and
      mail3[0]["To"] == "ops@example.com" and "exit status 3" in mail3[0].get_body().get_content(),
      f"a mail per failure names the host, the failed step and the error: {[m['Subject'] for m in mails]}")
digest = digests[0].get_body().get_content() if digests else ""
check(len(digests) == 1 and f"renewal run {run['run_id']} ended: 2 renewed, 2 failed" in digests[0]["Subject"] and
      "agent-3  step reload: " in digest and "agent-5  step reload: " in digest and "agent-1" in digest,
      f"one digest for the run, each failed host with its step and error: {digests and digests[0]['Subject']}\n{digest}")
finished = wait_for("the renewal/run-finished webhook", lambda: [h for h in hook_events("renewal/run-finished")
                                                                 if h["data"]["run_id"] == run["run_id"]])
check(finished[0]["data"]["renewed"] == 2 and finished[0]["data"]["failed"] == 2 and
      sorted(f["host_id"] for f in finished[0]["data"]["failures"]) == ["agent-3", "agent-5"],
      f"the digest as an event: {finished[0]['data']}")
metrics = dict(line.rsplit(" ", 1) for line in cf.request("GET", "/metrics", bearer=cf.token)[1].splitlines()
               if line and not line.startswith("#"))
hosts_with_certificates = sum(1 for h in api("GET", "/v1/hosts?limit=1000")["items"] if h["certificate"] and
                              h["status"] != "revoked")
check(metrics.get('certfleet_renewals{state="failed"}') == "2" and
      metrics.get('certfleet_hosts{status="failed"}') == "2" and
      int(metrics.get('certfleet_renewals{state="validated"}', 0)) >= 2 and
      metrics.get('certfleet_hosts_expiring{within="7d"}') == "0" and
      metrics.get('certfleet_hosts_expiring{within="30d"}') == str(hosts_with_certificates) and
      int(metrics.get("certfleet_renewal_run_duration_seconds_count", 0)) >= 1,
      f"/metrics: renewals by state, failed hosts, expiry (30-day certificates), run durations: "
      f"{ {k: v for k, v in metrics.items() if k.startswith(('certfleet_renewal', 'certfleet_hosts'))} }")

failed_hooks = wait_for("the renewal/failed webhooks", lambda: (lambda h: h if len(h) >= 2 else None)(
    hook_events("renewal/failed")))
hook3 = [h for h in failed_hooks if h["data"]["host_id"] == "agent-3"]
check(len(hook3) == 1 and hook3[0]["data"]["step"] == "reload" and "exit status 3" in hook3[0]["data"]["error"],
      f"a renewal/failed event for agent-3: {failed_hooks}")
# The URL that refuses: shown failing, its password masked, while the other takes every event;
# its failures leave no dead job.
metrics = cf.request("GET", "/metrics", bearer=cf.token)[1]
down_shown = f"http://hook:***@127.0.0.1:{refusing.getsockname()[1]}/..."
check(f'certfleet_webhook_failing{{index="2",url="{down_shown}"}} 1' in metrics and
      f'certfleet_webhook_failing{{index="1",url="http://127.0.0.1:{hooks.server_address[1]}/..."}} 0' in metrics and
      "down-pw" not in metrics and "/down" not in metrics,
      "/metrics: the refusing webhook URL is failing, the other is not; no password or path is shown")
served_log = open(cf.log_path).read()
check("webhook delivery failed" in served_log and "down-pw" not in served_log and "/down" not in served_log,
      "the log names the failing webhook URL without its password or path (where receivers keep secrets)")
dead = api("GET", "/v1/jobs?state=dead&kind=webhooks.deliver")["items"]
check(not dead, f"a failing webhook URL leaves no dead jobs: {dead[:3]}")

# After the grace period the superseded certificates are on the CRL.
def crl_text():
    status, crl, _ = cf.request("GET", "/crl/hosts.example.com.crl", raw=True)
    path = os.path.join(folder, "after.crl")
    with open(path, "wb") as f:
        f.write(crl)
    return subprocess.run(["openssl", "crl", "-inform", "DER", "-in", path, "-noout", "-text"],
                          capture_output=True, text=True).stdout.replace(":", "").upper()


wait_for("the superseded certificates on the CRL",
         lambda: all(old[n].upper().lstrip("0") in crl_text() for n in ("agent-1", "agent-2")), timeout=30)
check(done["agent-1"]["serial"].upper().lstrip("0") not in crl_text(), "the new certificate is not on the CRL")

# An agent killed in the middle of a renewal: the renewal fails at its deadline, people
# are told, the host keeps its old files; restarted, the agent renews on the next run.
agents["agent-4"].send_signal(19)  # SIGSTOP: the agent hangs with its task poll open
run = api("POST", "/v1/renewals/run", {"hosts": ["agent-4"]}, expect=201)
wait_for("agent-4's task", lambda: api("GET", f"/v1/renewals?run={run['run_id']}")["items"][0]["state"] == "awaiting_csr")
agents["agent-4"].kill()
agents["agent-4"].wait()
r4 = wait_for("agent-4's renewal to fail", lambda: (lambda r: r if r["state"] == "failed" else None)(
    api("GET", f"/v1/renewals?run={run['run_id']}")["items"][0]), timeout=60)
check(r4["failed_step"] == "csr" and "deadline" in r4["error"], f"it failed at its deadline, at the CSR: {r4}")
mails = []
wait_for("the second failure mail and its digest",
         lambda: mails.extend(m for _, m in smtp.new_messages(seen)) or len(mails) >= 2)
check(len(mails) == 2 and any("agent-4" in m["Subject"] and "csr" in m["Subject"] for m in mails),
      f"the mail names agent-4 and the step: {[m['Subject'] for m in mails]}")
check(serial_of(files_of("agent-4")["cert"]) == old["agent-4"] and verify("agent-4"), "agent-4 keeps its old valid files")
start_agent("agent-4")
_, done = run_renewals({"hosts": ["agent-4"]})
check(done["agent-4"]["state"] == "validated" and serial_of(files_of("agent-4")["cert"]) == done["agent-4"]["serial"],
      f"restarted, agent-4 renews: {done['agent-4']}")

# An agent whose certificate is near its end asks for its renewal itself.
agents["agent-1"].terminate()
check(agents["agent-1"].wait(timeout=10) == 0, "the agent stops on SIGTERM")
before = serial_of(files_of("agent-1")["cert"])
# A swap cut short after the key, before the certificate: the old certificate (the serial the
# agent records) beside another key. Undone when the agent starts again: the old key is back.
own_key = open(files_of("agent-1")["key"], "rb").read()
for f in files_of("agent-1").values():
    shutil.copy2(f, f + ".prev")
os.chmod(files_of("agent-1")["key"], 0o600)
shutil.copy(files_of("agent-2")["key"], files_of("agent-1")["key"])
start_agent("agent-1")
wait_for("the key-only swap undone", lambda: "interrupted renewal was undone" in
         open(os.path.join(cf.work, "agent-1.log")).read())
check(open(files_of("agent-1")["key"], "rb").read() == own_key and not os.path.exists(files_of("agent-1")["key"] + ".prev"),
      "the agent's own key is back beside its certificate")
agents["agent-1"].terminate()
check(agents["agent-1"].wait(timeout=10) == 0, "the agent stops on SIGTERM")
open(os.path.join(cf.work, "agent-1.log"), "w").close()
# A renewal cut short after the swap (here: another certificate in place, the old files kept
# as *.prev) is undone when the agent starts again.
for f in files_of("agent-1").values():
    shutil.copy2(f, f + ".prev")
shutil.copy(files_of("agent-2")["cert"], files_of("agent-1")["cert"])
start_agent("agent-1", None, "--self-renew-below", "1")
wait_for("the interrupted renewal undone", lambda: "interrupted renewal was undone" in
         open(os.path.join(cf.work, "agent-1.log")).read())
wait_for("agent-1 to renew itself", lambda: serial_of(files_of("agent-1")["cert"]) != before)
wait_for("agent-1's renewal validated", lambda: api("GET", "/v1/renewals?host=agent-1&limit=1")["items"][0]["state"] == "validated")
listing = api("GET", "/v1/renewals?host=agent-1&limit=1")
check(serial_of(files_of("agent-1")["cert"]) == listing["items"][0]["serial"] and
      not os.path.exists(files_of("agent-1")["cert"] + ".prev"), "the renewed certificate is in place, nothing left over")
check(listing["items"][0]["state"] == "validated" and any(r["trigger"] == "agent" for r in listing["runs"]),
      f"a run started by the agent: {listing['runs'][:2]}")
check(all(set(r["states"]) <= {"validated", "failed"} for r in listing["runs"][1:]), "earlier runs are finished")

for p in agents.values():
    p.terminate()
    p.wait(timeout=10)
smtp.stop()
hooks.shutdown()
if s3:
    s3.stop()
cf.stop()
finish("renewal_e2e")
