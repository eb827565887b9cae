"""Real servers the tests run against, each on a free loopback port: s3rver (npm, an
S3-compatible server that checks SigV4 signatures) with the AWS CLI as the uploader,
aiosmtpd (Debian) writing every message it accepts into a maildir, Mosquitto as the
TLS broker that must accept the device certificates certfleet issues, and a small DNS server
for ACME validation."""
import http.server
import mailbox
import os
import socket
import struct
import subprocess
import threading
import time

SOURCE = os.environ.get("CERTFLEET_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
S3_KEY = "S3RVER"  # s3rver's built-in credentials
AWS = "/usr/bin/aws"  # Debian's awscli, not a shim earlier on PATH


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, timeout=60):
    """Until `proc` listens on `port`: a RuntimeError if it exits first or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


def mosquitto_publish(folder, server_chain, server_key, ca, crls, client_chain, client_key):
    """Starts Mosquitto on a free port with TLS, require_certificate and the CRLs in the PEM
    file `crls` (checked for the client's issuer), publishes once with mosquitto_pub and the
    client certificate, stops it. Files are paths; Mosquitto drops root, so they and `folder`
    (where its config goes) must be world-readable. Returns (exit code, output) of the client."""
    port = free_port()
    conf = os.path.join(folder, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\ncafile {ca}\ncertfile {server_chain}\nkeyfile {server_key}\n"
                f"require_certificate true\nuse_identity_as_username true\ncrlfile {crls}\nallow_anonymous true\n")
    os.chmod(conf, 0o644)
    proc = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc, "mosquitto")
        p = subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(port), "--cafile", ca, "--cert", client_chain,
                            "--key", client_key, "-t", "certfleet/test", "-m", "hello"],
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class S3Server:
    def __init__(self, work, bucket):
        self.dir = os.path.join(work, "s3rver")
        os.makedirs(self.dir, exist_ok=True)
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(work, "s3rver.log"), "w")
        self.proc = subprocess.Popen(
            ["node", os.path.join(SOURCE, "tools", "node_modules", "s3rver", "bin", "s3rver.js"), "-d", self.dir, "-a",
             "127.0.0.1", "-p", str(self.port), "--configure-bucket", bucket, "--silent"],
            stdout=self.log, stderr=self.log,
            # s3rver's continuation tokens use a cipher OpenSSL 3 keeps in its legacy provider.
            env=dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider"))
        wait_port(self.port, self.proc, "s3rver")
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_KEY,
                        AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")

    def aws(self, *args):
        p = subprocess.run([AWS, "--endpoint-url", self.endpoint, *args], env=self.env, capture_output=True,
                           text=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"aws {' '.join(args)}: {p.stderr[-2000:]}")
        return p.stdout

    def upload_tree(self, local_dir):
        """Uploads every file under local_dir, keys relative to it (as a provisioning system would)."""
        self.aws("s3", "cp", "--recursive", "--only-show-errors", local_dir, f"s3://{self.bucket}/")

    def object_path(self, key):
        """Where s3rver keeps an object's bytes on disk (to break it for failure tests)."""
        return os.path.join(self.dir, self.bucket, key + "._S3rver_object")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


class SmtpServer:
    """aiosmtpd with its Mailbox handler; stop() and start() again simulate an outage. With
    `rcpt_seconds`, each recipient takes that long to be accepted (slow_mailbox.py)."""

    def __init__(self, work, rcpt_seconds=None):
        self.maildir = os.path.join(work, "maildir")
        self.port = free_port()
        self.work = work
        self.proc = None
        self.handler = ["slow_mailbox.SlowMailbox", self.maildir, str(rcpt_seconds)] if rcpt_seconds else \
            ["aiosmtpd.handlers.Mailbox", self.maildir]
        self.start()

    def start(self):
        self.log = open(os.path.join(self.work, "smtp.log"), "a")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{self.port}", "-c", *self.handler],
            stdout=self.log, stderr=self.log,
            env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__))))
        wait_port(self.port, self.proc, "aiosmtpd")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.log.close()

    def new_messages(self, seen):
        """Messages received since the keys in `seen` (which gets the new keys), each as
        (size in bytes, email.message.EmailMessage)."""
        import email
        import email.policy
        if not os.path.isdir(self.maildir):
            return []
        box = mailbox.Maildir(self.maildir, create=False)
        out = []
        for key in box.keys():
            if key in seen:
                continue
            seen.add(key)
            raw = box.get_bytes(key)
            out.append((len(raw), email.message_from_bytes(raw, policy=email.policy.default)))
        return out


class SnsEndpoint:
    """Stands in for sns.<region>.amazonaws.com: a CA of its own (trust it through
    distribution.sns_trust), a signing certificate issued to sns.amazonaws.com, an HTTPS
    server that serves it and records subscription confirmations, and messages signed as
    SNS signs them (SignatureVersion 1 or 2)."""

    def __init__(self, work, region="us-east-1"):
        import datetime
        import ssl
        import threading
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.host = f"sns.{region}.amazonaws.com"
        now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)

        def issue(subject_cn, key, issuer_cert=None, issuer_key=None, dns=None, ca=False):
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
            b = (x509.CertificateBuilder().subject_name(name)
                 .issuer_name(issuer_cert.subject if issuer_cert else name).public_key(key.public_key())
                 .serial_number(x509.random_serial_number()).not_valid_before(now)
                 .not_valid_after(now + datetime.timedelta(days=30))
                 .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
            if dns:
                b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
            return b.sign(issuer_key or key, hashes.SHA256())

        pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = issue("SNS test CA", ca_key, ca=True)
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signing = issue("sns.amazonaws.com", self.signing_key, self.ca, ca_key, dns="sns.amazonaws.com")
        tls_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tls = issue(self.host, tls_key, self.ca, ca_key, dns=self.host)
        self.ca_file = os.path.join(work, "sns-ca.pem")
        with open(self.ca_file, "wb") as f:
            f.write(pem(self.ca))
        chain = os.path.join(work, "sns-tls.pem")
        with open(chain, "wb") as f:
            f.write(pem(tls) + tls_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        self.cert_path = "/SimpleNotificationService-test.pem"
        self.confirmed = []  # the query strings of confirmation GETs
        self.fetches = 0
        self.gets = []  # the path of every GET
        signing_pem = pem(signing)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.gets.append(self.path)
                if self.path == owner.cert_path:
                    owner.fetches += 1
                    body = signing_pem
                elif self.path.startswith("/?Action=ConfirmSubscription"):
                    owner.confirmed.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        # distribution.sns_connect_to: downloads from the SNS host come here.
        self.connect_to = f"{self.host}:443:127.0.0.1:{self.port}"

    def message(self, kind, topic, message, version="2", cert_url=None, subject=None, timestamp=None):
        """The JSON envelope SNS POSTs, signed."""
        import base64
        import datetime
        import uuid
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        m = {"Type": kind, "MessageId": str(uuid.uuid4()), "TopicArn": topic, "Message": message,
             "Timestamp": timestamp or datetime.datetime.now(datetime.timezone.utc).strftime(
                 "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
             "SignatureVersion": version, "SigningCertURL": cert_url or f"https://{self.host}{self.cert_path}"}
        if kind == "Notification":
            names = ["Message", "MessageId"] + (["Subject"] if subject else []) + ["Timestamp", "TopicArn", "Type"]
            if subject:
                m["Subject"] = subject
        else:
            m["Token"] = uuid.uuid4().hex
            m["SubscribeURL"] = f"https://{self.host}/?Action=ConfirmSubscription&TopicArn={topic}&Token={m['Token']}"
            names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
        text = "".join(f"{n}\n{m[n]}\n" for n in names).encode()
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        m["Signature"] = base64.b64encode(self.signing_key.sign(text, padding.PKCS1v15(), digest)).decode()
        return m

    def stop(self):
        self.server.shutdown()


class DnsServer:
    """A small authoritative DNS server on a loopback UDP port, for ACME validation: every name
    has the A record 127.0.0.1 (so http-01 and tls-alpn-01 reach the test's clients) and no
    AAAA; TXT records are read from files in `txt_dir`, one per name (lowercase, no final dot),
    one value per line, so that a lego exec script can write them. Anything else is NXDOMAIN."""

    def __init__(self, txt_dir):
        self.txt_dir = txt_dir
        os.makedirs(txt_dir, exist_ok=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries = []  # (name, type) in the order asked
        threading.Thread(target=self._serve, daemon=True).start()

    def set_txt(self, name, *values):
        with open(os.path.join(self.txt_dir, name.lower()), "w") as f:
            f.write("".join(v + "\n" for v in values))

    def _answer(self, query):
        qid, _flags, qdcount = struct.unpack("!HHH", query[:6])
        pos, labels = 12, []
        while query[pos]:
            labels.append(query[pos + 1:pos + 1 + query[pos]].decode().lower())
            pos += 1 + query[pos]
        qtype, _qclass = struct.unpack("!HH", query[pos + 1:pos + 5])
        question = query[12:pos + 5]
        name = ".".join(labels)
        self.queries.append((name, qtype))
        answers, rcode = [], 0
        if qtype == 1:  # A
            answers.append(socket.inet_aton("127.0.0.1"))
        elif qtype == 16:  # TXT
            path = os.path.join(self.txt_dir, name)
            values = open(path).read().split() if os.path.exists(path) else []
            answers = [bytes([len(v)]) + v.encode() for v in values]
            rcode = 0 if answers else 3
        elif qtype != 28:  # AAAA: none, but the name exists
            rcode = 3
        header = struct.pack("!HHHHHH", qid, 0x8400 | 0x0100 | rcode, qdcount, len(answers), 0, 0)
        records = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(rdata)) + rdata for rdata in answers)
        return header + question + records

    def _serve(self):
        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
                self.sock.sendto(self._answer(query), peer)
            except OSError:
                return
            except (IndexError, struct.error, UnicodeDecodeError):
                continue  # a malformed query gets no answer

    def stop(self):
        self.sock.close()


class LoopbackGetServer:
    """A threaded HTTP/1.1 server on a loopback port that answers every GET with what
    `answer(path)` gives: (headers, body) with 200, or (status, headers, body); HTTPS with
    `tls`, (cert_file, key_file). Port 0 picks one."""

    def __init__(self, port, answer, tls=None):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                answered = answer(self.path)
                status, headers, body = answered if len(answered) == 3 else (200, *answered)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        if tls:
            import ssl
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Http01Responder(LoopbackGetServer):
    """An ACME http-01 responder on a loopback port for one account: it answers every token with
    the token and the account's key thumbprint (RFC 8555 8.3), as the account's own server
    would. `thumbprint` is called per request (a key change changes it); port 0 picks one."""

    def __init__(self, port, thumbprint):
        super().__init__(port, lambda path: ({}, f"{path.rsplit('/', 1)[-1]}.{thumbprint()}".encode()))


class FixedHttpsAnswer(LoopbackGetServer):
    """A stand-in for a certfleet node (its TLS identity: `cert_file` holds the chain, `key_file`
    the key) that answers every GET with the same headers and body."""

    def __init__(self, port, cert_file, key_file, body, headers):
        super().__init__(port, lambda path: (headers, body), tls=(cert_file, key_file))


class Haproxy:
    """haproxy (Debian) in front of certfleet nodes: TCP pass-through (TLS ends at the nodes),
    round robin, and a health check of each node's GET /readyz over TLS every 300 ms (down
    after 2 failures, up after 1 success). The configuration is docs/operations.md's example
    with test timings. `servers()` asks the stats socket which nodes are up."""

    def __init__(self, work, backends, port):
        self.port = port
        self.socket = os.path.join(work, "haproxy.sock")
        self.config = os.path.join(work, "haproxy.cfg")
        servers = "".join(f"    server node{i + 1} 127.0.0.1:{port}\n" for i, port in enumerate(backends))
        with open(self.config, "w") as f:
            f.write(f"""global
    stats socket {self.socket} mode 600 level admin
    maxconn 4096

defaults
    mode tcp
    timeout connect 2s
    timeout client 75s
    timeout server 75s
    retries 2
    option redispatch

frontend certfleet
    bind 127.0.0.1:{self.port}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check check-ssl verify none inter 300ms fall 2 rise 1
{servers}""")
        self.log = open(os.path.join(work, "haproxy.log"), "w")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.config], stdout=self.log, stderr=self.log)
        wait_port(self.port, self.proc, "haproxy")

    def servers(self):
        """{name: "UP" or "DOWN" ...} from `show stat`."""
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.socket)
        s.sendall(b"show stat\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        rows = [line.split(",") for line in out.decode().splitlines() if line and not line.startswith("#")]
        return {r[1]: r[17].split(" ")[0] for r in rows if r[0] == "nodes" and r[1].startswith("node")}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()
