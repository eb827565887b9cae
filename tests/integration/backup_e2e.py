#!/usr/bin/python3
"""Backup and restore end to end (issue 19): `certfleet backup` while certificates are being
issued, the backup restored into an empty data folder elsewhere (PostgreSQL: with the pg_dump
and pg_restore it prints), `certfleet audit verify` passing there, and every certificate,
device, host and job of the backup present and the CAs issuing again.

usage: backup_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet, Files, psql  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
files = Files("certfleet-backup-e2e-")
cf = Certfleet(BINARY, DB_KIND, "backup-e2e")
cf.init()
cf.start()
cf.api("POST", "/v1/certificates/root", {"fqdn": "example.com"}, expect=201)
cf.api("POST", "/v1/certificates/intermediate", {"fqdn": "iot.example.com"}, expect=201)
pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
cf.api("POST", "/v1/devices/keys", [{"device_id": f"dev-{i}", "public_key_pem": pub} for i in range(20)])
cf.api("POST", "/v1/hosts", {"host_id": "web-1.example.com"}, expect=201)
for i in range(10):
    last = cf.api("POST", "/v1/certificates/server", {"fqdn": f"s{i}.iot.example.com"}, expect=201)
cf.api("POST", f"/v1/certificates/{last['serial']}/revoke", {"reason": "superseded"})  # a CRL publication job
before = {c["serial"] for c in cf.api("GET", "/v1/certificates?limit=1000")["items"]}

# Load: certificates issued all through the backup.
stop = threading.Event()
issued_during = []


def load():
    n = 0
    while not stop.is_set():
        status, out, _ = cf.request("POST", "/v1/certificates/server", body={"fqdn": f"load{n}.iot.example.com"},
                                    bearer=cf.token)
        if status == 201:
            issued_during.append(out["serial"])
        n += 1


def backup(folder, *flags):
    """certfleet backup; on PostgreSQL first the pg_dump it asks for, as an operator would."""
    if DB_KIND == "postgres":
        first = cf.cli("backup", folder, *flags, expect=1).stdout
        dump = re.search(r"pg_dump --format=custom --file (\S+) '([^']+)'", first)
        check(dump is not None and dump.group(1) == os.path.join(folder, "certfleet.pgdump"),
              f"backup asks for the pg_dump to run first: {first}")
        subprocess.run(["pg_dump", "--format=custom", "--file", dump.group(1), cf.env["CERTFLEET_DB"]], check=True)
    return cf.cli("backup", folder, *flags).stdout


if DB_KIND == "postgres":
    # A pg_dump that failed leaves an empty or partial file: no manifest vouches for it.
    broken = files.path("broken")
    cf.cli("backup", broken, expect=1)
    with open(os.path.join(broken, "certfleet.pgdump"), "wb") as f:
        f.write(b"")
    out = cf.cli("backup", broken, expect=1)
    check("is not a pg_dump archive" in out.stderr and not os.path.exists(os.path.join(broken, "manifest.json")),
          f"an empty dump is refused: {out.stderr}")

thread = threading.Thread(target=load)
thread.start()
wait_for("issuance under way", lambda: len(issued_during) >= 5)
plain = files.path("plain")
out = backup(plain)
with_key = files.path("with-key")
out_key = backup(with_key, "--include-master-key")
stop.set()
thread.join()
check(len(issued_during) > 5, f"certificates were issued during the backups ({len(issued_during)})")
check("master key is NOT in the backup" in out and not os.path.exists(os.path.join(plain, "master.key")),
      f"the master key is left out and the command says where it must be kept: {out}")
check("master key IS in the backup" in out_key and os.path.exists(os.path.join(with_key, "master.key")),
      f"--include-master-key copies it: {out_key}")
manifest = json.load(open(os.path.join(with_key, "manifest.json")))
check(oct(os.stat(with_key).st_mode & 0o777) == "0o700", "the backup folder is private")
if DB_KIND == "sqlite":
    check(any(f["path"].startswith("keys/") for f in manifest["files"]), f"the CA key files are in the manifest: {manifest}")
else:  # on PostgreSQL the CA keys are rows (ca.key_backend db), in the dump
    keys_in_db = int(psql(cf.env["CERTFLEET_DB"], "SELECT COUNT(*) FROM ca_keys").strip())
    check(keys_in_db >= 2 and not any(f["path"].startswith("keys/") for f in manifest["files"]),
          f"the CA keys are rows of the database ({keys_in_db}), in its dump: {manifest}")
cf.cli("backup", plain, expect=1)
cf.stop()

restored = Certfleet(BINARY, DB_KIND, "backup-e2e-restored")
if DB_KIND == "postgres":
    err = restored.cli("restore", with_key, expect=1).stderr
    check("pg_restore" in err, f"restore into an empty database says to pg_restore first: {err}")
    subprocess.run(["pg_restore", "--no-owner", "--dbname", restored.env["CERTFLEET_DB"],
                    os.path.join(with_key, "certfleet.pgdump")], check=True)
else:
    damaged = files.path("damaged")
    shutil.copytree(with_key, damaged)
    key_file = next(f["path"] for f in manifest["files"] if f["path"].startswith("keys/"))
    with open(os.path.join(damaged, key_file), "a") as f:
        f.write("x")
    err = restored.cli("restore", damaged, expect=1).stderr
    check("is damaged" in err, f"a damaged backup is refused before anything is written: {err}")
    check(not os.path.exists(os.path.join(restored.data, "certfleet.db")), "nothing was restored from it")
    with open(os.path.join(damaged, "manifest.json"), "w") as f:
        f.write('{"format": 1, "store": "sqlite", "master_key_included": false, "files": [{"path": "../x"}]}')
    err = restored.cli("restore", damaged, expect=1).stderr
    check("not a certfleet backup manifest" in err, f"a malformed manifest is a clear error: {err}")

out = restored.cli("restore", with_key).stdout
check("restored" in out, f"restore: {out}")
if DB_KIND == "sqlite":  # on PostgreSQL the data folder holds only the master key, the same one
    err = restored.cli("restore", with_key, expect=1).stderr
    check("empty data folder" in err, f"restoring over a data folder with data is refused: {err}")
audit = restored.cli("audit", "verify").stdout
check("audit chain intact" in audit, f"certfleet audit verify passes on the restored store: {audit}")
if "counts" in manifest:
    counted = {t: int(n) for t, n in re.findall(r"(\w+) (\d+);", out)}
    check(counted == manifest["counts"], f"the restored rows are those of the backup: {counted} {manifest['counts']}")

restored.init()  # the TLS files and an admin token of this new node; the data is kept
restored.start()
serials = {c["serial"] for c in restored.api("GET", "/v1/certificates?limit=1000")["items"]}
check(before <= serials, "every certificate issued before the backup is there")
check(len(serials) >= len(before) + 1, "and those issued during it, up to its snapshot")
devices = restored.api("GET", "/v1/devices?limit=100")["items"]
check(len(devices) == 20, f"every device is there ({len(devices)})")
restored.api("GET", "/v1/hosts/web-1.example.com")
jobs = restored.api("GET", "/v1/jobs?limit=100")["items"]
check(len(jobs) > 0 and any(j["kind"] == "ca.crl_publish" for j in jobs), f"the jobs are there: {jobs}")
new = restored.api("POST", "/v1/certificates/server", {"fqdn": "after.iot.example.com"}, expect=201)
check(new["parent_fqdn"] == "iot.example.com", "the restored intermediate issues with its restored key")
restored.stop()
if DB_KIND == "postgres":
    psql(cf.env["CERTFLEET_DB"], "SELECT 1")
finish("backup_e2e")
