"""Starts the real certfleet binary for the Python integration tests: a fresh data folder,
SQLite or a fresh database on the ctest fixture's PostgreSQL, `init`, then `serve` on a
free loopback port; HTTPS requests verify the server against var/tls/ca.pem."""
import atexit
import http.client
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time

from checks import check


class Files:
    """A temporary folder whose files every user may read (Mosquitto drops root and reads
    what it is given as its own user)."""

    def __init__(self, prefix):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.dir, 0o755)

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, data):
        with open(self.path(name), "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.chmod(self.path(name), 0o644)
        return self.path(name)


def run(*cmd, stdin=None):
    """A command's exit code and its output and errors together."""
    p = subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=60)
    return p.returncode, p.stdout + p.stderr


def psql(url, sql):
    return subprocess.run(["psql", "-X", "-q", "-t", "-A", url, "-c", sql], check=True, capture_output=True,
                          text=True).stdout


class Certfleet:
    def __init__(self, binary, db_kind, name, extra_env=None, pg_url=None):
        """pg_url: the PostgreSQL server to make the database on (default: the ctest fixture's)."""
        self.binary = binary
        self.state = os.environ.get("CERTFLEET_TEST_STATE", "/tmp")
        self.work = os.path.join(self.state, name, f"{db_kind}-{secrets.token_hex(4)}")
        self.data = os.path.join(self.work, "var")
        os.makedirs(self.work)
        self.env = dict(os.environ, CERTFLEET_DATA_DIR=self.data, CERTFLEET_SERVER_LISTEN="127.0.0.1:0",
                        CERTFLEET_LOG_LEVEL="info")
        self.env.update(extra_env or {})
        if db_kind == "postgres":
            admin_url = pg_url or open(os.path.join(self.state, "pg", "url")).read().strip()
            db = "e2e_" + secrets.token_hex(4)
            psql(admin_url, f"CREATE DATABASE {db}")
            self.env["CERTFLEET_DB"] = admin_url.rsplit("/", 1)[0] + "/" + db
        self.server = None
        self.port = None
        self.log_path = os.path.join(self.work, "serve.log")

    def another_node(self, own_data=False, port=0):
        """A second node of this certfleet, started: the same database and public URL (as behind
        a load balancer), its own port and log. It shares this node's data folder, or with
        `own_data` has one of its own holding only copies of the master key and TLS identity
        (so that it shares nothing else with this node but the database and object store).
        `port`: the port to listen on, so that the node comes back on it after a restart."""
        node = Certfleet.__new__(Certfleet)
        node.binary, node.state, node.data, node.token = self.binary, self.state, self.data, self.token
        node.work = os.path.join(self.work, f"node-{secrets.token_hex(2)}")
        os.makedirs(node.work)
        node.env = dict(self.env)
        node.env.setdefault("CERTFLEET_PUBLIC_URL", self.url)
        if own_data:
            node.data = os.path.join(node.work, "var")
            shutil.copytree(os.path.join(self.data, "tls"), os.path.join(node.data, "tls"))
            shutil.copy2(os.path.join(self.data, "master.key"), node.data)
            node.env["CERTFLEET_DATA_DIR"] = node.data
        node.env["CERTFLEET_SERVER_LISTEN"] = f"127.0.0.1:{port}"
        if node.env.get("CERTFLEET_SERVER_HTTP_LISTEN"):  # its own plain HTTP port too
            node.env["CERTFLEET_SERVER_HTTP_LISTEN"] = "127.0.0.1:0"
        node.server, node.port = None, None
        node.log_path = os.path.join(node.work, "serve.log")
        node.start()
        return node

    def cli(self, *args, expect=0):
        p = subprocess.run([self.binary, *args], env=self.env, cwd=self.work, capture_output=True, text=True,
                           timeout=120)
        check(p.returncode == expect,
              f"certfleet {' '.join(args)} exited {p.returncode}, wanted {expect}: {p.stderr[-2000:]}")
        return p

    def init(self):
        p = self.cli("init")
        self.token = open(os.path.join(self.data, "admin.token")).read().strip()
        return p

    def start(self):
        """Starts `serve` (again, after stop or kill, on the same port when it was given one)."""
        if not getattr(self, "_stopped_at_exit", False):
            atexit.register(self.stop)  # a test that dies leaves no server behind
            self._stopped_at_exit = True
        self.log = open(self.log_path, "a")
        logged = self.log_offset = self.log.tell()  # where this run's log begins
        self.port = None
        self.server = subprocess.Popen([self.binary, "serve"], env=self.env, cwd=self.work, stderr=self.log,
                                       stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60  # a loaded machine, a migration to apply
        while time.monotonic() < deadline and self.server.poll() is None:
            with open(self.log_path) as f:
                f.seek(logged)
                m = re.search(r'"msg":"listening".*"port":(\d+)', f.read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.1)
        check(self.port is not None, f"serve logs the port it listens on (exit status {self.server.poll()})")
        self.ctx = ssl.create_default_context(cafile=os.path.join(self.data, "tls", "ca.pem"))
        self.url = f"https://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, bearer=None, headers=None, raw=False, timeout=30):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)
        h = dict(headers or {})
        if bearer:
            h["Authorization"] = f"Bearer {bearer}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        if raw:
            return r.status, data, r
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode(errors="replace")
        return r.status, parsed, r

    def api(self, method, path, body=None, expect=200, bearer=None):
        """A request with the admin token (or `bearer`), checked to answer `expect`."""
        status, out, _ = self.request(method, path, body=body, bearer=bearer or self.token)
        check(status == expect, f"{method} {path}: {status}, wanted {expect}: {str(out)[:300]}")
        return out

    def kill(self):
        """Ends `serve` as a crash would (SIGKILL): nothing of it runs to its end."""
        self.server.kill()
        self.server.wait()
        self.log.close()

    def stop(self):
        if self.server and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
        if self.server:
            self.log.close()
