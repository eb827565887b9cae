#!/usr/bin/python3
"""W4 the day after: an operator changes a host (PATCH /v1/hosts/{id}) and the next renewal,
done by a real certfleet-agent, uses the new settings; a revoked host is reactivated and its
agent enrolls again (--re-enroll); an agent never acts as another host whose identity its
state folder holds; a deleted host's certificate is on its CA's CRL (read by openssl) and its
renewals stay as history. Onboarding at fleet scale: a JSON array and a CSV of hosts answered
row by row (10,000 at once), and one fleet enrollment credential that real agents enroll with
until its uses are spent. The renewal CA is set and changed while serving (PUT
/v1/renewal/settings), without a restart: agents enroll and renew under the new CA and
agents enrolled under the old one still authenticate.

usage: hosts_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import datetime
import hashlib
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
AGENT = os.path.join(os.path.dirname(BINARY), "certfleet-agent")
# Where hosts registered without paths (by a fleet credential) keep their files.
DEFAULTS = tempfile.mkdtemp(prefix="certfleet-hosts-e2e-")
cf = Certfleet(BINARY, DB_KIND, "hosts-e2e", extra_env={
    "CERTFLEET_RENEWAL_VALIDITY_DAYS": "30", "CERTFLEET_RENEWAL_THRESHOLD_DAYS": "7",
    "CERTFLEET_RENEWAL_GRACE_SECONDS": "3600", "CERTFLEET_RENEWAL_CERT_PATH": f"{DEFAULTS}/certs",
    "CERTFLEET_RENEWAL_KEY_PATH": f"{DEFAULTS}/private", "CERTFLEET_RENEWAL_CACERT_PATH": f"{DEFAULTS}/ca"})
cf.init()
cf.start()


api = cf.api
api("POST", "/v1/certificates/root", {"fqdn": "example.com", "organization": "Acme"}, expect=201)
api("POST", "/v1/certificates/intermediate", {"fqdn": "hosts.example.com", "organization": "Acme"}, expect=201)
CA_FILE = os.path.join(cf.data, "tls", "ca.pem")

# The renewal CA, set while serving: no restart.
check(api("GET", "/v1/renewal/settings")["ca"] is None, "no renewal CA yet")
out = api("PUT", "/v1/renewal/settings", {"ca": "nope.example.com"}, expect=400)
check("active intermediate" in out["error"]["message"], f"an unknown CA is refused: {out}")
api("PUT", "/v1/renewal/settings", {"ca": "example.com"}, expect=400)  # a root
api("PUT", "/v1/renewal/settings", {"ca": "hosts.example.com", "other": 1}, expect=400)
check(api("PUT", "/v1/renewal/settings", {"ca": "hosts.example.com"})["ca"] == "hosts.example.com", "set")


def files_of(name):
    h = os.path.join(cf.work, name)
    return {"key": f"{h}/private/{name}.key", "cert": f"{h}/certs/{name}.crt", "state": f"{h}/state"}


def agent_cmd(name, *extra, state=None):
    return [AGENT, "--server", cf.url, "--host-id", name, "--ca-file", CA_FILE, "--state-dir",
            state or files_of(name)["state"], "--poll-wait", "2", *extra]


def certificate(name):
    return x509.load_pem_x509_certificate(open(files_of(name)["cert"], "rb").read())


def sans(cert):
    return sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                  .get_values_for_type(x509.DNSName))


def audit_actions():
    return [e["action"] for e in api("GET", "/v1/audit?limit=500")["items"]]


# A key given twice is refused (parsers differ on which one counts), in a host and in a list.
for raw in ('{"host_id": "dup-1", "reload_command": "true", "reload_command": "rm -rf /"}',
            '[{"host_id": "dup-2"}, {"host_id": "dup-3", "host_id": "dup-4"}]'):
    status, out, _ = cf.request("POST", "/v1/hosts", body=raw, bearer=cf.token,
                                headers={"Content-Type": "application/json"})
    check(status == 400 and "appears twice" in str(out), f"a key given twice in {raw}: {status} {out}")
status, out, _ = cf.request("POST", "/v1/devices/keys", body='[{"device_id": "d-1", "device_id": "d-2"}]',
                            bearer=cf.token, headers={"Content-Type": "application/json"})
check(status == 400 and "appears twice" in str(out), f"a key given twice in a device upload: {status} {out}")

# A host and its agent, enrolled.
home = os.path.join(cf.work, "web-1")
api("POST", "/v1/hosts", {"host_id": "web-1", "cert_path": f"{home}/certs", "key_path": f"{home}/private",
                          "cacert_path": f"{home}/ca", "sans": ["web-1.example.com"]}, expect=201)
token = cf.cli("host", "token", "web-1").stdout.strip()
p = subprocess.run(agent_cmd("web-1", "--enroll-only", "--bootstrap-token", token), capture_output=True, text=True,
                   timeout=60)
check(p.returncode == 0 and '"msg":"enrolled"' in p.stderr, f"the agent enrolls: {p.stderr}")
first = certificate("web-1")
check(sans(first) == ["web-1.example.com"], f"first certificate's names: {sans(first)}")

# An enrollment whose answer was lost: the agent had kept its key (state/enroll-key.pem, for
# that token) and asks again with it and the token it spent; it gets the certificate issued
# then, not a second.
home_lost = os.path.join(cf.work, "lost-1")
api("POST", "/v1/hosts", {"host_id": "lost-1", "sans": ["lost-1.example.com"], "cert_path": f"{home_lost}/certs",
                          "key_path": f"{home_lost}/private", "cacert_path": f"{home_lost}/ca"}, expect=201)
lost_token = cf.cli("host", "token", "lost-1").stdout.strip()
lost_key = ec.generate_private_key(ec.SECP256R1())
os.makedirs(files_of("lost-1")["state"], exist_ok=True)
with open(os.path.join(files_of("lost-1")["state"], "enroll-key.pem"), "wb") as f:
    f.write(f"token-sha256: {hashlib.sha256(lost_token.encode()).hexdigest()}\n".encode() +
            lost_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
lost_csr = x509.CertificateSigningRequestBuilder().subject_name(
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lost-1")])).sign(lost_key, hashes.SHA256())
status, answer, _ = cf.request("POST", "/v1/agent/enroll", {"host_id": "lost-1", "csr": lost_csr.public_bytes(
    serialization.Encoding.PEM).decode()}, bearer=lost_token)
check(status == 201, f"the first enrollment, whose answer the agent never read: {status} {answer}")
p = subprocess.run(agent_cmd("lost-1", "--enroll-only", "--bootstrap-token", lost_token), capture_output=True,
                   text=True, timeout=60)
check(p.returncode == 0 and "enrolling again with the key of an enrollment cut short" in p.stderr,
      f"the agent enrolls with the key it kept and the spent token: {p.stderr}")
check(p.returncode == 0 and certificate("lost-1").serial_number == int(answer["serial"], 16) and
      not os.path.exists(os.path.join(files_of("lost-1")["state"], "enroll-key.pem")),
      "it got the certificate issued the first time, and dropped the kept key")
enrolls = [e for e in api("GET", "/v1/audit?limit=500")["items"]
           if e["action"] == "host.enroll" and e["actor"] == "host:lost-1"]
check(len(enrolls) == 1, f"one certificate issued for the host: {enrolls}")

# Change: PATCH is a merge patch; the renewal date follows a new threshold.
changed = api("PATCH", "/v1/hosts/web-1", {"sans": ["web-1.example.com", "www.example.com"],
                                           "renewal_threshold_days": 5, "key_type": "ec-p384"})
not_after = first.not_valid_after.replace(tzinfo=datetime.timezone.utc)
renewal_date = datetime.datetime.fromisoformat(changed["renewal_date"].replace("Z", "+00:00"))
check(changed["sans"] == ["web-1.example.com", "www.example.com"] and changed["key_type"] == "ec-p384" and
      changed["cert_path"] == f"{home}/certs" and abs((not_after - renewal_date) - datetime.timedelta(days=5)) <
      datetime.timedelta(seconds=2), f"the change, the rest as it was, due 5 days before expiry: {changed}")
check(api("PATCH", "/v1/hosts/web-1", {"reload_command": None})["reload_command"] is None, "null: the default")
for body, field in [({"sans": "www.example.com"}, "sans"), ({"key_path": "../x"}, "key_path"),
                    ({"host_id": "web-2"}, "host_id"), ({"renewal_threshold_days": 0}, "renewal_threshold_days")]:
    out = api("PATCH", "/v1/hosts/web-1", body, expect=400)
    check(field in out["error"]["message"], f"{body}: the error names {field}: {out}")
api("PATCH", "/v1/hosts/nope", {"sans": []}, expect=404)
status, _, _ = cf.request("PATCH", "/v1/hosts/web-1", body={"sans": []})
check(status == 401, f"a change needs a token: {status}")

# The next renewal, done by the agent, uses the new settings.
agent = subprocess.Popen(agent_cmd("web-1"), stdout=subprocess.DEVNULL, stderr=open(f"{home}.log", "a"))
run = api("POST", "/v1/renewals/run", {"hosts": ["web-1"]}, expect=201)
wait_for("the renewal", lambda: api("GET", f"/v1/renewals?run={run['run_id']}")["items"][0]["state"] == "validated")
renewed = certificate("web-1")
check(sans(renewed) == ["web-1.example.com", "www.example.com"], f"the new names: {sans(renewed)}")
check(renewed.public_key().curve.name == "secp384r1", f"the new key type: {renewed.public_key().curve.name}")
agent.terminate()
agent.wait(timeout=10)

# An agent whose state folder holds another host's identity stops, naming both.
api("POST", "/v1/hosts", {"host_id": "web-2", "sans": ["web-2.example.com"]}, expect=201)
p = subprocess.run(agent_cmd("web-2", "--enroll-only", state=files_of("web-1")["state"]), capture_output=True,
                   text=True, timeout=60)
check(p.returncode == 1 and "web-1" in p.stderr and "web-2" in p.stderr, f"refused, naming both: {p.stderr}")

# Undo: revoked, then reactivated; the agent enrolls again with the new token.
api("POST", "/v1/hosts/web-1/revoke", {"reason": "keyCompromise"})
api("POST", "/v1/hosts/web-1/token", expect=409)
api("POST", "/v1/hosts/web-2/reactivate", expect=409)  # enrolling: nothing to reactivate
again = api("POST", "/v1/hosts/web-1/reactivate")
check(again["status"] == "enrolling" and len(again["token"]) >= 40, f"enrolling again, with a token: {again}")
p = subprocess.run(agent_cmd("web-1", "--enroll-only", "--re-enroll"), capture_output=True, text=True, timeout=60)
check(p.returncode == 1 and "--bootstrap-token" in p.stderr, f"--re-enroll needs the token: {p.stderr}")
p = subprocess.run(agent_cmd("web-1", "--enroll-only", "--re-enroll", "--bootstrap-token", again["token"]),
                   capture_output=True, text=True, timeout=60)
check(p.returncode == 0 and '"msg":"enrolled"' in p.stderr, f"the agent enrolls again: {p.stderr}")
host = api("GET", "/v1/hosts/web-1")
third = certificate("web-1")
check(host["status"] == "active" and host["certificate"]["serial"] == format(third.serial_number, "x").zfill(
    len(host["certificate"]["serial"])), f"active with the new certificate: {host}")
api("POST", "/v1/hosts/web-1/revoke", {})
p = cf.cli("host", "reactivate", "web-1")
check(p.returncode == 0 and len(p.stdout.strip()) >= 40, f"certfleet host reactivate prints a token: {p.stderr}")

# Delete: the certificate is revoked (on the CRL openssl reads) unless told not to; history stays.
# The token from a file (--bootstrap-token-file), off the command line.
token_file = os.path.join(cf.work, "web-2.token")
with open(token_file, "w") as f:
    f.write(cf.cli("host", "token", "web-2").stdout)
os.chmod(token_file, 0o600)
p = subprocess.run(agent_cmd("web-2", "--enroll-only", "--bootstrap-token-file", token_file,
                             state=os.path.join(cf.work, "web-2-state")), capture_output=True, text=True, timeout=60)
check(p.returncode == 0, f"web-2 enrolls with its token from a file: {p.stderr}")
web2_serial = api("GET", "/v1/hosts/web-2")["certificate"]["serial"]
api("DELETE", "/v1/hosts/web-2?revoke=maybe", expect=400)
api("DELETE", "/v1/hosts/web-2", expect=204)
api("GET", "/v1/hosts/web-2", expect=404)
api("DELETE", "/v1/hosts/web-2", expect=404)
check(api("GET", f"/v1/certificates/{web2_serial}")["status"] == "revoked", "its certificate is revoked")
crl_path = os.path.join(cf.work, "hosts.crl")
status, crl, _ = cf.request("GET", "/crl/hosts.example.com.crl", raw=True)
with open(crl_path, "wb") as f:
    f.write(crl)
p = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", crl_path, "-noout", "-text"], capture_output=True,
                   text=True)
check(status == 200 and web2_serial.upper().lstrip("0") in p.stdout.replace(":", "").upper(),
      f"openssl finds the deleted host's serial on the CRL: {p.stdout[-300:]}")
web1_serial = api("GET", "/v1/hosts/web-1")["certificate"]["serial"]
api("DELETE", "/v1/hosts/web-1?revoke=false", expect=204)
check(len(api("GET", "/v1/renewals?host=web-1")["items"]) == 1, "its renewal stays, as history")
api("POST", "/v1/hosts", {"host_id": "web-2"}, expect=201)  # the id may be used again
actions = audit_actions()
check(actions.count("host.update") == 2 and actions.count("host.delete") == 2 and
      actions.count("host.reactivate") == 2, f"each change is audited: {actions}")

# The renewal CA changes while serving: agents enrolled under the old one still authenticate,
# and their next renewal comes from the new one.
hosts2 = api("POST", "/v1/certificates/intermediate", {"fqdn": "hosts2.example.com", "organization": "Acme"},
             expect=201)
home = os.path.join(cf.work, "swap-1")
api("POST", "/v1/hosts", {"host_id": "swap-1", "cert_path": f"{home}/certs", "key_path": f"{home}/private",
                          "cacert_path": f"{home}/ca"}, expect=201)
# The token from the environment, off the command line.
p = subprocess.run(agent_cmd("swap-1", "--enroll-only"), capture_output=True, text=True, timeout=60,
                   env=dict(os.environ, CERTFLEET_AGENT_BOOTSTRAP_TOKEN=cf.cli("host", "token", "swap-1").stdout.strip()))
check(p.returncode == 0, f"swap-1 enrolls under hosts.example.com, its token from the environment: {p.stderr}")
api("PUT", "/v1/renewal/settings", {"ca": "hosts2.example.com"})
agent = subprocess.Popen(agent_cmd("swap-1"), stdout=subprocess.DEVNULL, stderr=open(f"{home}.log", "a"))
for n in range(2):  # the second renewal: the agent authenticates with the new CA's certificate
    run = api("POST", "/v1/renewals/run", {"hosts": ["swap-1"]}, expect=201)
    wait_for(f"renewal {n + 1} under the new CA", lambda: api("GET", f"/v1/renewals?run={run['run_id']}")["items"][0][
        "state"] == "validated")
    issuer = certificate("swap-1").issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    check(issuer == "hosts2.example.com", f"renewal {n + 1} issued by the new CA: {issuer}")
agent.terminate()
agent.wait(timeout=10)
check("renewal.settings" in audit_actions(), "the change is audited")


def agent_tasks(name):
    """curl's GET /v1/agent/tasks with the host's certificate and key: the HTTP status."""
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", CA_FILE, "--cert",
                        files_of(name)["cert"], "--key", files_of(name)["key"], f"{cf.url}/v1/agent/tasks?wait=0"],
                       capture_output=True, text=True, timeout=30)
    return p.stdout


check(agent_tasks("swap-1") == "204", "the agent's certificate is taken (no task for it: 204)")
# Its CA revoked alone (no cascade): TLS still verifies the certificate, certfleet refuses it.
api("POST", f"/v1/certificates/{hosts2['serial']}/revoke", {"reason": "cACompromise"})
check(api("GET", f"/v1/certificates/{certificate('swap-1').serial_number:x}")["status"] == "active"
      and agent_tasks("swap-1") == "403", "a certificate whose CA is revoked authenticates no agent")
api("PUT", "/v1/renewal/settings", {"ca": "hosts.example.com"})

# Onboarding in bulk: a JSON array and CSV (text/csv), answered row by row.
out = api("POST", "/v1/hosts", [{"host_id": "app-1", "sans": ["app-1.example.com"]}, {"host_id": "web-2"},
                                 {"host_id": "bad id"}, {"sans": []}, "not an object"])
check((out["created"], out["unchanged"], out["rejected"]) == (1, 1, 3) and
      [r["result"] for r in out["rows"]] == ["created", "unchanged", "rejected", "rejected", "rejected"] and
      "host_id" in out["rows"][2]["error"] and out["rows"][3]["host_id"] is None, f"each row answered: {out}")
csv_text = ('host_id,sans,key_type,renewal_threshold_days\r\n'
            'app-2,app-2.example.com;alt-2.example.com,rsa-2048,10\r\n'
            'app-1,app-1.example.com,,\r\n'
            'app-3,,ec-p521,\r\n'
            '"app-4","app-4.example.com 10.0.0.4",,x\r\n')
status, out, _ = cf.request("POST", "/v1/hosts", body=csv_text, bearer=cf.token, headers={"Content-Type": "text/csv"})
check(status == 200 and [r["result"] for r in out["rows"]] == ["created", "unchanged", "rejected", "rejected"] and
      "key_type" in out["rows"][2]["error"] and "renewal_threshold_days" in out["rows"][3]["error"],
      f"CSV rows answered: {status} {out}")
app2 = api("GET", "/v1/hosts/app-2")
check(app2["sans"] == ["app-2.example.com", "alt-2.example.com"] and app2["key_type"] == "rsa-2048" and
      app2["renewal_threshold_days"] == 10, f"a CSV row's settings: {app2}")
status, out, _ = cf.request("POST", "/v1/hosts", body="name\nx\n", bearer=cf.token, headers={"Content-Type": "text/csv"})
check(status == 400 and "unknown CSV column 'name'" in out["error"]["message"], f"a bad header: {status} {out}")
for body, why in (("host_id,host_id\nbulk-10.example.com,bulk-11.example.com\n", "column host_id is named twice"),
                  (b"host_id,reload_command\nbulk-12.example.com,\xff\xfe\n", "not valid UTF-8")):
    status, out, _ = cf.request("POST", "/v1/hosts", body=body, bearer=cf.token, headers={"Content-Type": "text/csv"})
    check(status == 400 and why in out["error"]["message"], f"a CSV whose {why}: {status} {out}")
many = [{"host_id": f"node-{i:05d}.fleet.example.com"} for i in range(10000)]
out = api("POST", "/v1/hosts", many)
check(out["created"] == 10000, f"10,000 hosts in one request: {out['created']}, {out['rejected']}")
out = api("POST", "/v1/hosts", many + [{"host_id": "one-too-many"}], expect=400)
check("at most 10000" in out["error"]["message"], f"more than 10,000 refused: {out}")
check(api("GET", "/v1/hosts?limit=1&status=enrolling")["items"], "listed")

# One fleet credential, three uses; real agents enroll with it and the fourth is refused.
p = cf.cli("host", "credential", "--pattern", "edge-*.example.com", "--uses", "3", "--ttl", "2h")
secret = p.stdout.strip()
check(len(secret) >= 40 and "edge-*.example.com" in p.stderr, f"certfleet host credential prints a secret: {p.stderr}")
for i in range(3):
    name = f"edge-{i}.example.com"
    p = subprocess.run(agent_cmd(name, "--enroll-only", "--bootstrap-token", secret), capture_output=True, text=True,
                       timeout=60)
    check(p.returncode == 0 and '"msg":"enrolled"' in p.stderr, f"{name} enrolls with the fleet credential: {p.stderr}")
    check(api("GET", f"/v1/hosts/{name}")["status"] == "active", f"{name} is registered and active")
p = subprocess.run(agent_cmd("edge-3.example.com", "--enroll-only", "--bootstrap-token", secret),
                   capture_output=True, text=True, timeout=60)
check(p.returncode != 0 and "is spent" in p.stderr, f"the fourth is refused, saying why: {p.stderr[-500:]}")
made = api("POST", "/v1/enrollment-credentials", {"hosts": ["db-*.example.com"], "uses": 5, "ttl": "72h"}, expect=201)
check(len(made["secret"]) >= 40 and made["uses"] == 5 and made["used"] == 0, f"minted through the API: {made}")
p = subprocess.run(agent_cmd("other.example.com", "--enroll-only", "--bootstrap-token", made["secret"]),
                   capture_output=True, text=True, timeout=60)
check(p.returncode != 0 and "is not for host other.example.com" in p.stderr, f"not its host: {p.stderr[-500:]}")
api("POST", "/v1/enrollment-credentials", {"hosts": ["*"], "uses": 5, "ttl": "72h"}, expect=400)
api("POST", "/v1/enrollment-credentials", {"hosts": ["db-1"], "uses": 5, "ttl": "3 days"}, expect=400)
listed = api("GET", "/v1/enrollment-credentials")["items"]
check([c["used"] for c in listed] == [0, 3] and all("secret" not in c for c in listed), f"listed: {listed}")
check(api("DELETE", f"/v1/enrollment-credentials/{made['id']}")["revoked_at"] is not None, "revoked")
p = subprocess.run(agent_cmd("db-1.example.com", "--enroll-only", "--bootstrap-token", made["secret"]),
                   capture_output=True, text=True, timeout=60)
check(p.returncode != 0 and "was revoked" in p.stderr, f"a revoked credential is refused: {p.stderr[-500:]}")
uses = api("GET", "/v1/audit?action=credential.use")["items"]
check(sorted(e["details"]["host_id"] for e in uses) == [f"edge-{i}.example.com" for i in range(3)],
      f"each use audited with its host: {uses}")
cf.stop()
finish("hosts_e2e")
