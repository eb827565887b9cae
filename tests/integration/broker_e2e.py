#!/usr/bin/python3
"""The registry enforced at a real Mosquitto 2.0 (issue 23): certfleet's plugin authenticates
devices by their TLS certificates and decides every publish, subscribe and delivery from the
policies attached to them. Devices provisioned by W2 and imported by W3 connect; what their
policies lack is refused, and what is delivered is checked with mosquitto_sub. Revoking a
certificate, disabling a device, detaching a policy and changing a policy document each take
effect at the broker within 5 s; with certfleet stopped the broker keeps deciding from its
last snapshot (with plugin_opt_max_stale_s, only for that long), and changes flow again once
certfleet is back. Also: POST /v1/policies/evaluate,
EMQX's HTTP hooks, the snapshot's ETag, policies refused at write time.

usage: broker_e2e.py CERTFLEET_BINARY PLUGIN_SO sqlite|postgres
"""
import base64
import datetime
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish, wait_for  # noqa: E402
from harness import Certfleet, Files  # noqa: E402
from servers import FixedHttpsAnswer, free_port, wait_port  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

BINARY, PLUGIN, DB_KIND = sys.argv[1], sys.argv[2], sys.argv[3]
WITHIN = 5  # seconds a change may take to reach the broker
PORT = free_port()  # certfleet comes back on the same port after its stop
cf = Certfleet(BINARY, DB_KIND, "broker-e2e", extra_env={
    "CERTFLEET_SERVER_LISTEN": f"127.0.0.1:{PORT}", "CERTFLEET_BROKER_SNAPSHOT_MIN_REBUILD_MS": "200"})
cf.init()
cf.start()
files = Files("certfleet-broker-e2e-")
path, write = files.path, files.write
os.chmod(files.dir, 0o777)  # Mosquitto (its own user) writes the plugin's cache and stats here


def api(method, route, body=None, expect=200, bearer=None):
    status, out, resp = cf.request(method, route, body=body, bearer=bearer or cf.token)
    check(status == expect, f"{method} {route}: {status}, wanted {expect}: {str(out)[:400]}")
    return out


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


# ---- the CA, the templates with their policies, the devices (W2) ----
api("POST", "/v1/certificates/root", {"fqdn": "example.com", "organization": "Acme"}, expect=201)
api("POST", "/v1/certificates/intermediate", {"fqdn": "iot.example.com", "organization": "Acme"}, expect=201)
TELEMETRY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect",
     "Resource": "arn:aws:iot:eu-north-1:123456789012:client/${iot:Connection.Thing.ThingName}"},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": "topic/telemetry/${iot:ClientId}/*"},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": "topicfilter/telemetry/${iot:ClientId}/#"}]}
MONITOR = {"Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "client/${iot:Connection.Thing.ThingName}"},
    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": ["topicfilter/telemetry/#", "topicfilter/trackers/#"]},
    {"Effect": "Allow", "Action": "iot:Receive", "Resource": ["topic/telemetry/*", "topic/trackers/*"]}]}
api("POST", "/v1/provisioning-templates", {"name": "line-1", "ca_fqdn": "iot.example.com", "endpoint": "mqtts://x",
                                           "batches": ["line-1"],
                                           "policies": [{"name": "telemetry", "document": TELEMETRY}]}, expect=201)
api("POST", "/v1/provisioning-templates", {"name": "ops", "ca_fqdn": "iot.example.com", "endpoint": "mqtts://x",
                                           "batches": ["ops"],
                                           "policies": [{"name": "monitor", "document": MONITOR}]}, expect=201)
out = api("POST", "/v1/policies", {"name": "shadow", "document": {"Statement": [
    {"Effect": "Allow", "Action": "iot:UpdateThingShadow", "Resource": "*"}]}}, expect=400)
check("iot:UpdateThingShadow is not an MQTT action" in out["error"]["message"],
      f"a policy saying what is not evaluated is refused when written: {out}")
out = api("POST", "/v1/policies", {"name": "var", "document": {"Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "client/${iot:Connection.Thing.Nope}"}]}}, expect=400)
check("${iot:Connection.Thing.Nope}" in out["error"]["message"], f"an unknown policy variable is refused: {out}")

devices = {"dev-1": "line-1", "dev-2": "line-1", "dev-3": "line-1", "mon-1": "ops"}
keys = {d: ec.generate_private_key(ec.SECP256R1()) for d in devices}
api("POST", "/v1/devices/keys", [{"device_id": d, "batch": b, "public_key_pem": keys[d].public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()} for d, b in devices.items()])
serials = {}
for d in devices:
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, d)])).sign(keys[d], hashes.SHA256())
    status, out, _ = cf.request("POST", "/v1/provision", headers={
        "device-csr": csr.public_bytes(serialization.Encoding.PEM).decode().replace("\n", "\\n")})
    check(status == 200, f"{d} provisioned: {status} {out}")
    serials[d] = out["serial"]
    write(f"{d}.pem", out["certificate_pem"] + out["chain_pem"])
    write(f"{d}.key", key_pem(keys[d]))
chain = api("GET", "/v1/certificates/iot.example.com")["certificate_pem"] + \
    api("GET", "/v1/certificates/example.com")["certificate_pem"]

# ---- W3: a supplier's CA and a manifest of one tracker ----
supplier_key = ec.generate_private_key(ec.SECP256R1())
supplier_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Broker e2e supplier CA")])
start = datetime.datetime(2026, 1, 1)
supplier = (x509.CertificateBuilder().subject_name(supplier_name).issuer_name(supplier_name)
            .public_key(supplier_key.public_key()).serial_number(1).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(supplier_key, hashes.SHA256()))
tracker_key = ec.generate_private_key(ec.SECP256R1())
tracker = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tracker-1")]))
           .issuer_name(supplier_name).public_key(tracker_key.public_key()).serial_number(2)
           .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
           .sign(supplier_key, hashes.SHA256()))
tracker_pem = tracker.public_bytes(serialization.Encoding.PEM)
write("tracker-1.pem", tracker_pem.decode())
write("tracker-1.key", key_pem(tracker_key))
api("POST", "/v1/policies", {"name": "tracker", "document": {"Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "client/${iot:Connection.Thing.ThingName}"},
    {"Effect": "Allow", "Action": "iot:Publish", "Resource": "topic/trackers/${iot:Connection.Thing.ThingName}/*"}]}},
    expect=201)
api("POST", "/v1/profiles", {"name": "trackers", "policies": ["tracker"]}, expect=201)
status, imp, _ = cf.request("POST", "/v1/imports?supplier=generated&profile=trackers",
                            body=base64.b64encode(tracker_pem).decode() + "\n", bearer=cf.token,
                            headers={"Content-Type": "application/octet-stream"})
check(status == 202, f"import started: {status} {imp}")
deadline = time.time() + 60
while time.time() < deadline and api("GET", f"/v1/imports/{imp['id']}")["state"] not in ("done", "failed"):
    time.sleep(0.2)
done = api("GET", f"/v1/imports/{imp['id']}")
check(done["counts"]["imported"] == 1, f"the tracker is imported: {done}")

# ---- the snapshot, its ETag, and who may read it ----
reader = api("POST", "/v1/tokens", {"name": "mosquitto", "role": "reader"}, expect=201)["token"]
status, snap, resp = cf.request("GET", "/v1/broker/snapshot", bearer=reader)
check(status == 200 and len(snap["certificates"]) == 5, f"the snapshot: 4 devices and the tracker: {str(snap)[:300]}")
etag = resp.getheader("ETag")
status, _, _ = cf.request("GET", "/v1/broker/snapshot", bearer=reader, headers={"If-None-Match": etag})
check(status == 304, f"an unchanged snapshot is not sent again: {status}")
status, _, _ = cf.request("GET", "/v1/broker/snapshot")
check(status == 401, "the snapshot needs a token")

# ---- Mosquitto with the plugin ----
write("token", reader)
write("clients-ca.pem", chain + supplier.public_bytes(serialization.Encoding.PEM).decode())
MQTT = free_port()
conf = write("mosquitto.conf", "\n".join([
    "per_listener_settings false", "allow_anonymous false", f"listener {MQTT} 127.0.0.1",
    f"cafile {path('clients-ca.pem')}", f"certfile {path('server.pem')}", f"keyfile {path('server.key')}",
    "require_certificate true", f"plugin {PLUGIN}", f"plugin_opt_url {cf.url}",
    f"plugin_opt_token_file {path('token')}", f"plugin_opt_ca_file {path('ca.pem')}", "plugin_opt_poll_ms 500",
    f"plugin_opt_cache_file {path('snapshot.json')}", f"plugin_opt_stats_file {path('stats.json')}",
    "log_type all", ""]))
for name in ("server.pem", "server.key", "ca.pem"):  # certfleet's own TLS identity serves the broker too
    write(name, open(os.path.join(cf.data, "tls", name)).read())
# Not over plain HTTP: the token would go in clear, and anyone on the way could answer.
plain_conf = write("plain.conf", open(conf).read().replace(f"plugin_opt_url {cf.url}",
                                                           f"plugin_opt_url {cf.url.replace('https', 'http')}")
                   .replace(f"listener {MQTT} ", f"listener {free_port()} "))
p = subprocess.run(["mosquitto", "-c", plain_conf], capture_output=True, text=True, timeout=30)
check(p.returncode != 0 and "must be an https:// URL" in p.stdout + p.stderr,
      f"the plugin refuses an http:// URL: {p.returncode} {(p.stdout + p.stderr)[-300:]}")
broker_log = open(path("mosquitto.log"), "w")
broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=broker_log, stderr=subprocess.STDOUT)
wait_port(MQTT, broker, "mosquitto")
TLS = ["-h", "localhost", "-p", str(MQTT), "--cafile", f"{cf.data}/tls/ca.pem"]


def pub(device, topic, message, client_id=None, retain=False):
    p = subprocess.run(["mosquitto_pub", *TLS, "--cert", path(f"{device}.pem"), "--key", path(f"{device}.key"),
                        "-i", client_id or device, "-t", topic, "-m", message, "-q", "1", "-V", "mqttv5"]
                       + (["-r"] if retain else []), capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def sub(device, topic, count=1, wait=3, client_id=None):
    """Subscribes, returns (exit code, output) after `count` messages or `wait` seconds."""
    p = subprocess.run(["mosquitto_sub", *TLS, "--cert", path(f"{device}.pem"), "--key", path(f"{device}.key"),
                        "-i", client_id or device, "-t", topic, "-v", "-C", str(count), "-W", str(wait),
                        "-V", "mqttv5"], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


class Monitor:
    """mon-1 subscribed to telemetry/# and trackers/#, collecting what it is delivered."""

    def __init__(self):
        self.out = open(path("monitor.txt"), "w+")
        self.proc = subprocess.Popen(["mosquitto_sub", *TLS, "--cert", path("mon-1.pem"), "--key", path("mon-1.key"),
                                      "-i", "mon-1", "-t", "telemetry/#", "-t", "trackers/#", "-v", "-V", "mqttv5"],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        self.seen = 0

    def delivered(self, marker, seconds=3):
        deadline = time.time() + seconds
        while time.time() < deadline:
            self.out.seek(0)
            if marker in self.out.read():
                return True
            time.sleep(0.05)
        return False


def within(what, attempt, seconds=WITHIN):
    """Tries `attempt` until it holds, at most `seconds`; returns the time it took."""
    started = time.time()
    while time.time() - started < seconds:
        if attempt():
            return time.time() - started
        time.sleep(0.1)
    check(False, f"{what} within {seconds} s")
    return None


def stats():
    try:
        return json.load(open(path("stats.json")))
    except (OSError, ValueError):
        return {}


within("the plugin loads the snapshot", lambda: stats().get("certificates") == 5)
monitor = Monitor()
within("the monitor connects and subscribes", lambda: pub("dev-1", "telemetry/dev-1/temp", "warmup")[0] == 0
       and monitor.delivered("warmup", 0.5))

# ---- what the policies allow and refuse ----
rc, text = pub("dev-1", "telemetry/dev-1/temp", "21.5")
check(rc == 0 and monitor.delivered("telemetry/dev-1/temp 21.5"), f"dev-1 publishes on its topic: {text}")
rc, text = pub("dev-1", "telemetry/dev-2/temp", "spoofed")
check(not monitor.delivered("spoofed"), f"dev-1 is refused on dev-2's topic (nothing delivered): {rc} {text}")
check("not authorized" in text.lower(), f"MQTT 5 tells the publisher (mosquitto_pub still exits 0): {rc} {text}")
rc, text = sub("dev-1", "telemetry/dev-2/#")
check("all subscription requests were denied" in text.lower(), f"dev-1 may not subscribe to dev-2's topics: {text}")
rc, text = sub("dev-1", "#")
check("all subscription requests were denied" in text.lower(), f"nor to everything: {text}")
rc, text = pub("dev-1", "telemetry/dev-1/temp", "as-dev-2", client_id="dev-2")
check(rc != 0 and not monitor.delivered("as-dev-2", 0.5), f"dev-1's certificate cannot connect as dev-2: {text}")
rc, text = pub("dev-1", "telemetry/dev-1/state", "retained", retain=True)
check(not monitor.delivered("retained", 1), f"a retained publish needs iot:RetainPublish: {rc} {text}")
rc, text = pub("tracker-1", "trackers/tracker-1/pos", "59.3,18.1")
check(rc == 0 and monitor.delivered("trackers/tracker-1/pos 59.3,18.1"), f"the W3 tracker publishes: {text}")
rc, text = pub("tracker-1", "telemetry/tracker-1/pos", "wrong-place")
check(not monitor.delivered("wrong-place"), "the tracker's profile policy allows only its own trackers/ topics")

will = subprocess.Popen(["mosquitto_sub", *TLS, "--cert", path("dev-1.pem"), "--key", path("dev-1.key"), "-i", "dev-1",
                         "-t", "telemetry/dev-1/#", "--will-topic", "telemetry/dev-1/status",
                         "--will-payload", "dev-1-gone", "-V", "mqttv5"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
within("dev-1 connects with a will", lambda: stats().get("clients", 0) >= 2)
will.kill()
check(monitor.delivered("telemetry/dev-1/status dev-1-gone", 5),
      "a device's will is published when it drops (decided after its disconnect, as its own)")

# ---- the operator's evaluation ----
out = api("POST", "/v1/policies/evaluate", {"serial": serials["dev-1"], "client_id": "dev-1",
                                              "action": "iot:Publish", "topic": "telemetry/dev-1/temp"})
check(out["allowed"] and out["policy"] == "telemetry" and out["statement"] == 1 and out["thing"] == "dev-1"
      and out["connect_allowed"] and out["policies"] == ["telemetry"], f"evaluate: allowed, and by what: {out}")
out = api("POST", "/v1/policies/evaluate", {"serial": serials["dev-1"], "client_id": "dev-1",
                                              "action": "iot:Publish", "topic": "telemetry/dev-2/temp"})
check(not out["allowed"] and out["statement"] is None and "no statement allows" in out["reason"],
      f"evaluate: an implicit deny says so: {out}")
fingerprint = tracker.fingerprint(hashes.SHA256()).hex()
out = api("POST", "/v1/policies/evaluate", {"fingerprint": fingerprint, "client_id": "tracker-1",
                                              "action": "iot:Subscribe", "topic": "trackers/#"})
check(not out["allowed"] and out["certificate"]["serial"] is None and out["thing"] == "tracker-1",
      f"evaluate an imported certificate by fingerprint: {out}")
api("POST", "/v1/policies/evaluate", {"serial": serials["dev-1"], "client_id": "dev-1", "action": "iot:Fly"},
    expect=400)
api("POST", "/v1/policies/evaluate", {"serial": "00", "client_id": "dev-1", "action": "iot:Connect"}, expect=404)
out = api("POST", "/v1/policies/evaluate", {"serial": "0x00" + serials["dev-1"].upper(), "client_id": "dev-1",
                                              "action": "iot:Connect"})
check(out["allowed"], f"evaluate: a serial written in capitals with leading zeros names the same certificate: {out}")
api("POST", "/v1/policies/evaluate", {"serial": "not-hex", "client_id": "dev-1", "action": "iot:Connect"}, expect=400)
api("POST", "/v1/policies/evaluate", {"serial": serials["dev-1"], "client_id": "dev-1", "action": "iot:Connect"},
    bearer=reader, expect=403)

# ---- EMQX's HTTP hooks ----
# They answer from the node's snapshot at once and rebuild it in the background: tracker-1,
# imported a moment ago, is allowed once a rebuild has taken it.
out = wait_for("EMQX authn of the imported tracker-1", lambda: (lambda o: o if o["result"] == "allow" else None)(
    api("POST", "/v1/broker/emqx/authn", {"clientid": "tracker-1", "cert_common_name": "tracker-1",
                                          "username": "undefined"}, bearer=reader)), timeout=10)
check(out == {"result": "allow", "is_superuser": False}, f"EMQX authn: {out}")
out = api("POST", "/v1/broker/emqx/authn", {"clientid": "nobody", "cert_common_name": "nobody"}, bearer=reader)
check(out["result"] == "deny", f"EMQX authn of an unknown client: {out}")
out = api("POST", "/v1/broker/emqx/authn", {"clientid": "dev-1", "cert_common_name": "dev-2"}, bearer=reader)
check(out["result"] == "deny", f"EMQX authn: dev-2's certificate cannot connect as dev-1: {out}")
out = api("POST", "/v1/broker/emqx/authn", {"clientid": "dev-1", "cert_common_name": ""}, bearer=reader)
check(out["result"] == "deny", f"EMQX authn without a certificate's CN: {out}")
out = api("POST", "/v1/broker/emqx/authz", {"clientid": "dev-1", "cert_common_name": "dev-1",
                                            "topic": "telemetry/dev-1/t", "action": "publish", "qos": "1",
                                            "retain": "false"}, bearer=reader)
check(out["result"] == "allow", f"EMQX authz allows: {out}")
out = api("POST", "/v1/broker/emqx/authz", {"clientid": "dev-1", "cert_common_name": "dev-1",
                                            "topic": "telemetry/dev-1/t", "action": "publish", "retain": "true"}, bearer=reader)
check(out["result"] == "deny", f"EMQX authz: a retained publish needs iot:RetainPublish: {out}")
out = api("POST", "/v1/broker/emqx/authz", {"clientid": "dev-1", "cert_common_name": "dev-1", "topic": "#",
                                            "action": "subscribe"}, bearer=reader)
check(out["result"] == "deny", f"EMQX authz denies: {out}")

# ---- changes reach the broker within 5 s ----
taken = {}
# A policy document changed: dev-1 may publish only under telemetry/dev-1/ok/.
changed = json.loads(json.dumps(TELEMETRY))
changed["Statement"][1]["Resource"] = "topic/telemetry/${iot:ClientId}/ok/*"
api("PUT", "/v1/policies/telemetry", {"document": changed})
n = [0]


def refused_now():
    n[0] += 1
    pub("dev-1", "telemetry/dev-1/temp", f"after-change-{n[0]}")
    return not monitor.delivered(f"after-change-{n[0]}", 0.3)


taken["policy changed"] = within("a changed policy document is enforced", refused_now)
rc, text = pub("dev-1", "telemetry/dev-1/ok/temp", "still-ok")
check(monitor.delivered("still-ok"), f"what the changed policy allows still flows: {text}")
api("PUT", "/v1/policies/telemetry", {"document": TELEMETRY})

# A connected device whose policy is detached is disconnected.
connected_before = open(path("mosquitto.log")).read().count(" as dev-2 ")
listener = subprocess.Popen(["mosquitto_sub", *TLS, "--cert", path("dev-2.pem"), "--key", path("dev-2.key"),
                             "-i", "dev-2", "-t", "telemetry/dev-2/#", "-V", "mqttv5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
within("dev-2 connects", lambda: open(path("mosquitto.log")).read().count(" as dev-2 ") > connected_before)
api("DELETE", f"/v1/policies/telemetry/certificates/{serials['dev-2']}", expect=204)
taken["policy detached"] = within("dev-2 is disconnected once its policy is detached",
                                  lambda: listener.poll() is not None)
rc, text = pub("dev-2", "telemetry/dev-2/temp", "detached")
check(rc != 0, f"and refused when it connects again: {text}")

# A disabled device is refused.
api("POST", "/v1/devices/dev-1/disable")
taken["device disabled"] = within("a disabled device is refused", lambda: pub("dev-1", "telemetry/dev-1/x", "d")[0] != 0)
api("POST", "/v1/devices/dev-1/enable")
within("an enabled device connects again", lambda: pub("dev-1", "telemetry/dev-1/x", "enabled")[0] == 0)

# A revoked certificate is refused.
check(pub("dev-3", "telemetry/dev-3/x", "before")[0] == 0, "dev-3 publishes")
# The snapshot as a node that has not seen the revocation yet would serve it (below).
_, before_revocation, resp = cf.request("GET", "/v1/broker/snapshot", bearer=cf.token, raw=True)
before_headers = {"ETag": resp.getheader("ETag"), "X-Certfleet-Generation": resp.getheader("X-Certfleet-Generation")}
check(before_headers["X-Certfleet-Generation"] and int(before_headers["X-Certfleet-Generation"]) > 0,
      f"the snapshot says its generation: {before_headers}")
# The cache cannot be written meanwhile (its folder is closed to Mosquitto's user): the broker's
# log says so, and the cache there stays whole.
cached_before = open(path("snapshot.json"), "rb").read()
os.chmod(files.dir, 0o555)
api("POST", f"/v1/certificates/{serials['dev-3']}/revoke", {"reason": "keyCompromise"})
taken["certificate revoked"] = within("a revoked certificate is refused",
                                      lambda: pub("dev-3", "telemetry/dev-3/x", "revoked")[0] != 0)
within("the broker's log to say the cache was not written",
       lambda: "cannot keep the snapshot in" in open(path("mosquitto.log")).read())
check(open(path("snapshot.json"), "rb").read() == cached_before, "the cache kept is whole, the one before")
os.chmod(files.dir, 0o777)

# ---- certfleet stopped: the broker keeps deciding; started again: changes flow ----
cf.stop()
within("the plugin notices certfleet is gone", lambda: stats().get("fetch_errors", 0) > 0)
rc, text = pub("tracker-1", "trackers/tracker-1/pos", "while-down")
check(rc == 0 and monitor.delivered("while-down"), f"allowed devices still publish while certfleet is down: {text}")
check(pub("dev-2", "telemetry/dev-2/x", "down")[0] != 0, "the detached device is still refused")
rc, text = pub("dev-1", "telemetry/dev-2/temp", "spoof-while-down")
check(not monitor.delivered("spoof-while-down"), "and other devices' topics still refused")
cf.start()
check(cf.port == PORT, "certfleet is back on its port")
api("PUT", f"/v1/policies/telemetry/certificates/{serials['dev-2']}")
taken["re-attached after restart"] = within("a change made after certfleet's restart reaches the broker",
                                            lambda: pub("dev-2", "telemetry/dev-2/x", "back")[0] == 0)

# Behind a balancer, a node that has not seen the revocation yet serves the snapshot from
# before it: the plugin keeps the newer one it has. (A stand-in for that node, on certfleet's
# port.)
cf.stop()
stale = FixedHttpsAnswer(PORT, os.path.join(cf.data, "tls", "server.pem"), os.path.join(cf.data, "tls", "server.key"),
                         before_revocation, before_headers)
within("the plugin to be offered the older snapshot", lambda: stats().get("older_snapshots", 0) > 0)
check(pub("dev-3", "telemetry/dev-3/x", "stale")[0] != 0, "an older snapshot does not readmit a revoked certificate")
# Nor after a restart of the broker while only that node answers: the cached snapshot's
# generation is kept beside it.
monitor.proc.terminate()
broker.terminate()
broker.wait(timeout=10)
broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=broker_log, stderr=subprocess.STDOUT)
wait_port(MQTT, broker, "mosquitto")
check(pub("dev-3", "telemetry/dev-3/x", "stale-restart")[0] != 0,
      "a restarted broker does not take an older snapshot than its cached one")
stale.stop()

# The broker restarted while certfleet is down decides from its cached snapshot.
broker.terminate()
broker.wait(timeout=10)
broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=broker_log, stderr=subprocess.STDOUT)
wait_port(MQTT, broker, "mosquitto")
check(pub("dev-2", "telemetry/dev-2/x", "cached")[0] == 0, "a restarted broker decides from its cached snapshot")
check(pub("dev-3", "telemetry/dev-3/x", "cached")[0] != 0, "and still refuses the revoked certificate")
broker.terminate()
broker.wait(timeout=10)

# With plugin_opt_max_stale_s, a snapshot certfleet has not confirmed for longer decides
# nothing: the cached one, written two minutes ago (its file's time), refuses dev-2 now.
limited_conf = write("limited.conf", open(conf).read() + "plugin_opt_max_stale_s 60\n")
aged = time.time() - 120
os.utime(path("snapshot.json"), (aged, aged))
broker = subprocess.Popen(["mosquitto", "-c", limited_conf], stdout=broker_log, stderr=subprocess.STDOUT)
wait_port(MQTT, broker, "mosquitto")
rc, text = pub("dev-2", "telemetry/dev-2/x", "too-old")
check(rc != 0, f"a snapshot older than plugin_opt_max_stale_s admits nobody: {text}")
within("the broker's log to say why",
       lambda: "more than plugin_opt_max_stale_s 60 (certfleet cannot be reached)" in open(path("mosquitto.log")).read())
# certfleet back: the snapshot is confirmed, and deciding resumes.
cf.start()
within("deciding resumes once certfleet answers", lambda: pub("dev-2", "telemetry/dev-2/x", "current")[0] == 0)
check(pub("dev-3", "telemetry/dev-3/x", "current")[0] != 0, "the revoked certificate is still refused")
broker.terminate()
broker.wait(timeout=10)
listener.kill()

s = stats()
check(s.get("checks", 0) > 0 and s.get("p99_ns", 0) > 0, f"the plugin counts its decisions: {s}")
print("taken to reach the broker (s): " + ", ".join(f"{k} {v:.1f}" for k, v in taken.items() if v is not None))
finish("broker e2e")
