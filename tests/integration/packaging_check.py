#!/usr/bin/python3
"""packaging/certfleet.service is a unit systemd accepts without a warning (systemd-analyze
verify, with ExecStart pointing at the built binary) and keeps its hardening.

usage: packaging_check.py SOURCE_DIR CERTFLEET_BINARY
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402

src, binary = sys.argv[1], sys.argv[2]
unit = open(os.path.join(src, "packaging", "certfleet.service")).read()
check("ExecStart=/usr/local/bin/certfleet serve" in unit, "the unit runs certfleet serve")
for directive in ("User=certfleet", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/certfleet",
                  "PrivateTmp=yes", "CapabilityBoundingSet=\n"):
    check(directive in unit, f"the unit has {directive.strip()}")
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "certfleet.service")
    with open(path, "w") as f:
        f.write(unit.replace("/usr/local/bin/certfleet", os.path.abspath(binary)))
    p = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and not (p.stdout + p.stderr).strip(),
          f"systemd-analyze verify accepts it without a word: {p.returncode} {p.stdout}{p.stderr}")
finish("packaging_check")
