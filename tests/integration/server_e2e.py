#!/usr/bin/python3
"""End to end: the real certfleet binary, its CLI and its HTTPS API, on SQLite or PostgreSQL.

usage: server_e2e.py CERTFLEET_BINARY sqlite|postgres

Python's ssl module is the independent TLS client: it verifies the server certificate
against var/tls/ca.pem and the IP address 127.0.0.1, as a user's client would.
"""
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import sqlite3
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, failed, finish, wait_for  # noqa: E402
from harness import Certfleet, psql  # noqa: E402

BINARY, DB_KIND = sys.argv[1], sys.argv[2]
cf = Certfleet(BINARY, DB_KIND, "e2e", {"CERTFLEET_MAIL": "smtp://mailer:hunter2@127.0.0.1:2525"})
DATA = cf.data
cli = cf.cli

# init: data folder, schema, TLS files, first admin token (printed once, file mode 0600).
first = cf.init()
token = cf.token
check(first.stdout.strip() == token, "init prints the admin token it wrote")
check(stat.S_IMODE(os.stat(os.path.join(DATA, "admin.token")).st_mode) == 0o600, "admin.token is mode 0600")
check(stat.S_IMODE(os.stat(os.path.join(DATA, "tls", "server.key")).st_mode) == 0o600, "server.key is mode 0600")
again = cli("init")
check(again.stdout == "" and "keeping" in again.stderr, "a second init keeps the token and TLS files")
check(open(os.path.join(DATA, "admin.token")).read().strip() == token, "the admin token is unchanged by a second init")

shown = cli("config", "show").stdout
check("hunter2" not in shown and 'mail = "smtp://mailer:***@127.0.0.1:2525"  # env' in shown, "config show masks secrets")
check("--db" in cli("--help").stdout and "token" in cli("--help").stdout, "--help lists options and commands")
check("--role" in cli("token", "create", "--help").stdout, "token create --help")
reader = cli("token", "create", "--role", "reader", "--name", "dashboards").stdout.strip()
check(reader.startswith("cf_"), "token create prints a token")
cli("token", "create", "--role", "boss", expect=1)

# serve
cf.start()
port, ctx, server, log_path = cf.port, cf.ctx, cf.server, cf.log_path
request = cf.request

status, body, resp = request("GET", "/healthz")
check(status == 200 and body == {"status": "ok"}, f"healthz 200 over verified TLS: {status} {body}")
check(resp.getheader("X-Request-Id"), "responses carry a request id")
check(request("GET", "/readyz")[0] == 200, "readyz 200 with the store reachable")

status, body, resp = request("GET", "/v1/audit")
check(status == 401 and body["error"]["code"] == "unauthenticated", f"audit without token: {status} {body}")
check(request("GET", "/v1/audit", bearer="cf_abcdefghijkl_wrongwrongwrongwrong")[0] == 401, "audit with a bad token: 401")
status, body, _ = request("GET", "/v1/audit", bearer=token)
check(status == 200 and any(e["action"] == "token.create" for e in body["items"]), f"audit with the admin token: {status}")
check(request("GET", "/v1/audit", bearer=reader)[0] == 403, "audit with a reader token: 403")
status, body, _ = request("GET", "/v1/audit?limit=1", bearer=token)
check(status == 200 and len(body["items"]) == 1 and body["next"], f"audit pages: {body}")
status, body, _ = request("GET", f"/v1/audit?limit=1&next={body['next']}", bearer=token)
check(status == 200 and body["items"][0]["seq"] == 2, "audit cursor")
check(request("GET", "/v1/audit?limit=5000", bearer=token)[0] == 400, "limit over 1000: 400")
check(request("GET", "/v1/audit?next=!!", bearer=token)[0] == 400, "a cursor that is not one: 400")
for bad in ("0", "1,", "-5", ",", "1,,2"):
    cursor = base64.urlsafe_b64encode(bad.encode()).decode().rstrip("=")
    check(request("GET", f"/v1/audit?next={cursor}", bearer=token)[0] == 400, f"a cursor {bad!r}: 400")
status, body, _ = request("GET", "/v1/audit?limit=1000", bearer=token)
check(status == 200 and body["next"] is None and body["cursor"], f"the last page has a cursor to resume from: {body}")
status, later, _ = request("GET", f"/v1/audit?next={body['cursor']}", bearer=token)
check(status == 200 and later["cursor"] and not {e["seq"] for e in later["items"]} & {e["seq"] for e in body["items"]},
      f"resuming from it reads only what was appended since: {later}")

status, body, _ = request("GET", "/v1/jobs?state=dead", bearer=reader)
check(status == 200 and body["items"] == [], f"jobs?state=dead: {status} {body}")
check(request("GET", "/v1/jobs?state=zombie", bearer=reader)[0] == 400, "unknown job state: 400")
check(request("GET", "/v1/jobs/999999", bearer=reader)[0] == 404, "unknown job: 404")
check(request("POST", "/v1/jobs/1/retry", bearer=reader)[0] == 403, "retry needs operator")

status, body, _ = request("GET", "/metrics", bearer=reader)
check(status == 200 and "certfleet_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1" in body
      and "certfleet_http_request_duration_seconds_bucket" in body and "certfleet_jobs" in body, "metrics")
check(request("GET", "/metrics")[0] == 401, "metrics need a token")

status, body, _ = request("GET", "/v1/nothing-here", bearer=token)
check(status == 404 and body["error"]["code"] == "not_found", "unknown path: 404")
status, body, resp = request("PUT", "/healthz")
check(status == 405 and resp.getheader("Allow") == "GET", "wrong method: 405 with Allow")
status, body, _ = request("POST", "/v1/tokens", body="{not json", bearer=token)
check(status == 400 and "malformed JSON" in body["error"]["message"], f"malformed JSON: {status} {body}")
status, body, _ = request("POST", "/v1/tokens", body='{"role":"emperor"}', bearer=token)
check(status == 400, "invalid role: 400")
status, body, _ = request("POST", "/v1/tokens", body="x" * (1024 * 1024 + 1), bearer=token)
check(status == 413 and body["error"]["code"] == "payload_too_large", f"body over the limit: {status}")

status, created, _ = request("POST", "/v1/tokens", body='{"role":"operator","name":"deployer"}', bearer=token)
check(status == 201 and created["token"].startswith("cf_") and created["role"] == "operator", f"token via API: {status}")
check(request("GET", "/v1/jobs", bearer=created["token"])[0] == 200, "the new operator token works")
status, listed, _ = request("GET", "/v1/tokens", bearer=token)
check(status == 200 and all("token" not in t and "secret_hash" not in t for t in listed["items"]), "token list shows no secrets")
check(request("DELETE", f"/v1/tokens/{created['id']}", bearer=token)[0] == 204, "revoke via API")
created_entries = request("GET", "/v1/audit?action=token.create", bearer=token)[1]["items"]
by_name = {e["details"].get("name"): e["details"] for e in created_entries}
check(by_name.get("dashboards") == {"role": "reader", "name": "dashboards"} and
      by_name.get("deployer") == {"role": "operator", "name": "deployer"},
      f"the CLI and the API audit a new token alike: {created_entries}")
check(request("GET", "/v1/jobs", bearer=created["token"])[0] == 401, "a revoked token: 401")

# Revoked outside this server (the CLI, as another node would): refused once the server's
# memory of the token (auth.token_cache_ms, 1 s) runs out.
reader_id = reader.split("_")[1]
check(request("GET", "/v1/jobs", bearer=reader)[0] == 200, "the reader token works before its revocation")
cli("token", "revoke", reader_id)
time.sleep(1.2)
check(request("GET", "/v1/jobs", bearer=reader)[0] == 401, "a token revoked with the CLI: 401 within a second")

# Keep-alive: two requests on one connection.
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
for _ in range(2):
    conn.request("GET", "/healthz")
    r = conn.getresponse()
    r.read()
check(r.status == 200 and not r.will_close, "keep-alive")
conn.close()


def raw(head):
    """Sends a request's head on a new connection; the first 4 KiB of the answer."""
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1")
    sock.sendall(head)
    answer = sock.recv(4096)
    sock.close()
    return answer


# A body is taken in only once its sender is authenticated: an upload announced without a
# token is refused from its headers, with no 100 Continue first.
answer = raw(b"POST /v1/imports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 268435456\r\n"
             b"Expect: 100-continue\r\n\r\n")
check(answer.startswith(b"HTTP/1.1 401"), f"a 256 MiB upload without a token: 401 at once: {answer[:60]!r}")
weak = cli("token", "create", "--role", "reader", "--name", "uploads").stdout.strip()
answer = raw(b"POST /v1/imports HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + weak.encode() +
             b"\r\nContent-Length: 268435456\r\nExpect: 100-continue\r\n\r\n")
check(answer.startswith(b"HTTP/1.1 403"), f"and with a token whose role may not import: 403: {answer[:60]!r}")
# A path that decodes to a line break could end up in an answer's header.
answer = raw(b"GET /acme/x%0d%0aSet-Cookie:%20a=b%0d%0a/directory HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
check(answer.startswith(b"HTTP/1.1 400") and b"Set-Cookie" not in answer,
      f"a path with an encoded CR LF: 400, nothing injected: {answer[:200]!r}")

# Graceful shutdown: a request in flight when SIGTERM arrives still gets its answer, an idle
# keep-alive connection does not hold the exit up, and the process exits 0 within 5 s.
idle = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
inflight = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="127.0.0.1")
payload = b'{"role":"reader","name":"in-flight"}'
# Expect: 100-continue: the server's "100 Continue" says it has read and authenticated the
# header, so the request is in flight when the signal comes.
inflight.sendall(b"POST /v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode() +
                 b"\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " +
                 str(len(payload)).encode() + b"\r\n\r\n")
interim = b""
while b"\r\n\r\n" not in interim:
    chunk = inflight.recv(65536)
    if not chunk:
        break
    interim += chunk
check(interim.startswith(b"HTTP/1.1 100"), f"100 Continue before the body: {interim[:60]!r}")
inflight.sendall(payload[:10])
started = time.monotonic()
server.send_signal(signal.SIGTERM)
time.sleep(0.3)
inflight.sendall(payload[10:])
reply = b""
while True:
    chunk = inflight.recv(65536)
    if not chunk:
        break
    reply += chunk
check(reply.startswith(b"HTTP/1.1 201"), f"the in-flight request finished: {reply[:80]!r}")
check(b"Connection: close" in reply, "the in-flight answer closes the connection")
try:
    code = server.wait(timeout=6)
except subprocess.TimeoutExpired:
    server.kill()
    code = None
elapsed = time.monotonic() - started
check(code == 0, f"serve exits 0 on SIGTERM (got {code})")
check(elapsed < 5, f"shutdown took {elapsed:.2f} s")
idle.close()
cf.log.close()
lines = [json.loads(l) for l in open(log_path) if l.startswith("{")]
check(lines and all("ts" in l and "level" in l and "msg" in l for l in lines), "logs are JSON lines")
check(token.split("_", 2)[2] not in open(log_path).read(), "no token secret in the log")

# server.max_connections_per_client: an address's connections past the limit are closed as they
# come (logged once), and taken again once one of its own has closed.
cf.env["CERTFLEET_SERVER_MAX_CONNECTIONS_PER_CLIENT"] = "2"
cf.start()


def healthz_on_a_new_connection():
    """Whether a new connection is served (False: closed at once)."""
    try:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", cf.port), timeout=10),
                             server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(4096).startswith(b"HTTP/1.1 200")
    except (OSError, ssl.SSLError):
        return False


held = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", cf.port), timeout=10), server_hostname="127.0.0.1")
        for _ in range(2)]
check(not healthz_on_a_new_connection(), "a third connection from one address over the limit of 2 is closed")
check(not healthz_on_a_new_connection(), "and a fourth")
held.pop().close()
wait_for("a new connection to be served once one of the address's own closed", healthz_on_a_new_connection)
for s in held:
    s.close()
cf.stop()
check(open(cf.log_path).read().count("server.max_connections_per_client reached") == 1, "logged once")
del cf.env["CERTFLEET_SERVER_MAX_CONNECTIONS_PER_CLIENT"]

# server.max_connections: at the limit a new connection waits in the kernel's queue, and is
# taken in when another closes.
cf.env["CERTFLEET_SERVER_MAX_CONNECTIONS"] = "3"
cf.env["CERTFLEET_SERVER_SHUTDOWN_DRAIN"] = "300"
cf.start()
server = cf.server
held = [ctx.wrap_socket(socket.create_connection(("127.0.0.1", cf.port), timeout=10), server_hostname="127.0.0.1")
        for _ in range(3)]
waiting = ctx.wrap_socket(socket.create_connection(("127.0.0.1", cf.port), timeout=1), server_hostname="127.0.0.1",
                          do_handshake_on_connect=False)
try:
    waiting.do_handshake()
    check(False, "a fourth connection over server.max_connections 3 is not taken in")
except (socket.timeout, TimeoutError):
    pass
held.pop().close()
waiting.settimeout(10)
waiting.do_handshake()
waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
check(waiting.recv(4096).startswith(b"HTTP/1.1 200"), "the waiting connection is served once another closes")
for s in held + [waiting]:
    s.close()

# Draining (server.shutdown_drain): after SIGTERM the node serves on while /readyz answers 503,
# so that a load balancer takes it out before it stops accepting; every answer closes its
# connection (a client's next one goes to another node); a second signal ends the drain.
check(request("GET", "/readyz")[0] == 200, "ready before the signal")
server.send_signal(signal.SIGTERM)
status, body, _ = wait_for("/readyz to answer 503 once draining", lambda: (r := request("GET", "/readyz"))[0] == 503 and r)
check(body["error"]["message"] == "this node is shutting down", f"the 503 says why: {body}")
status, body, resp = request("GET", "/v1/jobs", bearer=token)
check(status == 200 and resp.getheader("Connection") == "close", f"a draining node serves, closing: {status}")
check(server.poll() is None, "the drain holds the exit")
server.send_signal(signal.SIGTERM)
try:
    code = server.wait(timeout=10)
except subprocess.TimeoutExpired:
    server.kill()
    code = None
check(code == 0, f"a second signal ends the drain: serve exits 0 (got {code})")
cf.log.close()
del cf.env["CERTFLEET_SERVER_SHUTDOWN_DRAIN"], cf.env["CERTFLEET_SERVER_MAX_CONNECTIONS"]

# The audit chain verifies, and a row altered behind certfleet's back is found.
check("intact" in cli("audit", "verify").stdout, "audit verify on an intact chain")
tamper = "UPDATE audit_log SET details = '{\"role\":\"reader\"}' WHERE seq = 2"
if DB_KIND == "postgres":
    psql(cf.env["CERTFLEET_DB"], tamper)
else:
    db = sqlite3.connect(os.path.join(DATA, "certfleet.db"))
    db.execute(tamper)
    db.commit()
    db.close()
broken = cli("audit", "verify", expect=2).stdout
check("BROKEN at row 2" in broken, f"audit verify names the altered row: {broken}")

if not failed():
    shutil.rmtree(cf.work, ignore_errors=True)  # kept on failure for inspection
finish(f"server_e2e ({DB_KIND})")
