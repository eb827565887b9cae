#!/usr/bin/python3
"""W4 the day after: an operator changes a host (PATCH /v1/hosts/{id}) and the next renewal,
done by a real certfleet-agent, uses the new settings; a revoked host is reactivated and its
agent enrolls again (--re-enroll); an agent never acts as another host whose identity its
state folder holds; a deleted host's certificate is on its CA's CRL (read by openssl) and its
renewals stay as history.

usage: hosts_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import datetime
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet  # noqa: E402

from cryptography import x509  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
AGENT = os.path.join(os.path.dirname(BINARY), "certfleet-agent")
cf = Certfleet(BINARY, DB_KIND, "hosts-e2e", extra_env={
    "CERTFLEET_RENEWAL_CA": "hosts.example.com", "CERTFLEET_RENEWAL_VALIDITY_DAYS": "30",
    "CERTFLEET_RENEWAL_THRESHOLD_DAYS": "7", "CERTFLEET_RENEWAL_GRACE_SECONDS": "3600"})
cf.init()
cf.start()


api = cf.api
api("POST", "/v1/certificates/root", {"fqdn": "example.com", "organization": "Acme"}, expect=201)
api("POST", "/v1/certificates/intermediate", {"fqdn": "hosts.example.com", "organization": "Acme"}, expect=201)
cf.stop()
cf.start()  # agents' certificates of renewal.ca are trusted from the start
CA_FILE = os.path.join(cf.data, "tls", "ca.pem")


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
p = subprocess.run(agent_cmd("web-2", "--enroll-only", "--bootstrap-token", cf.cli("host", "token", "web-2").stdout
                             .strip(), state=os.path.join(cf.work, "web-2-state")), capture_output=True, text=True,
                   timeout=60)
check(p.returncode == 0, f"web-2 enrolls: {p.stderr}")
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
cf.stop()
finish("hosts_e2e")
