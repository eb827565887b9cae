#!/usr/bin/python3
"""W4 end to end, the host registry: hosts registered over HTTPS with their checks and
defaults, listed by status and due date, and an agent's enrollment token made with
`certfleet host token`.

usage: renewal_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402
from harness import Certfleet  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
cf = Certfleet(BINARY, DB_KIND, "renewal-e2e", extra_env={
    "CERTFLEET_RENEWAL_KEY_PATH": "/etc/pki/private", "CERTFLEET_RENEWAL_THRESHOLD_DAYS": "7"})
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
audit = api("GET", "/v1/audit?limit=100")
actions = [e["action"] for e in audit["items"]]
check(actions.count("host.create") == 2 and actions.count("host.token") == 1, f"audited: {actions}")
cf.stop()
finish("renewal_e2e")
