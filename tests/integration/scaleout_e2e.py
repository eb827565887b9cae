#!/usr/bin/python3
"""Three certfleet nodes on one PostgreSQL behind haproxy (issue 22), sharing nothing but the
database and the object store (s3rver): each node has its own data folder holding only a copy
of the master key and TLS identity. The workflows are driven through the balancer, and the
failures a deployment meets are made to happen:

- W1 issuance and W2 provisioning spread over the nodes (round robin), checked with openssl,
  and a provisioned device accepted by Mosquitto with the CRL fetched through the balancer;
- a revocation through one node is answered "revoked" by every node's OCSP responder and CRL
  within 5 s; a revoked token stops working on every node within auth.token_cache_ms;
- kill -9 of the node running a W3 import halfway: another node finishes it from the object
  store with exact counts and no duplicate rows;
- kill -9 of the scheduler's leader: another node leads, and no firing is lost or doubled;
- 200 real certfleet-agent processes through the balancer, kill -9 of a node during their
  renewal run: every host renewed once, no certificate issued twice;
- PostgreSQL stopped for 20 s under load: /readyz says unready (haproxy marks every node
  down), requests get a JSON 503 at once, every write acknowledged before is there after, and
  the nodes recover without a restart;
- a rolling upgrade: the next release's (additive) migration applied while the nodes serve,
  and a node of this release restarted on the newer schema, without a failed request;
- the audit chain written by three nodes at once verifies.

usage: scaleout_e2e.py CERTFLEET_BINARY
"""
import atexit
import base64
import datetime
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet, Files, psql, run  # noqa: E402
from servers import S3_KEY, Haproxy, S3Server, SmtpServer, free_port, mosquitto_publish  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

BINARY = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
STATE = os.environ.get("CERTFLEET_TEST_STATE", "/tmp")
BUCKET = "certfleet"
IMPORT_ENTRIES = 10000

files = Files("certfleet-scaleout-")
path, write = files.path, files.write
work = os.path.join(STATE, "scaleout-e2e", secrets.token_hex(4))
os.makedirs(work)
started_servers = []  # stopped at exit, whatever happens


@atexit.register
def stop_servers():
    for server in reversed(started_servers):
        try:
            server.stop()
        except Exception as e:  # noqa: BLE001
            print(f"stopping {server}: {e}")

# A PostgreSQL server of this test's own: it is stopped halfway.
pg_dir = os.path.join(work, "pg")


def pg(command):
    subprocess.run([os.path.join(HERE, "pg-harness"), command, pg_dir], check=True, capture_output=True)


class Postgres:
    def stop(self):
        pg("stop")


pg("start")
started_servers.append(Postgres())
s3 = S3Server(work, BUCKET)
started_servers.append(s3)
smtp = SmtpServer(work, rcpt_seconds=0.5)  # a W5 run takes long enough to be killed halfway
started_servers.append(smtp)
lb_port = free_port()
ports = [free_port() for _ in range(3)]
env = {
    "CERTFLEET_PUBLIC_URL": f"https://127.0.0.1:{lb_port}",
    "CERTFLEET_SERVER_LISTEN": f"127.0.0.1:{ports[0]}",
    "CERTFLEET_BLOBS": f"s3://{BUCKET}?endpoint={s3.endpoint}&region=us-east-1",
    "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_KEY,
    # A crashed node's jobs go to another node after 5 s; the leader lease is the database's.
    "CERTFLEET_JOBS_LEASE_SECONDS": "5", "CERTFLEET_JOBS_POLL_MS": "100",
    "CERTFLEET_BULK_BATCH_SIZE": "2", "CERTFLEET_BULK_WRITERS": "1", "CERTFLEET_BULK_SCAN_SECONDS": "5",
    "CERTFLEET_CA_RENEW_GRACE_HOURS": "0",
    # A node told to stop serves on for 2 s with /readyz at 503: haproxy (checks every 300 ms,
    # down after 2 failures) takes it out before it stops accepting.
    "CERTFLEET_SERVER_SHUTDOWN_DRAIN": "2",
    "CERTFLEET_RENEWAL_CA": "hosts.example.com",
    "CERTFLEET_MAIL": f"smtp://127.0.0.1:{smtp.port}",
    "CERTFLEET_DISTRIBUTION_INBOUND": f"s3://{BUCKET}?endpoint={s3.endpoint}&region=us-east-1",
    "CERTFLEET_DISTRIBUTION_SENDER": "no-reply@certs.test",
    "CERTFLEET_DISTRIBUTION_DEFAULT_RECIPIENT": "ops@warehouse.test",
    "CERTFLEET_DISTRIBUTION_SCAN_SECONDS": "86400", "CERTFLEET_DISTRIBUTION_SEND_MINUTES": "10080",
}
first = Certfleet(BINARY, "postgres", "scaleout-e2e", extra_env=env,
                  pg_url=open(os.path.join(pg_dir, "url")).read().strip())
first.init()
first.start()
nodes = [first, first.another_node(own_data=True, port=ports[1]), first.another_node(own_data=True, port=ports[2])]
started_servers.extend(nodes)
check(not os.path.exists(os.path.join(nodes[1].data, "keys")), "a node has no CA key folder: the keys are in the database")
lb_proxy = Haproxy(work, ports, lb_port)
started_servers.append(lb_proxy)
T = first.token

# `lb` is the balancer: a client of it is a client of whichever node haproxy picks.
lb = Certfleet.__new__(Certfleet)
lb.__dict__.update(first.__dict__)
lb.port, lb.url = lb_port, f"https://127.0.0.1:{lb_port}"
wait_for("haproxy to see three nodes up", lambda: list(lb_proxy.servers().values()) == ["UP"] * 3, timeout=20)


def node_of(pid):
    return next(n for n in nodes if n.server.pid == pid)


def served_by():
    """The nodes that answered requests, from their own logs (each logs every request)."""
    return [n for n in nodes if '"route":"/v1/certificates/device"' in open(n.log_path).read()]


# ---- W1 through the balancer ----
lb.api("POST", "/v1/certificates/root", {"fqdn": "example.com", "organization": "Acme"}, expect=201)
inter = lb.api("POST", "/v1/certificates/intermediate", {"fqdn": "iot.example.com"}, expect=201)
write("root.pem", lb.api("GET", "/v1/certificates/example.com")["certificate_pem"])
write("inter.pem", inter["certificate_pem"])
# W4's CA, made now: every node trusts its agents within renewal's trust refresh (15 s).
lb.api("POST", "/v1/certificates/intermediate", {"fqdn": "hosts.example.com", "parent_fqdn": "example.com"}, expect=201)


def device_csr():
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


issued = [lb.api("POST", "/v1/certificates/device", {"parent_fqdn": "iot.example.com", "csr_pem": device_csr()},
                 expect=201) for _ in range(9)]
check(len({c["serial"] for c in issued}) == 9, "nine certificates, nine serials")
check(len(served_by()) == 3, f"round robin: every node issued ({len(served_by())} did)")
for i, c in enumerate(issued[:3]):
    write(f"d{i}.pem", c["certificate_pem"])
    rc, out = run("openssl", "verify", "-CAfile", path("root.pem"), "-untrusted", path("inter.pem"), path(f"d{i}.pem"))
    check(rc == 0, f"openssl verify of a certificate issued through the balancer: {out}")

# ---- a revocation and a token, seen by every node ----
ocsp = [["openssl", "ocsp", "-issuer", path("inter.pem"), "-cert", path("d0.pem"), "-url", f"{n.url}/ocsp",
         "-CAfile", path("root.pem"), "-no_nonce"] for n in nodes]
for cmd in ocsp:
    rc, out = run(*cmd)
    check(rc == 0 and "d0.pem: good" in out, f"every node's OCSP: good: {out}")


def crl_lists(node, serial):
    status, der, _ = node.request("GET", "/crl/iot.example.com.crl", raw=True)
    if status != 200:
        return False
    crl = x509.load_der_x509_crl(der)
    return crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None


lb.api("POST", f"/v1/certificates/{issued[0]['serial']}/revoke", {"reason": "keyCompromise"})
revoked_at = time.time()
for i, n in enumerate(nodes):
    wait_for(f"node {i + 1}'s OCSP to answer revoked", lambda: "d0.pem: revoked" in run(*ocsp[i])[1], timeout=5)
    wait_for(f"node {i + 1}'s CRL to list it", lambda: crl_lists(n, issued[0]["serial"]), timeout=5)
check(time.time() - revoked_at < 5 * 3, "every node within 5 s")

token = lb.api("POST", "/v1/tokens", {"role": "reader", "name": "scaleout"}, expect=201)
for n in nodes:
    check(n.request("GET", "/v1/certificates?limit=1", bearer=token["token"])[0] == 200, "every node takes the token")
check(lb.request("DELETE", f"/v1/tokens/{token['id']}", bearer=T)[0] in (200, 204), "the token revoked")
for i, n in enumerate(nodes):
    wait_for(f"node {i + 1} to refuse the revoked token",
             lambda: n.request("GET", "/v1/certificates?limit=1", bearer=token["token"])[0] == 401, timeout=3)

# ---- W2 through the balancer ----
lb.api("POST", "/v1/thing-types", {"name": "sensor"}, expect=201)
lb.api("POST", "/v1/provisioning-templates", {
    "name": "line-1", "ca_fqdn": "iot.example.com", "endpoint": "mqtts://localhost:8883", "thing_type": "sensor",
    "batches": ["b1"], "policies": []}, expect=201)
keys = {f"dev-{i}": ec.generate_private_key(ec.SECP256R1()) for i in range(6)}
report = lb.api("POST", "/v1/devices/keys", [{
    "device_id": name, "batch": "b1", "public_key_pem": k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()}
    for name, k in keys.items()])
check(report["inserted"] == 6, f"device keys registered: {report}")
for name, k in keys.items():
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(k, hashes.SHA256())
    status, out, _ = lb.request("POST", "/v1/provision", body=csr.public_bytes(serialization.Encoding.DER),
                                headers={"Content-Type": "application/pkcs10"})
    check(status == 200 and out["thing_name"] == name, f"{name} provisioned through the balancer: {status} {out}")
check(lb.api("GET", "/v1/things?thing_type=sensor&limit=10")["items"].__len__() == 6, "six things, one per device")
# Mosquitto takes a provisioned device, with the CA's CRL fetched through the balancer.
mqtt = lb.api("POST", "/v1/certificates/server", {"fqdn": "mqtt.iot.example.com", "sans": ["localhost"]}, expect=201)
write("mqtt-chain.pem", mqtt["certificate_pem"] + inter["certificate_pem"])
write("mqtt.key", mqtt["private_key_pem"])
write("cafile.pem", open(path("root.pem")).read() + inter["certificate_pem"])
status, crl_der, _ = lb.request("GET", "/crl/iot.example.com.crl", raw=True)
write("iot.crl.pem", x509.load_der_x509_crl(crl_der).public_bytes(serialization.Encoding.PEM))
write("device-chain.pem", out["certificate_pem"] + out["chain_pem"])
write("device.key", keys[name].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
rc, text = mosquitto_publish(files.dir, path("mqtt-chain.pem"), path("mqtt.key"), path("cafile.pem"),
                             path("iot.crl.pem"), path("device-chain.pem"), path("device.key"))
check(rc == 0, f"Mosquitto accepts a device provisioned through the balancer: {text}")


# ---- W3: kill -9 of the node running an import, halfway ----
# Two entries per transaction (bulk.batch_size) make the import long enough to be caught.
def generated_manifest(count):
    """Thingpress's generated format: a base64 PEM certificate per line, each its own thing."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Supplier CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = []
    for i in range(count):
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tr-{i:05}")]))
                .issuer_name(issuer).public_key(key.public_key()).serial_number(i + 1)
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
                .sign(ca_key, hashes.SHA256()))
        lines.append(base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode())
    return ("\n".join(lines) + "\n").encode()


lb.api("POST", "/v1/thing-types", {"name": "tracker"}, expect=201)
lb.api("POST", "/v1/policies", {"name": "connect", "document": {"Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}}, expect=201)
lb.api("POST", "/v1/profiles", {"name": "trackers", "thing_type": "tracker", "policies": ["connect"]}, expect=201)
status, started, _ = lb.request("POST", "/v1/imports?supplier=generated&profile=trackers", bearer=T,
                                body=generated_manifest(IMPORT_ENTRIES),
                                headers={"Content-Type": "application/octet-stream"})
check(status == 202, f"an import started through the balancer: {status} {started}")
imp_id = started["id"]
waiting = s3.aws("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", "manifests/")
check(".manifest" in waiting, f"the manifest waits in the object store: {waiting}")


def runner():
    owner = psql(first.env["CERTFLEET_DB"], "SELECT lease_owner FROM jobs WHERE kind = 'bulk.import' AND "
                                            "state = 'running'").strip()
    imp = lb.api("GET", f"/v1/imports/{imp_id}")
    return owner if owner and 0 < imp["counts"]["seen"] < IMPORT_ENTRIES else None


owner = wait_for("the import to be halfway", runner, timeout=60)
victim = node_of(int(owner.split("/")[0].rsplit(":", 1)[1]))  # host:pid/worker
victim.server.send_signal(signal.SIGKILL)
victim.server.wait()
halfway = lb.api("GET", f"/v1/imports/{imp_id}")
check(0 < halfway["counts"]["seen"] < IMPORT_ENTRIES, f"killed halfway: {halfway['counts']}")


def finished():
    imp = lb.api("GET", f"/v1/imports/{imp_id}")
    return imp if imp["state"] in ("done", "failed", "cancelled") else None


done = wait_for("another node to finish the import", finished, timeout=90)
counts = done["counts"] if done else {}
check(done and done["state"] == "done", f"the import is done: {done}")
check(counts.get("seen") == IMPORT_ENTRIES and counts.get("imported") == IMPORT_ENTRIES and
      counts.get("already_present") == 0, f"exact counts after the crash: {counts}")
rows = psql(first.env["CERTFLEET_DB"], "SELECT COUNT(*), COUNT(DISTINCT fingerprint) FROM imported_certificates")
check(rows.strip() == f"{IMPORT_ENTRIES}|{IMPORT_ENTRIES}", f"no duplicate rows: {rows.strip()}")
# Deleted right after the import's end is committed.
wait_for("the manifest deleted when its import ends",
         lambda: ".manifest" not in s3.aws("s3api", "list-objects-v2", "--bucket", BUCKET, "--prefix", "manifests/"))
victim.start()
wait_for("the restarted node to be up again", lambda: list(lb_proxy.servers().values()) == ["UP"] * 3, timeout=20)


# ---- kill -9 of the scheduler's leader ----
def leaders():
    """The running nodes whose scheduler says last, since they started, that it leads."""
    out = []
    for n in nodes:
        with open(n.log_path) as f:
            f.seek(n.log_offset)
            said = re.findall(r"scheduler (is the leader|lost its leader lease)", f.read())
        if n.server.poll() is None and said and said[-1] == "is the leader":
            out.append(n)
    return out


def scan_firings():
    out = psql(first.env["CERTFLEET_DB"], "SELECT dedupe_key FROM jobs WHERE kind = 'bulk.scan' ORDER BY id")
    return [int(k.rsplit(":", 1)[1]) for k in out.split()]


leader = wait_for("a scheduler leader", lambda: leaders()[0] if leaders() else None, timeout=30)
before = len(scan_firings())
leader.server.send_signal(signal.SIGKILL)
leader.server.wait()
killed_at = time.time()
new_leader = wait_for("another node to lead", lambda: [n for n in leaders() if n is not leader], timeout=30)
check(new_leader and time.time() - killed_at < 15, "another node leads within a scheduler tick or two")
wait_for("a firing after the change of leader", lambda: len(scan_firings()) >= before + 2, timeout=30)
firings = scan_firings()
gaps = [b - a for a, b in zip(firings, firings[1:])]
check(len(set(firings)) == len(firings) and all(g >= 5000 for g in gaps),
      f"no firing doubled: bulk.scan every 5 s, due times {firings}")
leader.start()

# ---- W5: kill -9 of the node mailing the warehouses, halfway ----
WAREHOUSES = 10
tree = os.path.join(work, "inbound")
gateways = {}
for w in range(WAREHOUSES):
    for g in range(2):
        eui = f"00800000d{w:02x}{g:05x}"
        gateways[eui] = f"wh-{w:02}"
        os.makedirs(os.path.join(tree, "Inbound", f"wh-{w:02}", eui))
        with open(os.path.join(tree, "Inbound", f"wh-{w:02}", eui, f"{eui[-5:]}.pem"), "w") as f:
            f.write(f"-----BEGIN CERTIFICATE-----\n{secrets.token_hex(200)}\n")
s3.upload_tree(tree)
status, body, _ = lb.request("POST", "/v1/distribution/run", bearer=T)
check(status == 202, f"a distribution run queued through the balancer: {status} {body}")
run_job = body["job_id"]
seen_mail = set()
mails = []


def mailed():
    mails.extend(m for _, m in smtp.new_messages(seen_mail))
    return len(mails)


wait_for("the first mails of the run", lambda: mailed() >= 2, timeout=60)
owner = psql(first.env["CERTFLEET_DB"], f"SELECT lease_owner FROM jobs WHERE id = {run_job}").strip()
victim = node_of(int(owner.split("/")[0].rsplit(":", 1)[1]))
victim.server.send_signal(signal.SIGKILL)
victim.server.wait()
check(mailed() < WAREHOUSES, f"killed halfway through the run: {len(mails)} of {WAREHOUSES} mails sent")
job = wait_for("another node to finish the run", lambda: (lambda j: j if j["state"] in ("done", "dead") else None)(
    lb.api("GET", f"/v1/jobs/{run_job}")), timeout=90)
check(job and job["state"] == "done" and job["attempts"] >= 2, f"the run finished on another attempt: {job}")
mailed()
per_gateway = {eui: 0 for eui in gateways}
for m in mails:
    for line in m.get_body(("plain",)).get_content().splitlines():
        if line in per_gateway:
            per_gateway[line] += 1
check(len(mails) == WAREHOUSES and set(per_gateway.values()) == {1},
      f"every gateway mailed exactly once: {len(mails)} mails, {sorted(set(per_gateway.values()))} mails per gateway")
victim.start()

# ---- W4: 200 real agents through the balancer, kill -9 of a node during their run ----
AGENTS = 200
AGENT = os.path.join(os.path.dirname(BINARY), "certfleet-agent")
hosts_dir = os.path.join(work, "hosts")
os.makedirs(hosts_dir)
hosts = [f"host-{i:03}" for i in range(AGENTS)]
for h in hosts:
    lb.api("POST", "/v1/hosts", {"host_id": h, "cert_path": f"{hosts_dir}/{h}/certs", "key_path": f"{hosts_dir}/{h}/key",
                                 "cacert_path": f"{hosts_dir}/{h}/ca", "sans": [f"{h}.example.com"]}, expect=201)


class Agents:
    def __init__(self):
        self.procs = []

    def start(self, host, token):
        log = open(os.path.join(hosts_dir, f"{host}.log"), "a")
        self.procs.append(subprocess.Popen(
            [AGENT, "--server", lb.url, "--host-id", host, "--ca-file", os.path.join(first.data, "tls", "ca.pem"),
             "--state-dir", f"{hosts_dir}/{host}/state", "--poll-wait", "5", "--bootstrap-token", token],
            stdout=log, stderr=log))

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGCONT)  # one paused by a failed check would not stop
            p.terminate()
        for p in self.procs:
            p.wait(timeout=20)


agents = Agents()
started_servers.append(agents)
for h in hosts:
    agents.start(h, lb.api("POST", f"/v1/hosts/{h}/token", {}, expect=201)["token"])


def count(sql):
    return int(psql(first.env["CERTFLEET_DB"], sql).strip())


wait_for("200 agents to enroll through the balancer",
         lambda: count("SELECT COUNT(*) FROM hosts WHERE status = 'active'") == AGENTS, timeout=120)
# Half the agents are paused until the node is killed, so that the run cannot have ended by then
# however fast the other half renews.
paused = agents.procs[AGENTS // 2:]
for p in paused:
    p.send_signal(signal.SIGSTOP)
renewal_run = lb.api("POST", "/v1/renewals/run", {"all": True}, expect=201)
check(renewal_run["queued"] == AGENTS, f"a run of every host: {renewal_run}")
in_run = f"FROM renewals WHERE run_id = {renewal_run['run_id']}"
wait_for("the run to be under way", lambda: count(f"SELECT COUNT(*) {in_run} AND state = 'validated'") >= 10,
         timeout=60)
victim = nodes[1]
victim.server.send_signal(signal.SIGKILL)
victim.server.wait()
validated_at_kill = count(f"SELECT COUNT(*) {in_run} AND state = 'validated'")
check(validated_at_kill < AGENTS, f"killed during the run ({validated_at_kill} of {AGENTS} renewed)")
for p in paused:
    p.send_signal(signal.SIGCONT)
wait_for("every renewal to end", lambda: count(f"SELECT COUNT(*) {in_run} AND state IN ('validated', 'failed')")
         == AGENTS, timeout=120)
check(count(f"SELECT COUNT(*) {in_run} AND state = 'validated'") == AGENTS, "every host renewed")
per_host = psql(first.env["CERTFLEET_DB"], "SELECT COUNT(*) FROM certificates WHERE subject_kind = 'host' "
                                           "GROUP BY fqdn").split()
check(len(per_host) == AGENTS and set(per_host) == {"2"},
      f"each host has its enrollment certificate and one renewed certificate, none issued twice: "
      f"{sorted(set(per_host))}")
on_disk = psql(first.env["CERTFLEET_DB"], f"SELECT host_id, serial {in_run}").split()
wrong = []
for row in on_disk:
    host, serial = row.split("|")
    cert = x509.load_pem_x509_certificate(open(f"{hosts_dir}/{host}/certs/{host}.crt", "rb").read())
    if cert.serial_number != int(serial, 16):
        wrong.append(host)
check(len(on_disk) == AGENTS and not wrong, f"every agent has its renewed certificate in place (not: {wrong[:5]})")
agents.stop()
victim.start()

class Load:
    """Certificates issued through the balancer, one after another, until stopped: which were
    acknowledged (201) and what the others got."""

    def __init__(self):
        self.acknowledged, self.failures, self.stopping = [], [], threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()
        wait_for("certificates issued under load", lambda: len(self.acknowledged) >= 5, timeout=30)

    def run(self):
        while not self.stopping.is_set():
            try:
                status, out, _ = lb.request("POST", "/v1/certificates/device", bearer=T,
                                            body={"parent_fqdn": "iot.example.com", "csr_pem": device_csr()})
                if status == 201:
                    self.acknowledged.append(out["serial"])
                else:
                    self.failures.append(status)
            except OSError as e:  # haproxy has no node to send to
                self.failures.append(type(e).__name__)

    def more(self, count=5):
        now = len(self.acknowledged)
        wait_for("certificates issued again", lambda: len(self.acknowledged) >= now + count, timeout=30)

    def stop(self):
        self.stopping.set()
        self.thread.join()
        missing = [s for s in self.acknowledged if lb.request("GET", f"/v1/certificates/{s}", bearer=T)[0] != 200]
        check(not missing, f"every write acknowledged is there ({len(self.acknowledged)}; missing {missing[:5]})")


# ---- PostgreSQL stopped for 20 s under load ----
wait_for("three nodes up", lambda: list(lb_proxy.servers().values()) == ["UP"] * 3, timeout=20)
load = Load()
pg("pause")
down_at = time.time()
for i, n in enumerate(nodes):
    wait_for(f"node {i + 1}'s /readyz to say unready", lambda: n.request("GET", "/readyz")[0] == 503, timeout=10)
wait_for("haproxy to mark every node down", lambda: set(lb_proxy.servers().values()) == {"DOWN"}, timeout=10)
t0 = time.time()
status, out, _ = nodes[0].request("POST", "/v1/certificates/device", bearer=T,
                                  body={"parent_fqdn": "iot.example.com", "csr_pem": device_csr()})
check(status == 503 and isinstance(out, dict) and "error" in out and time.time() - t0 < 5,
      f"a request while the database is down: a JSON 503 at once, not a hang: {status} {out}")
while time.time() - down_at < 20:  # the outage lasts 20 s; the load goes on
    check(nodes[1].request("GET", "/readyz")[0] == 503, "unready for as long as the database is down")
    time.sleep(1)
pg("resume")
for i, n in enumerate(nodes):
    wait_for(f"node {i + 1} ready again without a restart", lambda: n.request("GET", "/readyz")[0] == 200, timeout=30)
wait_for("haproxy to route to every node again", lambda: list(lb_proxy.servers().values()) == ["UP"] * 3, timeout=10)
load.more()
load.stop()
check(load.failures, f"refusals during the outage ({len(load.failures)})")

# ---- a rolling upgrade: the next release's migration applied while this release serves ----
# The test is the new release's first node: an additive migration (a column, a table, an
# index) under the migration lock, as `certfleet migrate` applies one, while the nodes of
# this release go on issuing; then one of them restarts on the newer schema.
load = Load()
psql(first.env["CERTFLEET_DB"], f"""BEGIN;
SELECT pg_advisory_xact_lock({0x63657274666c6565});
ALTER TABLE certificates ADD COLUMN rollout_note TEXT;
CREATE TABLE rollout_probe (id BIGINT PRIMARY KEY, note TEXT NOT NULL DEFAULT '');
CREATE INDEX certificates_rollout ON certificates (rollout_note);
INSERT INTO schema_migrations (version, name, applied_at) VALUES (1000, 'the next release (scaleout_e2e)', 0);
COMMIT;""")
load.more()
check(not load.failures, f"no request failed while the migration was applied: {load.failures[:5]}")
p = nodes[2].cli("migrate")
check("applied migration" not in p.stdout + p.stderr and "version 1000" in p.stdout + p.stderr,
      f"this release's migrate leaves the newer schema alone: {p.stdout} {p.stderr}")
nodes[2].stop()
nodes[2].start()
wait_for("a node of this release to restart on the newer schema",
         lambda: nodes[2].request("GET", "/readyz")[0] == 200, timeout=20)
load.more(10)
load.stop()
check(not load.failures, f"no request failed during the rolling restart: {load.failures[:5]}")

# ---- the audit chain three nodes wrote at once ----
p = first.cli("audit", "verify")
check("audit chain intact" in p.stdout, f"certfleet audit verify: {p.stdout} {p.stderr}")
# Groups committing at once append to different chains; the API's cursor reads every row once
# (the nodes' scheduled jobs may append while it reads).
def stored_seqs():
    return {int(s) for s in psql(first.env["CERTFLEET_DB"], "SELECT seq FROM audit_log").split()}


before = stored_seqs()
listed, cursor = [], ""
while True:
    page = first.api("GET", "/v1/audit?limit=1000" + (f"&next={cursor}" if cursor else ""))
    listed += [e["seq"] for e in page["items"]]
    if not page["next"]:
        break
    cursor = page["next"]
after = stored_seqs()
check(len(set(listed)) == len(listed) and before <= set(listed) <= after,
      f"the audit log read in pages lists each of its {len(before)} rows once: {len(listed)} listed, "
      f"{len(set(listed))} distinct, {len(before - set(listed))} missing, {len(set(listed) - after)} unknown")
print(f"  (the nodes appended to {count('SELECT COUNT(*) FROM audit_head WHERE seq % 281474976710656 <> 0')} audit chains)")

finish("scaleout_e2e")
