#!/usr/bin/python3
"""An SMTP server for tests that insists on STARTTLS and AUTH (aiosmtpd, Debian): it makes
its own self-signed certificate for 127.0.0.1, writes it to --cert-out for the client to
trust, and stores every accepted message in the maildir. Runs until killed.

usage: smtp_server.py --port P --maildir DIR --cert-out FILE --user U --password PW
"""
import argparse
import datetime
import ipaddress
import os
import signal
import ssl
import tempfile

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ap = argparse.ArgumentParser()
for flag in ("--port", "--maildir", "--cert-out", "--user", "--password"):
    ap.add_argument(flag, required=True)
args = ap.parse_args()

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256()))
work = tempfile.mkdtemp()
cert_path, key_path = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
with open(cert_path, "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
with open(key_path, "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(cert_path, key_path)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == args.user
          and auth_data.password.decode() == args.password)
    return AuthResult(success=ok, handled=False)


controller = Controller(Mailbox(args.maildir), hostname="127.0.0.1", port=int(args.port), tls_context=tls,
                        require_starttls=True, authenticator=authenticator, auth_required=True)
controller.start()
tmp = args.cert_out + ".tmp"
with open(tmp, "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
os.rename(tmp, args.cert_out)  # appears once the server listens
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
