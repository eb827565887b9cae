#!/usr/bin/python3
"""W3 end to end: supplier manifests imported over HTTPS as jobs (every Thingpress fixture
with its expected count, a second import all present, a tampered Microchip entry reported
and its neighbours imported), the registry afterwards, and an import of 20,000 certificates
killed with SIGKILL halfway and resumed by the restarted server with nothing twice. A
manifest dropped into the inbound store is imported by the scheduled scan: a folder with
SQLite, an S3-compatible bucket (s3rver, uploaded with the AWS CLI) with PostgreSQL.

usage: bulk_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import base64
import json
import datetime
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402
from harness import Certfleet  # noqa: E402
from servers import SOURCE, S3Server  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
FIXTURES = os.path.join(SOURCE, "..", "shared", "fixtures", "thingpress")
s3 = None
inbound_env = {}
if DB_KIND == "postgres":
    s3 = S3Server(tempfile.mkdtemp(prefix="bulk-e2e-s3"), "inbound")
    inbound_env = {"CERTFLEET_BULK_INBOUND": f"s3://inbound?endpoint={s3.endpoint}&region=us-east-1",
                   "CERTFLEET_S3_ACCESS_KEY_ID": "S3RVER", "CERTFLEET_S3_SECRET_ACCESS_KEY": "S3RVER"}
cf = Certfleet(BINARY, DB_KIND, "bulk-e2e", extra_env={
    **inbound_env,
    "CERTFLEET_BULK_BATCH_SIZE": "200",
    "CERTFLEET_JOBS_LEASE_SECONDS": "5",
    "CERTFLEET_JOBS_POLL_MS": "100",
    "CERTFLEET_BULK_SCAN_SECONDS": "5"})
cf.init()
cf.start()
T = cf.token


def api(method, route, body=None, expect=200, **kw):
    status, out, _ = cf.request(method, route, body=body, bearer=T, **kw)
    check(status == expect, f"{method} {route}: {status}, wanted {expect}: {str(out)[:300]}")
    return out


def start_import(supplier, data, bundle=None, expect=202):
    query = f"/v1/imports?supplier={supplier}&profile=trackers" + (f"&bundle_type={bundle}" if bundle else "")
    return api("POST", query, data, expect=expect, headers={"Content-Type": "application/octet-stream"})


def wait_done(import_id, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        imp = api("GET", f"/v1/imports/{import_id}")
        if imp["state"] in ("done", "failed", "cancelled"):
            return imp
        time.sleep(0.2)
    check(False, f"import {import_id} finished within {seconds} s")
    return imp


api("POST", "/v1/thing-types", {"name": "tracker"}, expect=201)
api("POST", "/v1/thing-groups", {"name": "fleet"}, expect=201)
api("POST", "/v1/policies", {"name": "connect", "document": {"Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}}, expect=201)
api("POST", "/v1/profiles", {"name": "trackers", "thing_type": "tracker", "thing_groups": ["fleet"],
                             "policies": ["connect"]}, expect=201)
api("POST", "/v1/profiles", {"name": "broken", "policies": ["nope"]}, expect=201)
out = api("POST", "/v1/profiles", {"name": "no-policy", "thing_type": "tracker"}, expect=400)
check("at least one policy" in out["error"]["message"], f"a profile names a policy, as the seed's: {out}")
out = api("POST", "/v1/imports?supplier=generated&profile=broken", "x", expect=409)
check("policy nope, which does not exist" in out["error"]["message"], f"profile checked first: {out}")
api("POST", "/v1/imports?supplier=acme&profile=trackers", "x", expect=400)
api("POST", "/v1/imports?supplier=infineon&profile=trackers", "x", expect=400)

# Microchip signers, added while serving: refused without one, then through the API.
MCHP = os.path.join(FIXTURES, "ECC608C-TNGTLSU-B.json")
out = start_import("microchip", open(MCHP, "rb").read(), expect=409)
check("POST /v1/imports/verifiers" in out["error"]["message"], f"no signer yet, and how to add one: {out}")
SIGNERS = sorted(os.listdir(os.path.join(FIXTURES, "mchp_verifiers")))
signer_ids = []
for name in SIGNERS:
    pem = open(os.path.join(FIXTURES, "mchp_verifiers", name), "rb").read()
    added = api("POST", "/v1/imports/verifiers", pem, expect=201, headers={"Content-Type": "application/x-pem-file"})
    signer_ids.append(added["id"])
api("POST", "/v1/imports/verifiers", {"certificate_pem": pem.decode()}, expect=409)  # the same one again
api("POST", "/v1/imports/verifiers", {"certificate_pem": "not a certificate"}, expect=400)
# A certificate without a SubjectKeyIdentifier cannot be named by a manifest's kid: refused,
# so that it cannot stop every Microchip import.
no_ski_key = ec.generate_private_key(ec.SECP256R1())
no_ski_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer without SKI")])
no_ski = (x509.CertificateBuilder().subject_name(no_ski_name).issuer_name(no_ski_name)
          .public_key(no_ski_key.public_key()).serial_number(7).not_valid_before(datetime.datetime(2026, 1, 1))
          .not_valid_after(datetime.datetime(2036, 1, 1)).sign(no_ski_key, hashes.SHA256()))
out = api("POST", "/v1/imports/verifiers", {"certificate_pem": no_ski.public_bytes(serialization.Encoding.PEM).decode()},
          expect=400)
check("SubjectKeyIdentifier" in out["error"]["message"], f"a signer without a SubjectKeyIdentifier: 400: {out}")
listed = api("GET", "/v1/imports/verifiers")
check(len(listed["items"]) == len(SIGNERS) and listed["verifier_dir"] == 0 and
      all(v["source"] == "api" and len(v["fingerprint"]) == 64 for v in listed["items"]),
      f"the signers are listed: {[(v['subject'], v['source']) for v in listed['items']]}")

fixtures = [("microchip", "ECC608C-TNGTLSU-B.json", None, 10), ("espressif", "manifest-espressif.csv", None, 7),
            ("infineon", "manifest-infineon.7z", "E0E2", 200), ("generated", "certificates_test.txt", None, 100)]
for supplier, name, bundle, count in fixtures:
    data = open(os.path.join(FIXTURES, name), "rb").read()
    first = wait_done(start_import(supplier, data, bundle)["id"])
    check(first["state"] == "done" and first["counts"]["imported"] == count and first["counts"]["seen"] == count,
          f"{supplier}: {count} imported: {first}")
    again = wait_done(start_import(supplier, data, bundle)["id"])
    check(again["counts"]["already_present"] == count and again["counts"]["imported"] == 0,
          f"{supplier} again: all already present: {again['counts']}")

thing = api("GET", "/v1/things/4BA2BB8764BD")
check(thing["thing_type"] == "tracker" and thing["thing_groups"] == ["fleet"] and
      thing["certificates"][0]["source"] == "espressif" and thing["effective_policies"][0]["name"] == "connect",
      f"an imported thing: {thing}")
page = api("GET", "/v1/imports?limit=2")
check(len(page["items"]) == 2 and page["items"][0]["id"] > page["items"][1]["id"] and page["next"],
      "imports list newest first, in pages")

# A Microchip manifest with its fifth signature changed: that entry reported, the rest in.
text = open(os.path.join(FIXTURES, "ECC608C-TNGTLSU-B.json")).read()
pos = -1
for _ in range(5):
    pos = text.index('"signature"', pos + 1)
value = text.index('"', text.index(":", pos)) + 1
text = text[:value + 3] + ("B" if text[value + 3] == "A" else "A") + text[value + 4:]
tampered = wait_done(start_import("microchip", text)["id"])
check(tampered["counts"]["rejected"] == 1 and tampered["counts"]["already_present"] == 9,
      f"one tampered entry rejected, nine present: {tampered['counts']}")
rows = api("GET", f"/v1/imports/{tampered['id']}/rows?status=rejected")
check(len(rows["items"]) == 1 and rows["items"][0]["index"] == 5 and "does not verify" in rows["items"][0]["reason"],
      f"the rejected row and its reason: {rows}")


def drop(key, data):
    """Puts an object into the inbound store. Into a folder as an operator should: written under
    a name the scan skips, then renamed, so that no scan sees it half written."""
    if s3:
        path = os.path.join(cf.work, "drop.tmp")
        with open(path, "wb") as f:
            f.write(data)
        s3.aws("s3", "cp", "--only-show-errors", path, f"s3://inbound/{key}")
    else:
        target = os.path.join(cf.data, "inbound", key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + ".certfleet-tmp", "wb") as f:
            f.write(data)
        os.replace(target + ".certfleet-tmp", target)


# A manifest dropped into the inbound store (a folder, or a bucket) is imported by itself.
drop("imports/espressif/trackers/reel-9.csv", open(os.path.join(FIXTURES, "manifest-espressif.csv"), "rb").read())
deadline = time.time() + 60
dropped = None
while time.time() < deadline and dropped is None:
    for imp in api("GET", "/v1/imports?limit=5")["items"]:
        if imp["created_by"] == "inbound:imports/espressif/trackers/reel-9.csv" and imp["state"] == "done":
            dropped = imp
    time.sleep(0.5)
check(dropped is not None and dropped["counts"]["already_present"] == 7,
      f"the dropped manifest was imported by the scheduled scan: {dropped}")

# Signers dropped next to a Microchip manifest are signers, not failed manifests.
for i in signer_ids:
    api("DELETE", f"/v1/imports/verifiers/{i}", expect=204)
api("DELETE", f"/v1/imports/verifiers/{signer_ids[0]}", expect=404)
start_import("microchip", open(MCHP, "rb").read(), expect=409)

for name in SIGNERS:
    drop(f"imports/microchip/trackers/{name}", open(os.path.join(FIXTURES, "mchp_verifiers", name), "rb").read())
drop("imports/microchip/trackers/junk.pem", b"not a certificate")
drop("imports/microchip/trackers/reel-1.json", open(MCHP, "rb").read())
deadline = time.time() + 60
dropped = None
while time.time() < deadline and dropped is None:
    for imp in api("GET", "/v1/imports?limit=10")["items"]:
        if imp["created_by"] == "inbound:imports/microchip/trackers/reel-1.json" and imp["state"] in ("done", "failed"):
            dropped = imp
    time.sleep(0.5)
check(dropped is not None and dropped["state"] == "done" and dropped["counts"]["already_present"] == 10,
      f"the Microchip manifest dropped with its signers verifies: {dropped}")
listed = api("GET", "/v1/imports/verifiers")["items"]
check(sorted(v["source"] for v in listed) == sorted(f"imports/microchip/trackers/{n}" for n in SIGNERS),
      f"the dropped signers are listed with their source: {[v['source'] for v in listed]}")
junk = [i for i in api("GET", "/v1/imports?limit=20")["items"]
        if i["created_by"] == "inbound:imports/microchip/trackers/junk.pem"]
check(len(junk) == 1 and junk[0]["state"] == "failed" and "PEM certificate" in (junk[0]["error"] or ""),
      f"a signer that is not a certificate is reported once: {junk}")
check("import.verifier.add" in str(api("GET", "/v1/audit?action=import.verifier.add")), "signers are audited")

# The CLI, beside the running server, on the same store: a progress bar, then the counts.
p = cf.cli("import", os.path.join(FIXTURES, "manifest-espressif.csv"), "--supplier", "espressif", "--profile",
           "trackers")
check("seen 7, imported 0, already present 7" in p.stdout and "100%" in p.stderr,
      f"certfleet import prints its progress and counts: {p.stdout} {p.stderr[-200:]}")
check(os.path.exists(os.path.join(FIXTURES, "manifest-espressif.csv")), "the CLI leaves the user's file")
p = cf.cli("import", "--resume", "999999", expect=1)
check("no import 999999" in p.stderr, f"resuming an unknown import: {p.stderr}")

# 20,000 certificates, killed halfway, resumed.
key = ec.generate_private_key(ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bulk e2e CA")])
now = datetime.datetime(2026, 1, 1)
lines = []
for i in range(20_000):
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bulk-{i}")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(i + 1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650)).sign(key, hashes.SHA256()))
    lines.append(base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode())
big = start_import("generated", "\n".join(lines) + "\n")
deadline = time.time() + 60
while time.time() < deadline:
    imp = api("GET", f"/v1/imports/{big['id']}")
    if imp["counts"]["seen"] >= 2_000 or imp["state"] == "done":
        break
    time.sleep(0.05)
check(imp["state"] == "running", f"the large import is running when killed: {imp['state']} {imp['counts']}")
check(0 < imp["read_fraction"] < 1 and imp["eta_seconds"] is not None and imp["eta_seconds"] > 0,
      f"a running import shows how much is read and an ETA: {imp['read_fraction']} {imp['eta_seconds']}")
cf.server.send_signal(signal.SIGKILL)
cf.server.wait()
killed_at = imp["counts"]["seen"]
cf.start()
done = wait_done(big["id"], seconds=240)
check(done["state"] == "done" and done["counts"]["seen"] == 20_000 and done["counts"]["imported"] == 20_000 and
      done["counts"]["already_present"] == 0,
      f"resumed after SIGKILL at {killed_at}: every certificate once: {done['counts']}")
things = api("GET", "/v1/things?thing_type=tracker&limit=1000")
total = len(things["items"])
while things["next"]:
    things = api("GET", f"/v1/things?thing_type=tracker&limit=1000&next={things['next']}")
    total += len(things["items"])
check(total == 10 + 7 + 200 + 100 + 20_000, f"one thing per certificate: {total}")
# The seed's get-iot-summary.sh: the same figures over the API and on the command line.
summary = api("GET", "/v1/registry/summary")
imported = {c["source"]: c["count"] for c in summary["certificates"] if c["status"] == "active"}
check(summary["thing"] == total and summary["policy"] == 1 and summary["thing-type"] == 1 and
      imported == {"microchip": 10, "espressif": 7, "infineon": 200, "generated": 20_100},
      f"the registry summary: {summary}")
cf.stop()
p = cf.cli("registry", "summary")
check(json.loads(p.stdout) == summary, f"certfleet registry summary prints the same: {p.stdout[:300]}")
if s3:
    s3.stop()
finish("bulk_e2e")
