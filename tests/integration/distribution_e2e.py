#!/usr/bin/python3
"""W5 end to end: the real binary watches an S3-compatible bucket (s3rver, uploads with the
AWS CLI), tracks each gateway's delivery and mails each warehouse its own files through a
real SMTP server (aiosmtpd); every mail is parsed, its ZIP opened (Python zipfile, 7z for
AES-256) and compared file by file with what was uploaded. Bucket notifications come as S3
sends them, and as SNS delivers them (subscription confirmation and signed notifications,
verified against a signing certificate of a CA of the test's own); an object marked by an
event and then seen by the scan with the same ETag is mailed once, and a signed notification
of an earlier version, replayed after the gateway changed, marks nothing. The S3 keys come from an
AWS CLI credentials file (a profile with a session token), replaced while serving as a helper
renewing temporary credentials would.

usage: distribution_e2e.py CERTFLEET_BINARY sqlite|postgres
"""
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402
from harness import Certfleet, psql  # noqa: E402
from servers import S3Server, SmtpServer, SnsEndpoint  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
BUCKET = "gateway-certs"
DEFAULT_TO = "gatewaycerts@certs.test"
OPS = "ops@certs.test"
ZIP_MAX, MAIL_MAX = 8_000_000, 10_000_000
UK_PASSWORD = "correct horse battery staple"

probe = Certfleet(BINARY, DB_KIND, "distribution-e2e")
work = probe.work
s3 = S3Server(work, BUCKET)
smtp = SmtpServer(work)
sns = SnsEndpoint(work)
TOPIC = "arn:aws:sns:us-east-1:123456789012:gref-bucket-events"
CREDENTIALS = os.path.join(work, "aws-credentials")


def write_credentials(key_id):
    """As a helper that assumes the bucket's role writes them: a new file renamed into place
    (s3rver checks the key id, not the secret)."""
    with open(CREDENTIALS + ".tmp", "w") as f:
        f.write(f"[default]\naws_access_key_id = nobody\naws_secret_access_key = x\n\n[profile gref]\n"
                f"aws_access_key_id = {key_id}\naws_secret_access_key = S3RVER\n"
                f"aws_session_token = {secrets.token_hex(16)}\n")
    os.replace(CREDENTIALS + ".tmp", CREDENTIALS)


write_credentials("S3RVER")
blocked = os.path.join(work, "blocked")
cf = Certfleet(BINARY, DB_KIND, "distribution-e2e", extra_env={
    "CERTFLEET_DISTRIBUTION_INBOUND": f"s3://{BUCKET}?endpoint={s3.endpoint}&region=us-east-1",
    "CERTFLEET_S3_CREDENTIALS_FILE": CREDENTIALS, "CERTFLEET_S3_PROFILE": "gref",
    "CERTFLEET_MAIL": f"smtp://127.0.0.1:{smtp.port}",
    "CERTFLEET_DISTRIBUTION_SENDER": "no-reply@certs.test",
    "CERTFLEET_DISTRIBUTION_DEFAULT_RECIPIENT": DEFAULT_TO,
    "CERTFLEET_DISTRIBUTION_OPERATORS": OPS,
    "CERTFLEET_DISTRIBUTION_MAX_ATTEMPTS": "3", "CERTFLEET_DISTRIBUTION_SEND_TRIES": "2",
    "CERTFLEET_DISTRIBUTION_SEND_BACKOFF_MS": "200",
    "CERTFLEET_DISTRIBUTION_WORK_DIR": os.path.join(blocked, "zips"),
    "CERTFLEET_DISTRIBUTION_SCAN_SECONDS": "86400", "CERTFLEET_DISTRIBUTION_SEND_MINUTES": "10080",
    "CERTFLEET_JOBS_POLL_MS": "50",
    "CERTFLEET_DISTRIBUTION_SNS_TOPICS": TOPIC, "CERTFLEET_DISTRIBUTION_SNS_TRUST": sns.ca_file,
    "CERTFLEET_DISTRIBUTION_SNS_CONNECT_TO": sns.connect_to})
if DB_KIND == "postgres":
    cf.env["CERTFLEET_DB"] = probe.env["CERTFLEET_DB"]
cf.init()
cf.start()
T = cf.token
tree = os.path.join(work, "tree")
uploaded = {}  # key -> bytes, as last uploaded
seen = set()   # maildir keys already looked at


def eui(n, site=0):
    return f"00800000d{site:02x}{n:05x}"


def put(key, data):
    path = os.path.join(tree, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    uploaded[key] = data


def gateway(warehouse, e, size=None):
    body = os.urandom(size) if size else f"-----BEGIN CERTIFICATE-----\n{secrets.token_hex(300)}\n".encode()
    put(f"Inbound/{warehouse}/{e}/{e[-5:]}.pem", body)
    put(f"Inbound/{warehouse}/{e}/{e[-5:]}.key", b"-----BEGIN EC PRIVATE KEY-----\n" + secrets.token_hex(60).encode())


def shared(warehouse, region="us-east-1", account="123456789012"):
    put(f"Inbound/{warehouse}/servertrust_{region}_{account}.pem", secrets.token_hex(200).encode())
    put(f"Inbound/{warehouse}/endpoints_{region}_{account}.json", b'{"iot": "' + secrets.token_hex(20).encode() + b'"}')


def sync():
    """Uploads what changed since the last sync, then forgets the local copies."""
    s3.upload_tree(tree)
    shutil.rmtree(tree)
    os.makedirs(tree)


def run_once():
    status, body, _ = cf.request("POST", "/v1/distribution/run", bearer=T)
    check(status == 202, f"run accepted: {status} {body}")
    job = body["job_id"]
    for _ in range(600):
        _, j, _ = cf.request("GET", f"/v1/jobs/{job}", bearer=T)
        if j["state"] in ("done", "dead"):
            check(j["state"] == "done", f"distribution job {job} ended {j['state']}: {j.get('last_error')}")
            return
        time.sleep(0.1)
    check(False, f"distribution job {job} finished within 60 s")


def mails():
    out = []
    for size, m in smtp.new_messages(seen):
        attachments = {}
        for part in m.iter_attachments():
            attachments[part.get_filename()] = part.get_content()
        out.append({"size": size, "to": m["To"], "subject": m["Subject"], "text": m.get_body(("plain",)).get_content(),
                    "attachments": attachments})
    return out


def unzip(data, password=None):
    if password is None:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return {n: z.read(n) for n in z.namelist()}
    # Python's zipfile cannot read AES; 7z can.
    d = os.path.join(work, "unz-" + secrets.token_hex(4))
    os.makedirs(d)
    with open(os.path.join(d, "a.zip"), "wb") as f:
        f.write(data)
    p = subprocess.run(["7z", "x", f"-p{password}", "-oout", "a.zip"], cwd=d, capture_output=True, text=True)
    check(p.returncode == 0, f"7z opens the AES ZIP with the warehouse's password: {p.stdout[-500:]}")
    wrong = subprocess.run(["7z", "t", "-pwrong-password", "a.zip"], cwd=d, capture_output=True, text=True)
    check(wrong.returncode != 0, "the AES ZIP does not open with a wrong password")
    out = {}
    for root, _, names in os.walk(os.path.join(d, "out")):
        for n in names:
            full = os.path.join(root, n)
            out[os.path.relpath(full, os.path.join(d, "out"))] = open(full, "rb").read()
    return out


def expected(warehouse, euis, with_shared=True):
    """ZIP entries for these gateways of a warehouse: shared files at the root, gateway files in EUI folders."""
    out = {}
    for key, data in uploaded.items():
        parts = key.split("/")
        if parts[1] != warehouse:
            continue
        if len(parts) == 3 and with_shared:
            out[parts[2]] = data
        if len(parts) == 4 and parts[2] in euis:
            out[f"{parts[2]}/{parts[3]}"] = data
    return out


def records(warehouse=None, status=None):
    q = "&".join(f"{k}={v}" for k, v in (("warehouse", warehouse), ("status", status)) if v)
    _, body, _ = cf.request("GET", f"/v1/distribution/status?limit=1000&{q}", bearer=T)
    return {(r["warehouse"], r["gateway_eui"]): r for r in body["items"]}


# Bad input first: each refused with a clear message, nothing changed.
for method, path_, body, want in [
        ("PUT", "/v1/distribution/warehouses/..bad", {"recipients": ["a@b.c"]}, 400),
        ("PUT", "/v1/distribution/warehouses/Warehouse_UK", {"recipients": ["not an address"]}, 400),
        ("PUT", "/v1/distribution/warehouses/Warehouse_UK", {"recipients": ["a@b.c"], "zip_password": "short"}, 400),
        ("PUT", "/v1/distribution/warehouses/Warehouse_UK", {"recipients": ["a@b.c"],
                                                             "zip_password": "\u0000" + "a" * 20}, 400),
        ("PUT", "/v1/distribution/warehouses/Warehouse_UK", {"recipients": []}, 400),
        ("POST", "/v1/distribution/events", "not json", 400),
        ("POST", "/v1/distribution/events", {"Records": [{"eventName": "ObjectCreated:Put"}]}, 400),
        ("GET", "/v1/distribution/status?status=LOST", None, 400)]:
    status, resp, _ = cf.request(method, path_, body=body, bearer=T)
    check(status == want and "error" in (resp or {}), f"{method} {path_} {body!r} -> {status} {resp}")
check(cf.request("GET", "/v1/distribution/status")[0] == 401, "status needs a token")
check(cf.request("POST", "/v1/distribution/run")[0] == 401, "run needs a token")

status, resp, _ = cf.request("PUT", "/v1/distribution/warehouses/Warehouse_UK",
                             body={"recipients": ["uk-certs@certs.test"], "zip_password": UK_PASSWORD}, bearer=T)
check(status == 200 and resp["zip_encrypted"] is True and "zip_password" not in resp, f"UK settings saved: {resp}")
# Writing back what a GET shows (no password in it) keeps the password: the UK ZIPs below are
# still AES. null removes it.
status, resp, _ = cf.request("PUT", "/v1/distribution/warehouses/Warehouse_UK",
                             body={"recipients": ["uk-certs@certs.test"]}, bearer=T)
check(status == 200 and resp["zip_encrypted"] is True, f"a PUT without zip_password keeps it: {resp}")
cf.api("PUT", "/v1/distribution/warehouses/Warehouse_SPARE", {"recipients": ["a@b.c"], "zip_password": UK_PASSWORD})
status, resp, _ = cf.request("PUT", "/v1/distribution/warehouses/Warehouse_SPARE",
                             body={"recipients": ["a@b.c"], "zip_password": None}, bearer=T)
listed = {w["name"]: w for w in cf.api("GET", "/v1/distribution/warehouses")["items"]}
check(status == 200 and resp["zip_encrypted"] is False and listed["Warehouse_SPARE"]["zip_encrypted"] is False
      and listed["Warehouse_UK"]["zip_encrypted"] is True, f"zip_password null removes it: {resp} {listed}")
stored_sql = "SELECT zip_password FROM distribution_warehouses WHERE name = 'Warehouse_UK'"
if DB_KIND == "postgres":
    stored = psql(cf.env["CERTFLEET_DB"], stored_sql).strip()
else:
    import sqlite3
    stored = sqlite3.connect(os.path.join(cf.data, "certfleet.db")).execute(stored_sql).fetchone()[0]
check(stored.startswith("v1.") and "horse" not in stored, f"the store keeps the password sealed: {stored[:20]}")

# 1. First upload: two warehouses, shared files, gateways, and stray objects to ignore.
us = [eui(i, 1) for i in range(3)]
uk = [eui(i, 2) for i in range(2)]
shared("Warehouse_US")
shared("Warehouse_UK", "eu-west-2", "210987654321")
for e in us:
    gateway("Warehouse_US", e)
for e in uk:
    gateway("Warehouse_UK", e)
many = [eui(i, 4) for i in range(500)]  # with the rest, more than one listing page (1000 keys)
for e in many:
    put(f"Inbound/Warehouse_MANY/{e}/{e[-5:]}.pem", e.encode())
    put(f"Inbound/Warehouse_MANY/{e}/{e[-5:]}.key", e.encode()[::-1])
shared("Warehouse_MANY")
put("Inbound/Warehouse_US/notes.txt", b"stray")
put(f"Inbound/Warehouse_US/{us[0]}/extra/deep.pem", b"wrong depth")
put("Inbound/readme.md", b"stray")
put(f"Inbound/Warehouse_US/{us[1]}/zzzzz.pem", b"wrong name")
for k in ("Inbound/Warehouse_US/notes.txt", f"Inbound/Warehouse_US/{us[0]}/extra/deep.pem", "Inbound/readme.md",
          f"Inbound/Warehouse_US/{us[1]}/zzzzz.pem"):
    uploaded.pop(k)
sync()
run_once()
got = mails()
m_many = [m for m in got if m["text"].startswith("Warehouse: Warehouse_MANY")]
check(len(m_many) == 1, f"the 500-gateway warehouse in one mail: {len(m_many)}")
if m_many:
    (name, data), = m_many[0]["attachments"].items()
    check(unzip(data) == expected("Warehouse_MANY", many), "all 500 gateways, from two listing pages, byte for byte")
got = [m for m in got if m not in m_many]
check(len(got) == 2, f"one mail per warehouse: {len(got)}")
by_to = {m["to"]: m for m in got}
m_us, m_uk = by_to.get(DEFAULT_TO), by_to.get("uk-certs@certs.test")
check(m_us is not None and m_uk is not None, f"US to the default recipient, UK to its own: {list(by_to)}")
if m_us and m_uk:
    check(m_us["subject"] == "Warehouse_US: Gateway Certificates and Server/Endpoints Files", m_us["subject"])
    (name, data), = m_us["attachments"].items()
    check(name.startswith("Warehouse_US_") and name.endswith(".zip") and "_part" not in name, name)
    check(unzip(data) == expected("Warehouse_US", us), "the US ZIP holds exactly the US files, byte for byte")
    check(all(e in m_us["text"] for e in us) and "Gateways in this mail: 3" in m_us["text"], m_us["text"])
    (name, data), = m_uk["attachments"].items()
    check(unzip(data, UK_PASSWORD) == expected("Warehouse_UK", uk), "the UK ZIP (AES) holds exactly the UK files")
recs = records()
check(all(r["status"] == "EMAILED" and r["last_emailed"] for r in recs.values()), f"all EMAILED: {recs}")
check(len(recs) == 508, f"505 gateways + 3 SHARED_FILES records: {len(recs)}")
_, deliveries, _ = cf.request("GET", "/v1/distribution/deliveries", bearer=T)
check(len(deliveries["items"]) == 3 and all(d["message_id"] and d["zip_bytes"] > 0 for d in deliveries["items"]),
      f"deliveries recorded: {deliveries}")

# Nothing new: nothing sent.
run_once()
check(mails() == [], "a run with nothing new sends nothing")

# 2. A gateway update: that gateway and the shared files, nothing else.
gateway("Warehouse_US", us[1])
sync()
run_once()
got = mails()
check(len(got) == 1, f"one mail for one updated gateway: {len(got)}")
if got:
    (name, data), = got[0]["attachments"].items()
    check(unzip(data) == expected("Warehouse_US", [us[1]]), "only the updated gateway and the shared files")

# 3. Shared files alone.
shared("Warehouse_US")
sync()
run_once()
got = mails()
check(len(got) == 1 and got[0]["subject"] == "Warehouse_US: Server and Endpoints Files",
      f"shared-only mail: {[m['subject'] for m in got]}")
if got:
    (name, data), = got[0]["attachments"].items()
    check(unzip(data) == expected("Warehouse_US", []), "a shared-only ZIP holds only the shared files")

# 4. 30 MB of gateway files: split into parts under both limits, each file exactly once.
eu = [eui(i, 3) for i in range(100)]
shared("Warehouse_EU")
for e in eu:
    gateway("Warehouse_EU", e, size=300_000)
sync()
run_once()
got = [m for m in mails() if m["text"].startswith("Warehouse: Warehouse_EU")]
check(len(got) >= 4, f"30 MB go out in at least four mails: {len(got)}")
seen_files = {}
for m in got:
    (name, data), = m["attachments"].items()
    check("_part" in name, f"split ZIPs are named _partN: {name}")
    check(len(data) <= ZIP_MAX, f"{name}: {len(data)} bytes <= {ZIP_MAX}")
    files = unzip(data)
    check(all(k in files for k in expected("Warehouse_EU", [])), f"{name} carries the shared files")
    for k, v in files.items():
        if "/" in k:
            check(k not in seen_files, f"{k} in one part only")
            seen_files[k] = v
    euis_in = {k.split("/")[0] for k in files if "/" in k}
    check(all(f"{e}/{e[-5:]}.pem" in files and f"{e}/{e[-5:]}.key" in files for e in euis_in),
          f"no gateway's files are split across parts ({name})")
    check(all(e in m["text"] for e in euis_in), f"the body lists the part's EUIs ({name})")
want = {k: v for k, v in expected("Warehouse_EU", eu).items() if "/" in k}
check(seen_files == want, f"every EU gateway file exactly once over the parts ({len(seen_files)} of {len(want)})")
_, deliveries, _ = cf.request("GET", "/v1/distribution/deliveries?warehouse=Warehouse_EU&limit=100", bearer=T)
check(all(d["message_bytes"] <= MAIL_MAX and d["parts"] == len(got) for d in deliveries["items"]),
      f"every EU mail within {MAIL_MAX} bytes: {[d['message_bytes'] for d in deliveries['items']]}")

# 5. An S3 event marks a record at once, before any scan.
gateway("Warehouse_UK", uk[0])
sync()
key = f"Inbound/Warehouse_UK/{uk[0]}/{uk[0][-5:]}.pem"
# The event of a new upload: its time is now, after the version a scan recorded before.
now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
event = {"Records": [{"eventName": "ObjectCreated:Put", "eventTime": now,
                      "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": 10, "eTag": "abc123"}}},
                     {"eventName": "ObjectRemoved:Delete", "s3": {"object": {"key": key}}}]}
status, resp, _ = cf.request("POST", "/v1/distribution/events", body=event, bearer=T)
check(status == 202 and resp["marked_pending"] == 1, f"event accepted: {status} {resp}")
check(records("Warehouse_UK", "PENDING_EMAIL").keys() == {("Warehouse_UK", uk[0])}, "the event marked the gateway")
# An event dated in the future is taken as of now: else every real event after it would look
# older than what it recorded, and be ignored.
future = {"Records": [dict(event["Records"][0], eventTime="9999-12-31T00:00:00.000Z",
                           s3={"bucket": {"name": BUCKET}, "object": {"key": key, "size": 10, "eTag": "abc124"}})]}
status, resp, _ = cf.request("POST", "/v1/distribution/events", body=future, bearer=T)
r = records("Warehouse_UK")[("Warehouse_UK", uk[0])]
check(status == 202 and not str(r["last_modified"]).startswith("9999"), f"a future eventTime is not kept: {resp} {r}")

# 6. SMTP down: FAILED_EMAIL with the error; back up: EMAILED on the next run.
smtp.stop()
run_once()
r = records("Warehouse_UK")[("Warehouse_UK", uk[0])]
check(r["status"] == "FAILED_EMAIL" and r["attempts"] == 1 and r["last_error"], f"SMTP down -> FAILED_EMAIL: {r}")
smtp.start()
run_once()
got = mails()
r = records("Warehouse_UK")[("Warehouse_UK", uk[0])]
check(r["status"] == "EMAILED" and len(got) == 1, f"retried and EMAILED once SMTP is back: {r}, {len(got)} mails")

# 7. One gateway's download fails: it alone is FAILED_EMAIL, the others go out. After
#    max_attempts runs it stays failed and the operators get one notice.
gateway("Warehouse_US", us[0])
gateway("Warehouse_US", us[2])
sync()
broken = s3.object_path(f"Inbound/Warehouse_US/{us[0]}/{us[0][-5:]}.pem")
broken_data = open(broken, "rb").read()
os.remove(broken)
os.makedirs(broken)  # s3rver lists the object but cannot read it
run_once()
got = mails()
check(len(got) == 1, f"the healthy gateway goes out: {len(got)}")
if got:
    (name, data), = got[0]["attachments"].items()
    check(unzip(data) == expected("Warehouse_US", [us[2]]), "the mail holds the healthy gateway only")
r = records("Warehouse_US")
check(r[("Warehouse_US", us[0])]["status"] == "FAILED_EMAIL" and r[("Warehouse_US", us[2])]["status"] == "EMAILED",
      f"broken gateway FAILED_EMAIL, healthy one EMAILED: {r[('Warehouse_US', us[0])]}")
run_once()
run_once()
r = records("Warehouse_US")[("Warehouse_US", us[0])]
check(r["status"] == "FAILED_EMAIL" and r["attempts"] == 3, f"failed for good after 3 attempts: {r}")
notices = [m for m in mails() if m["to"] == OPS]
check(len(notices) == 1 and us[0] in notices[0]["text"], f"the operators are told once: {len(notices)}")
run_once()
check(records("Warehouse_US")[("Warehouse_US", us[0])]["attempts"] == 3, "no retries past max_attempts")
check(mails() == [], "and no more mails about it")
check("/v1/distribution/warehouses/Warehouse_US/resend" in notices[0]["text"], "the notice names the way back")
# Out of attempts it is not retried (above); once the cause is fixed, a resend of the failed
# records mails it on the next run.


def api(method, route, body=None, expect=200):
    status, out, _ = cf.request(method, route, body=body, bearer=T)
    check(status == expect, f"{method} {route}: {status}, wanted {expect}: {str(out)[:300]}")
    return out


os.rmdir(broken)
open(broken, "wb").write(broken_data)
api("POST", "/v1/distribution/warehouses/Nowhere/resend", {}, expect=404)
api("POST", "/v1/distribution/warehouses/Warehouse_US/resend", {"failed_only": "yes"}, expect=400)
out = api("POST", "/v1/distribution/warehouses/Warehouse_US/resend", {"gateways": [us[0]], "failed_only": True})
check(out["marked"] == 1, f"one record set back: {out}")
check(records("Warehouse_US")[("Warehouse_US", us[0])]["status"] == "PENDING_EMAIL", "pending again")
run_once()
got = mails()
check(len(got) == 1 and records("Warehouse_US")[("Warehouse_US", us[0])]["status"] == "EMAILED",
      f"resent: one mail, EMAILED: {len(got)}")

# 8. The ZIP folder cannot be written: nothing is sent, the warehouse's records FAILED_EMAIL.
gateway("Warehouse_UK", uk[1])
sync()
shutil.rmtree(blocked, ignore_errors=True)
open(blocked, "w").write("a file where the ZIP folder should be")
run_once()
check(mails() == [], "nothing is sent when ZIPs cannot be built")
r = records("Warehouse_UK")[("Warehouse_UK", uk[1])]
check(r["status"] == "FAILED_EMAIL" and "ZIP" in (r["last_error"] or ""), f"ZIP failure -> FAILED_EMAIL: {r}")
os.remove(blocked)
run_once()
got = mails()
check(len(got) == 1 and records("Warehouse_UK")[("Warehouse_UK", uk[1])]["status"] == "EMAILED",
      "sent on the next run once the folder is back")

# 9. Bucket notifications through SNS: the subscription is confirmed, signed notifications
# mark records without a token, and anything unsigned, tampered or from elsewhere is refused.
def sns_post(message, headers=None):
    h = {"x-amz-sns-message-type": message["Type"], "Content-Type": "text/plain; charset=UTF-8", **(headers or {})}
    return cf.request("POST", "/v1/distribution/events", body=json.dumps(message), headers=h)


status, out, _ = sns_post(sns.message("SubscriptionConfirmation", TOPIC, "You have chosen to subscribe..."))
check(status == 200 and out.get("confirmed") == TOPIC and len(sns.confirmed) == 1 and "Token=" in sns.confirmed[0],
      f"the subscription is confirmed by GETting its SubscribeURL: {status} {out} {sns.confirmed}")
sns_gw = eui(1, site=9)
gateway("Warehouse_US", sns_gw)
sync()
sns_key = f"Inbound/Warehouse_US/{sns_gw}/{sns_gw[-5:]}.pem"
etag = json.loads(s3.aws("s3api", "head-object", "--bucket", BUCKET, "--key", sns_key))["ETag"].strip('"')
s3_event = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-12-01T08:00:00.123Z",
                                    "s3": {"bucket": {"name": BUCKET},
                                           "object": {"key": sns_key, "size": 10, "eTag": etag}}}]})
status, out, _ = sns_post(sns.message("Notification", TOPIC, json.dumps({"Service": "Amazon S3",
                                                                         "Event": "s3:TestEvent"})))
check(status == 200 and out.get("test_event"), f"S3's test event is taken and changes nothing: {status} {out}")
tampered = sns.message("Notification", TOPIC, s3_event)
tampered["Message"] = tampered["Message"].replace("08:00", "09:00")
other_topic = "arn:aws:sns:us-east-1:999999999999:someone-else"
refusals = [(tampered, "does not verify"),
            (sns.message("Notification", other_topic, s3_event), "not one of distribution.sns_topics"),
            (sns.message("Notification", TOPIC, s3_event, cert_url="https://evil.example.com/cert.pem"),
             "SigningCertURL"),
            (sns.message("Notification", TOPIC, s3_event, timestamp="2020-01-01T00:00:00.000Z"), "ago")]
for message, why in refusals:
    status, out, _ = sns_post(message)
    check(status == 403 and why in out["error"]["message"], f"refused ({why}): {status} {out}")
check(not records("Warehouse_US", "PENDING_EMAIL"), "nothing refused marked anything")
# A signing certificate URL that fails is not fetched again at once: anyone may name one.
missing = f"https://{sns.host}/SimpleNotificationService-missing.pem"
for _ in range(2):
    status, out, _ = sns_post(sns.message("Notification", TOPIC, s3_event, cert_url=missing))
    check(status == 503, f"a signing certificate that cannot be fetched: 503, for SNS to deliver again: {status} {out}")
check(sns.gets.count("/SimpleNotificationService-missing.pem") == 1, f"and it was fetched once: {sns.gets}")
status, out, _ = cf.request("POST", "/v1/distribution/events", body=s3_event)
check(status == 401, f"a plain S3 event still needs a token: {status}")
status, out, _ = sns_post(sns.message("Notification", TOPIC, s3_event, version="1", subject="Amazon S3 Notification"))
check(status == 202 and out["marked_pending"] == 1, f"a signed notification (SHA1withRSA) marks the gateway: {out}")
status, out, _ = sns_post(sns.message("Notification", TOPIC, s3_event))
check(status == 202 and out["marked_pending"] == 0, f"the same again (SHA256withRSA) changes nothing: {out}")
check(sns.fetches == 1, f"the signing certificate is fetched once: {sns.fetches}")
check(records("Warehouse_US", "PENDING_EMAIL").keys() == {("Warehouse_US", sns_gw)}, "marked by the notification")
run_once()  # scans first: the same ETag, marked already
run_once()
got = mails()
check(len(got) == 1 and sns_gw in got[0]["text"],
      f"marked by the event, seen by the scan: one mail ({len(got)}): {records('Warehouse_US').get(('Warehouse_US', sns_gw))}")
# The gateway changes and is mailed; then the signed notification of its earlier version comes
# again (replayed, or delivered late): it is older than what the scan recorded, and marks nothing.
gateway("Warehouse_US", sns_gw)
sync()
run_once()
check(len(mails()) == 1, "the changed gateway is mailed")
status, out, _ = sns_post(sns.message("Notification", TOPIC, s3_event))
check(status == 202 and out["marked_pending"] == 0, f"a notification of an earlier version marks nothing: {out}")
check(not records("Warehouse_US", "PENDING_EMAIL"), "nothing pending after the stale notification")

# 10. Temporary credentials: keys that no longer work fail the run; the helper writes new
# ones and the next run works, without a restart.
write_credentials("ASIAEXPIRED")
status, body, _ = cf.request("POST", "/v1/distribution/run", bearer=T)
job = None
for _ in range(600):
    job = cf.request("GET", f"/v1/jobs/{body['job_id']}", bearer=T)[1]
    if job["state"] in ("done", "dead"):
        break
    time.sleep(0.1)
check(job["state"] == "dead" and "403" in (job.get("last_error") or ""),
      f"the stale keys are refused by the bucket: {job['state']} {job.get('last_error')}")
write_credentials("S3RVER")
gateway("Warehouse_US", eui(2, site=9))
sync()
run_once()
got = mails()
check(len(got) == 1 and eui(2, site=9) in got[0]["text"], f"the new keys are read and the run works: {len(got)}")

status, body, _ = cf.request("GET", "/metrics", bearer=T)
text = body if isinstance(body, str) else ""
check('certfleet_distribution_mails_total{outcome="sent"}' in text and "certfleet_distribution_records{" in text,
      "metrics count mails and records")
per_warehouse = {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("certfleet_distribution_warehouse_")}
check(per_warehouse.get('certfleet_distribution_warehouse_gateways_total{warehouse="Warehouse_EU",outcome="mailed"}',
                        0) >= len(eu) and
      per_warehouse.get('certfleet_distribution_warehouse_gateways_total{warehouse="Warehouse_US",outcome="failed"}',
                        0) >= 1 and
      per_warehouse.get('certfleet_distribution_warehouse_bytes_total{warehouse="Warehouse_US"}', 0) > 0,
      f"per-warehouse metrics: { {k: v for k, v in per_warehouse.items() if 'Warehouse_US' in k} }")
log = open(cf.log_path).read()
check("ignoring inbound object" in log and "Created zip:" in log and "Email sent to" in log,
      "the log has the seed's lines and the ignored objects")
summaries = [json.loads(line) for line in log.splitlines() if '"msg":"warehouse distributed"' in line]
check(any(s["warehouse"] == "Warehouse_EU" and s["gateways_mailed"] == len(eu) and s["mails"] >= 2 and s["bytes"] > 0
          for s in summaries), f"a summary line per warehouse and run: {summaries[:3]}")

cf.stop()
s3.stop()
smtp.stop()
sns.stop()
finish(f"distribution_e2e ({DB_KIND})")
