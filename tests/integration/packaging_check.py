#!/usr/bin/python3
"""packaging/certfleet.service is a unit systemd accepts without a warning (systemd-analyze
verify, with ExecStart pointing at the built binary) and keeps its hardening; the agent's unit
passes its enrollment secret in the environment, not in its arguments.

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
# The agent's unit keeps the enrollment secret off the command line (ps shows it to every
# local user): the agent reads it from the environment variable the env file sets.
agent_unit = open(os.path.join(src, "packaging", "certfleet-agent.service")).read()
exec_start = agent_unit.split("ExecStart=", 1)[1].split("\n\n", 1)[0].split("\nStateDirectory", 1)[0]
check("--bootstrap-token" not in exec_start, f"the agent's unit passes no token in its arguments: {exec_start}")
check("CERTFLEET_AGENT_BOOTSTRAP_TOKEN=" in agent_unit, "the agent's unit names the variable the agent reads")
finish("packaging_check")
