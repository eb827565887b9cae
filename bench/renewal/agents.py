#!/usr/bin/python3
"""Simulated certfleet agents for bench/renewal: one process holds many agent identities,
each speaking the agent protocol over its own mutual-TLS connection: a long poll for tasks
(GET /v1/agent/tasks?wait=60), then a new P-256 key and CSR, POST .../csr, POST .../status
deployed, POST .../status validated. Files are not written (the server's work is measured).

usage: agents.py URL CA_FILE ADMIN_TOKEN HOSTS WORK_DIR
Registers and enrolls HOSTS hosts, opens their connections, starts one forced run at the
server's concurrency and prints the figures as JSON when every renewal is validated.
"""
import asyncio
import json
import os
import resource
import ssl
import statistics
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

URL, CA_FILE, TOKEN, HOSTS, WORK = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
HOST, PORT = URL.removeprefix("https://").rsplit(":", 1)
PORT = int(PORT)
SETUP_CONNECTIONS = 32  # enough to keep the server busy while hosts are registered


class Conn:
    """One keep-alive HTTPS connection; requests on it are sequential."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(HOST, PORT, ssl=self.ctx, server_hostname=HOST)

    async def request(self, method, path, body=None, bearer=None):
        if self.writer is None:
            await self.open()
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(data)}\r\n"
        if data:
            head += "Content-Type: application/json\r\n"
        if bearer:
            head += f"Authorization: Bearer {bearer}\r\n"
        self.writer.write((head + "\r\n").encode() + data)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, (json.loads(payload) if payload else None)


def csr_for(name):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


async def setup(names):
    """Registers the hosts and enrolls each (token, key, CSR); writes its key and certificate."""
    plain = ssl.create_default_context(cafile=CA_FILE)
    queue = asyncio.Queue()
    for n in names:
        queue.put_nowait(n)

    async def worker():
        c = Conn(plain)
        while not queue.empty():
            name = queue.get_nowait()
            status, _ = await c.request("POST", "/v1/hosts", {"host_id": name, "sans": [f"{name}.bench"]}, TOKEN)
            assert status == 201, status
            status, out = await c.request("POST", f"/v1/hosts/{name}/token", {}, TOKEN)
            assert status == 201, (status, out)
            key, csr = csr_for(name)
            status, got = await c.request("POST", "/v1/agent/enroll", {"host_id": name, "csr": csr}, out["token"])
            assert status == 201, (status, got)
            with open(f"{WORK}/{name}.pem", "w") as f:
                f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode() + got["certificate"])

    await asyncio.gather(*(worker() for _ in range(SETUP_CONNECTIONS)))


async def agent(name, ready, results):
    ctx = ssl.create_default_context(cafile=CA_FILE)
    ctx.load_cert_chain(f"{WORK}/{name}.pem")
    c = Conn(ctx)
    await c.open()
    ready.release()
    while True:
        status, task = await c.request("GET", "/v1/agent/tasks?wait=60")
        if status == 204:
            continue
        assert status == 200, (status, task)
        started = time.monotonic()
        rid = task["renewal_id"]
        _, csr = csr_for(name)
        status, out = await c.request("POST", f"/v1/agent/renewals/{rid}/csr", {"csr": csr})
        assert status == 201, (status, out)
        for state in ("deployed", "validated"):
            status, out = await c.request("POST", f"/v1/agent/renewals/{rid}/status", {"state": state})
            assert status == 200, (status, out)
        results.append(time.monotonic() - started)
        return


async def main():
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    names = [f"host-{i:05d}" for i in range(HOSTS)]
    t0 = time.monotonic()
    await setup(names)
    t1 = time.monotonic()
    # Every agent connects (a TLS handshake with its certificate) and waits on its long poll.
    ready = asyncio.Semaphore(0)
    results = []
    tasks = []
    for n in names:
        tasks.append(asyncio.create_task(agent(n, ready, results)))
        if len(tasks) % 200 == 0:
            await asyncio.sleep(0)
    for _ in names:
        await ready.acquire()
    t2 = time.monotonic()
    admin = Conn(ssl.create_default_context(cafile=CA_FILE))
    status, run = await admin.request("POST", "/v1/renewals/run", {"all": True}, TOKEN)
    assert status == 201 and run["queued"] == HOSTS, (status, run)
    start = time.monotonic()
    await asyncio.gather(*tasks)
    total = time.monotonic() - start
    status, listing = await admin.request("GET", f"/v1/renewals?run={run['run_id']}&state=validated&limit=1", None,
                                          TOKEN)
    runs = {r["id"]: r for r in listing["runs"]}
    results.sort()
    print(json.dumps({
        "hosts": HOSTS,
        "setup_s": round(t1 - t0, 1),
        "connect_s": round(t2 - t1, 1),
        "total_s": round(total, 2),
        "renewals_per_s": round(HOSTS / total, 1),
        "p50_ms": round(statistics.median(results) * 1000, 1),
        "p99_ms": round(results[int(len(results) * 0.99) - 1] * 1000, 1),
        "states": runs[run["run_id"]]["states"],
    }))


asyncio.run(main())
