#!/usr/bin/python3
"""W2 end to end: device keys uploaded (with broken rows, and 100,000 rows), devices
provisioned over HTTPS with the CSR in every form the API takes, the authorizer's answers,
the registry, delayed retrieval, rate limits, and intermediate CA rotation with Mosquitto
(CRL checking on) refusing the old certificate and accepting the new one.

usage: provision_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import base64
import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402
from harness import Certfleet, Files, run  # noqa: E402
from servers import mosquitto_publish  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
RETRIEVE_TTL = 8  # seconds: the checks before the link expires must fit in it on a loaded machine
cf = Certfleet(BINARY, DB_KIND, "provision-e2e", extra_env={
    "CERTFLEET_PROVISION_RETRIEVE_TTL_SECONDS": str(RETRIEVE_TTL),
    "CERTFLEET_PROVISION_DEVICE_RATE_PER_MINUTE": "4",
    "CERTFLEET_SERVER_BODY_TIMEOUT": "120"})
cf.init()
cf.start()
T = cf.token
files = Files("certfleet-provision-e2e-")
path, write = files.path, files.write


def api(method, route, body=None, expect=200, **kw):
    status, out, resp = cf.request(method, route, body=body, bearer=kw.pop("bearer", T), **kw)
    check(status == expect, f"{method} {route}: {status}, wanted {expect}: {str(out)[:400]}")
    return out


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def csr_for(key, *cns):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"))
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())


def pem(csr):
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def escaped(csr):
    return pem(csr).replace("\n", "\\n")


def provision(headers=None, body=None, expect=200, query=""):
    status, out, resp = cf.request("POST", "/v1/provision" + query, body=body, headers=headers)
    check(status == expect, f"provision: {status}, wanted {expect}: {str(out)[:300]}")
    return out, resp


# ---- the CA hierarchy and the registry ----
api("POST", "/v1/certificates/root", {"fqdn": "example.com", "organization": "Acme", "country": "SE"}, expect=201)
ca_serial = api("POST", "/v1/certificates/intermediate", {"fqdn": "iot.example.com", "organization": "Acme"},
                expect=201)["serial"]
api("POST", "/v1/thing-types", {"name": "sensor", "description": "temperature sensor"}, expect=201)
api("POST", "/v1/thing-groups", {"name": "factory-7", "attributes": {"site": "Lund"}}, expect=201)
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["iot:Connect", "iot:Publish"],
                                                  "Resource": "*"}]}
out = api("POST", "/v1/policies", {"name": "bad", "document": {"Statement": [{"Effect": "Perhaps"}]}}, expect=400)
check("Effect must be Allow or Deny" in out["error"]["message"], f"policy documents are validated: {out}")
tmpl = api("POST", "/v1/provisioning-templates", {
    "name": "line-7", "ca_fqdn": "iot.example.com", "endpoint": "mqtts://localhost:8883",
    "thing_type": "sensor", "thing_groups": ["factory-7"], "batches": ["batch-7"],
    "policies": [{"name": "telemetry", "document": policy}]}, expect=201)
check(tmpl["ca_fqdn"] == "iot.example.com" and tmpl["batches"] == ["batch-7"], f"template: {tmpl}")

# ---- device keys: CSV with broken rows, then JSON ----
keys = {f"dev-{i}": new_key() for i in range(1, 6)}
rows = ["device_id,public_key_pem,batch"]
for name, key in keys.items():
    rows.append(f'{name},"{public_pem(key)}",batch-7')
rows.append(f'bad/id,"{public_pem(new_key())}",batch-7')
rows.append('dev-broken,"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",batch-7')
rows.append("dev-short")
report = api("POST", "/v1/devices/keys", "\n".join(rows) + "\n", headers={"Content-Type": "text/csv"})
check(report["inserted"] == 5 and report["rejected"] == 3 and len(report["rejections"]) == 3,
      f"CSV upload counts: {report}")
check([r["row"] for r in report["rejections"]] == [6, 7, 8] and "device_id must be" in report["rejections"][0]["reason"],
      f"each rejected row with its reason: {report['rejections']}")
report = api("POST", "/v1/devices/keys", [{"device_id": n, "public_key_pem": public_pem(k), "batch": "batch-7"}
                                          for n, k in keys.items()])
check(report["unchanged"] == 5 and report["inserted"] == 0, f"the same upload again changes nothing: {report}")
keys["dev-5"] = new_key()
report = api("POST", "/v1/devices/keys", [{"device_id": "dev-5", "public_key_pem": public_pem(keys["dev-5"]),
                                           "batch": "batch-7"}])
check(report["replaced"] == 1, f"a new key replaces the old one: {report}")
api("POST", "/v1/devices/keys", "<xml/>", headers={"Content-Type": "application/xml"}, expect=415)
api("POST", "/v1/devices/keys", "[{", expect=400)
api("POST", "/v1/devices/keys", [], bearer=None, expect=401)

dev = api("GET", "/v1/devices/dev-1")
check(dev["status"] == "registered" and dev["batch"] == "batch-7" and "BEGIN PUBLIC KEY" in dev["public_key_pem"],
      f"GET device: {dev}")
page = api("GET", "/v1/devices?batch=batch-7&limit=2")
check([d["device_id"] for d in page["items"]] == ["dev-1", "dev-2"] and page["next"], f"device page 1: {page}")
page2 = api("GET", f"/v1/devices?batch=batch-7&limit=2&next={page['next']}")
check([d["device_id"] for d in page2["items"]] == ["dev-3", "dev-4"], f"device page 2: {page2}")
api("GET", "/v1/devices?status=bogus", expect=400)
api("GET", "/v1/devices/dev-404", expect=404)

# ---- provisioning: every form of the CSR ----
out, _ = provision({"device-csr": escaped(csr_for(keys["dev-1"], "dev-1"))})
check(out["thing_name"] == "dev-1" and out["endpoint"] == "mqtts://localhost:8883", f"provision: {out}")
cert = x509.load_pem_x509_certificate(out["certificate_pem"].encode())
check(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-1", "the certificate's CN is the id")
check(cert.public_key().public_numbers() == keys["dev-1"].public_key().public_numbers(), "it certifies the CSR's key")
write("root.pem", api("GET", "/v1/certificates/example.com")["certificate_pem"])
write("dev-1.pem", out["certificate_pem"])
write("dev-1-chain.pem", out["chain_pem"])
rc, text = run("openssl", "verify", "-CAfile", path("root.pem"), "-untrusted", path("dev-1-chain.pem"),
               "-purpose", "sslclient", path("dev-1.pem"))
check(rc == 0, f"openssl verify accepts the provisioned certificate: {text}")

out, _ = provision({"device-csr": base64.b64encode(pem(csr_for(keys["dev-2"], "dev-2")).encode()).decode()})
check(out["thing_name"] == "dev-2", "CSR as base64 of the PEM in the header")
der = csr_for(keys["dev-3"], "dev-3").public_bytes(serialization.Encoding.DER)
out, _ = provision({"Content-Type": "application/pkcs10"}, der)
check(out["thing_name"] == "dev-3", "CSR as DER in the body")
out, _ = provision({"Content-Type": "application/json"}, json.dumps({"csr": pem(csr_for(keys["dev-4"], "dev-4"))}))
check(out["thing_name"] == "dev-4", "CSR in a JSON body")

# ---- the authorizer, in order ----
out, _ = provision({"device-csr": "not a csr"}, expect=400)
tampered = bytearray(der)
tampered[-5] ^= 0x01
provision({"Content-Type": "application/pkcs10"}, bytes(tampered), expect=400)
out, _ = provision({"device-csr": escaped(csr_for(keys["dev-5"], "dev-5", "dev-6"))}, expect=400)
check("exactly one common name" in out["error"]["message"], f"several CNs: {out}")
k = new_key()
out, _ = provision({"device-csr": escaped(x509.CertificateSigningRequestBuilder().subject_name(
    x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")])).sign(k, hashes.SHA256()))}, expect=400)
for bad in ["dev'; DROP TABLE devices;--", "../../etc/passwd", "dev 1", "dév-1"]:
    provision({"Content-Type": "application/pkcs10"},
              csr_for(k, bad).public_bytes(serialization.Encoding.DER), expect=400)
provision({"device-csr": escaped(csr_for(k, "dev-unknown"))}, expect=404)
out, _ = provision({"device-csr": escaped(csr_for(k, "dev-5"))}, expect=403)
check("not the one registered" in out["error"]["message"], f"another key: {out}")
provision(expect=400)
status, out, _ = cf.request("POST", "/v1/provision", headers={"device-csr": "A" * 17000})
check(status == 431, f"headers over 16 KiB: 431, got {status}")

# ---- the registry, after provisioning ----
thing = api("GET", "/v1/things/dev-1")
check(thing["thing_type"] == "sensor" and thing["thing_groups"] == ["factory-7"], f"thing: {thing}")
check(len(thing["certificates"]) == 1 and thing["certificates"][0]["status"] == "active", f"thing certs: {thing}")
check([p["name"] for p in thing["effective_policies"]] == ["telemetry"], f"effective policies: {thing}")
api("GET", "/v1/policies/telemetry")
members = api("GET", "/v1/things?group=factory-7&limit=10")
check([t["name"] for t in members["items"]] == ["dev-1", "dev-2", "dev-3", "dev-4"], f"group members: {members}")
typed = api("GET", "/v1/things?thing_type=sensor&limit=3")
check(len(typed["items"]) == 3 and typed["next"], f"things by type, paged: {typed}")
out = api("DELETE", "/v1/thing-types/sensor", expect=409)
check("has this type" in out["error"]["message"], f"delete refused, dependency named: {out}")
out = api("DELETE", "/v1/policies/telemetry", expect=409)
check("attached to certificate" in out["error"]["message"], f"policy in use: {out}")
api("PUT", "/v1/things/dev-1", {"attributes": {"color": "red"}})
check(api("GET", "/v1/things/dev-1")["attributes"] == {"color": "red"}, "thing attributes updated")
api("POST", "/v1/things", {"name": "spare"}, expect=201)
api("PUT", "/v1/thing-groups/factory-7/things/spare")
api("DELETE", "/v1/thing-groups/factory-7/things/spare", expect=204)
api("DELETE", "/v1/thing-groups/factory-7/things/spare", expect=404)
api("DELETE", "/v1/things/spare", expect=204)
api("POST", "/v1/things", {"name": "x"}, bearer=None, expect=401)

# ---- disable ----
api("POST", "/v1/devices/dev-4/disable")
provision({"device-csr": escaped(csr_for(keys["dev-4"], "dev-4"))}, expect=403)

# ---- rotation: a new certificate supersedes the old ----
first = api("GET", "/v1/things/dev-2")["certificates"][0]["serial"]
out, _ = provision({"device-csr": escaped(csr_for(keys["dev-2"], "dev-2"))})
certs = {c["serial"]: c for c in api("GET", "/v1/things/dev-2")["certificates"]}
check(certs[first]["attachment"] == "superseded" and certs[first]["revoke_after"] and
      certs[out["serial"]]["attachment"] == "active", f"the old certificate is superseded: {certs}")
# Attachments take a device certificate by its serial in any spelling, and no CA's or server's
# (a thing's certificates are revoked once superseded).
api("DELETE", f"/v1/policies/telemetry/certificates/00{out['serial'].upper()}", expect=204)
api("PUT", f"/v1/policies/telemetry/certificates/{out['serial'].upper()}")
api("PUT", f"/v1/things/dev-2/certificates/{ca_serial}", expect=409)

# ---- delayed retrieval ----
out, resp = provision({"device-csr": escaped(csr_for(keys["dev-3"], "dev-3")), "Prefer": "respond-async"}, expect=202)
url = urllib.parse.urlsplit(out["retrieve_url"])
check(url.path.startswith("/v1/provision/certificates/") and out["expires_at"], f"202 with a URL: {out}")
target = url.path + "?" + url.query
for _ in range(2):
    status, body, r = cf.request("GET", target, raw=True)
    check(status == 200 and body.count(b"BEGIN CERTIFICATE") == 3, f"the URL gives the PEM chain: {status}")
out2, _ = provision({"device-csr": escaped(csr_for(keys["dev-3"], "dev-3"))}, query="?delivery=url", expect=202)
q = urllib.parse.parse_qs(url.query)
sig = q["signature"][0]
forged = url.path + f"?expires={int(q['expires'][0]) + 3600}&signature={sig}"
check(cf.request("GET", forged, raw=True)[0] == 403, "a later expiry breaks the signature: 403")
flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
check(cf.request("GET", url.path + f"?expires={q['expires'][0]}&signature={flipped}", raw=True)[0] == 403,
      "a tampered signature: 403")
check(cf.request("GET", url.path, raw=True)[0] == 403, "an unsigned URL: 403")
time.sleep(max(0.0, int(q["expires"][0]) + 1 - time.time()))  # until the link has expired
status, body, _ = cf.request("GET", target, raw=True)
check(status == 410, f"a replayed URL after expiry: 410, got {status}")

# ---- rate limit per device (4 a minute in this run) ----
# CSRs for dev-5 made with another key are refused, and do not use up dev-5's own requests.
for _ in range(5):
    status, out, _ = cf.request("POST", "/v1/provision", headers={"device-csr": escaped(csr_for(new_key(), "dev-5"))})
    check(status == 403, f"a CSR for dev-5 with another key: 403, got {status} {out}")
limited = None
for _ in range(6):
    status, out, resp = cf.request("POST", "/v1/provision", headers={"device-csr": escaped(csr_for(keys["dev-5"], "dev-5"))})
    if status == 429:
        limited = resp
        break
    check(status == 200, f"provision before the limit: {status} {out}")
check(limited is not None and int(limited.getheader("Retry-After")) >= 1, "the fifth request in a minute gets 429 with Retry-After")

# ---- 100,000 rows with broken ones: counted, and nothing broken stored ----
one_key = public_pem(new_key()).replace("\n", "\\n")
big = ['[']
for i in range(100_000):
    if i % 10_000 == 5:
        big.append('{"device_id": "bulk/%d", "public_key_pem": "%s"},' % (i, one_key))
    elif i % 10_000 == 7:
        big.append('{"device_id": "bulk-%06d", "public_key_pem": "garbage"},' % i)
    else:
        big.append('{"device_id": "bulk-%06d", "public_key_pem": "%s", "batch": "bulk"},' % (i, one_key))
body = "\n".join(big)[:-1] + "]"
started = time.time()
# About 6 s here; a slow shared machine can take several times that.
report = api("POST", "/v1/devices/keys", body, headers={"Content-Type": "application/json"}, timeout=180)
check(report["inserted"] == 99_980 and report["rejected"] == 20, f"100,000 rows: {dict(report, rejections=None)}")
print(f"100,000-row upload ({len(body) / 1e6:.1f} MB): {time.time() - started:.1f} s")
total, after = 0, ""
while True:
    page = api("GET", "/v1/devices?batch=bulk&limit=1000" + (f"&next={after}" if after else ""))
    total += len(page["items"])
    if not page["next"]:
        break
    after = page["next"]
check(total == 99_980, f"exactly the good rows are stored: {total}")

# ---- intermediate CA rotation, cascade revocation and Mosquitto ----
server = api("POST", "/v1/certificates/server", {"fqdn": "mqtt.iot.example.com", "sans": ["localhost"]}, expect=201)
write("server.pem", server["certificate_pem"] + server["chain_pem"])
write("server.key", server["private_key_pem"])
mqtt_key = new_key()
write("mqtt-device.key", mqtt_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
api("POST", "/v1/devices/keys", [{"device_id": "mqtt-1", "public_key_pem": public_pem(mqtt_key), "batch": "batch-7"}])


def provision_mqtt_device():
    out, _ = provision({"device-csr": escaped(csr_for(mqtt_key, "mqtt-1"))})
    write("mqtt-device.pem", out["certificate_pem"] + out["chain_pem"])
    return out


def fetch_crls(*cas):
    text = ""
    for ca in cas:
        status, der, _ = cf.request("GET", f"/crl/{ca}.crl", raw=True)
        check(status == 200, f"CRL of {ca}")
        write(f"{ca}.crl", der)
        rc, crl_pem = run("openssl", "crl", "-inform", "DER", "-in", path(f"{ca}.crl"))
        text += crl_pem
    write("crls.pem", text)


def mqtt_publish():
    return mosquitto_publish(files.dir, path("server.pem"), path("server.key"), path("root.pem"), path("crls.pem"),
                             path("mqtt-device.pem"), path("mqtt-device.key"))


old = provision_mqtt_device()
check(old["serial"] and "iot.example.com" == api("GET", f"/v1/certificates/{old['serial']}")["parent_fqdn"],
      "provisioned under the old intermediate")
fetch_crls("iot.example.com")
rc, text = mqtt_publish()
check(rc == 0, f"Mosquitto accepts the provisioned device: {text}")

rotated = api("POST", "/v1/cas/iot.example.com/rotate", {}, expect=201)
check(rotated["fqdn"] == "iot-g2.example.com" and rotated["parent_fqdn"] == "example.com" and
      rotated["templates_moved"] == 1, f"rotate: {rotated}")
check(api("GET", "/v1/provisioning-templates/line-7")["ca_fqdn"] == "iot-g2.example.com", "the template moved")
inter_serial = api("GET", "/v1/certificates/iot.example.com")["serial"]
revoked = api("POST", f"/v1/certificates/{inter_serial}/revoke", {"reason": "superseded", "cascade": True})
check(revoked["newly_revoked"] >= 6, f"cascade revokes the old intermediate and what it issued: {revoked['newly_revoked']}")
check(api("GET", f"/v1/certificates/{old['serial']}")["status"] == "revoked", "the device's certificate is revoked")
fetch_crls("iot.example.com", "iot-g2.example.com")
rc, text = mqtt_publish()
check(rc != 0, f"Mosquitto refuses the revoked certificate: rc={rc}")

new = provision_mqtt_device()
check(api("GET", f"/v1/certificates/{new['serial']}")["parent_fqdn"] == "iot-g2.example.com",
      "provisioned again, from the new intermediate")
rc, text = mqtt_publish()
check(rc == 0, f"Mosquitto accepts the new certificate: {text}")
api("POST", "/v1/cas/example.com/rotate", {}, expect=400)

# ---- device lifecycle: disabled with its certificate revoked, enabled again, deleted ----
api("POST", "/v1/devices/mqtt-1/disable", {"revoke": "yes"}, expect=400)
out = api("POST", "/v1/devices/mqtt-1/disable", {"revoke": True})
check(out["status"] == "disabled" and out["revoked"] == [new["serial"]], f"disabled, its certificate revoked: {out}")
fetch_crls("iot.example.com", "iot-g2.example.com")
rc, text = mqtt_publish()
check(rc != 0, f"Mosquitto refuses the disabled device's certificate (on the CRL): rc={rc}")
provision({"device-csr": escaped(csr_for(mqtt_key, "mqtt-1"))}, expect=403)
enabled = api("POST", "/v1/devices/mqtt-1/enable")
check(enabled["status"] == "provisioned", f"enabled: provisioned, as it has had a certificate: {enabled}")
api("POST", "/v1/devices/nope/enable", expect=404)
again = provision_mqtt_device()
fetch_crls("iot.example.com", "iot-g2.example.com")
rc, text = mqtt_publish()
check(rc == 0, f"enabled and provisioned again, Mosquitto accepts it: {text}")
out = api("DELETE", "/v1/devices/mqtt-1", {"revoke": True})
check(out["deleted"] and out["revoked"] == [again["serial"]], f"deleted, its certificate revoked: {out}")
api("GET", "/v1/devices/mqtt-1", expect=404)
api("DELETE", "/v1/devices/mqtt-1", expect=404)
fetch_crls("iot.example.com", "iot-g2.example.com")
rc, text = mqtt_publish()
check(rc != 0, f"Mosquitto refuses the deleted device's certificate: rc={rc}")
actions = [e["action"] for e in api("GET", "/v1/audit?limit=500")["items"]]
check(actions.count("device.enable") == 1 and actions.count("device.delete") == 1, f"audited: {actions[:20]}")

cf.stop()

# ---- rate limit per client address: every new connection from 127.0.0.1 counts ----
limited_cf = Certfleet(BINARY, DB_KIND, "provision-e2e", extra_env={"CERTFLEET_PROVISION_ADDRESS_RATE_PER_MINUTE": "3"})
limited_cf.init()
limited_cf.start()
statuses = [limited_cf.request("POST", "/v1/provision", headers={"device-csr": "x"})[0] for _ in range(3)]
status, out, resp = limited_cf.request("POST", "/v1/provision", headers={"device-csr": "x"})
check(statuses == [400, 400, 400] and status == 429 and "address" in out["error"]["message"] and
      int(resp.getheader("Retry-After")) >= 1, f"the fourth request from one address in a minute: {statuses} {status}")
limited_cf.stop()
finish("provision_e2e")
