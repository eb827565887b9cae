#!/usr/bin/python3
"""The docs stay true: every route the code registers is in docs/openapi.yaml with the
role the code requires, and every configuration key is in the README's reference.

usage: docs_check.py SOURCE_DIR CERTFLEET_BINARY
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, failed, finish  # noqa: E402

src, binary = sys.argv[1], sys.argv[2]


roles = {"kPublic": "public", "kReader": "reader", "kOperator": "operator", "kAdmin": "admin"}
openapi = open(os.path.join(src, "docs", "openapi.yaml")).read()
routes = []
for root, _, files in os.walk(os.path.join(src, "src", "http")):
    for f in files:
        text = open(os.path.join(root, f)).read()
        routes += re.findall(r'router\.Add(?:Async)?\("([A-Z]+)", "([^"]+)", \{Access::(\w+)', text)
        # W2's registry: five routes per kind of the kKinds table, two per link route.
        for kind in re.findall(r'\{Kind::\w+, "([a-z-]+)", "\w*"\}', text):
            routes += [("POST", f"/v1/{kind}", "kOperator"), ("GET", f"/v1/{kind}", "kReader"),
                       ("GET", f"/v1/{kind}/{{name}}", "kReader"), ("PUT", f"/v1/{kind}/{{name}}", "kOperator"),
                       ("DELETE", f"/v1/{kind}/{{name}}", "kOperator")]
        for link in re.findall(r'AddLinkRoutes\(router, c, [\w:]+, "([^"]+)"\)', text):
            routes += [("PUT", link, "kOperator"), ("DELETE", link, "kOperator")]
check(len(routes) >= 10, f"found the registered routes ({len(routes)})")
for method, path, access in routes:
    path = path.replace("{*", "{")  # a rest-of-path parameter is a plain one in OpenAPI
    m = re.search(r"^  " + re.escape(path) + r":\n((?:    .*\n|\n)*)", openapi, re.M)
    check(m is not None, f"{path} is in docs/openapi.yaml")
    if not m:
        continue
    op = re.search(r"^    " + method.lower() + r":\n((?:      .*\n)*)", m.group(1), re.M)
    check(op is not None, f"{method} {path} is in docs/openapi.yaml")
    if op:
        check(f"x-certfleet-role: {roles[access]}" in op.group(1), f"{method} {path} documents role {roles[access]}")

readme = open(os.path.join(src, "README.md")).read()
shown = subprocess.run([binary, "config", "show"], capture_output=True, text=True, cwd="/", env={"PATH": os.environ["PATH"]}).stdout
section = ""
for line in shown.splitlines():
    if line.startswith("["):
        section = line.strip("[]") + "."
    elif "=" in line and not line.startswith("#"):
        key = section + line.split("=")[0].strip()
        env = "CERTFLEET_" + key.upper().replace(".", "_")
        check(f"| `{key}` | `{env}` |" in readme, f"config key {key} is in the README's configuration reference")

finish("docs_check")
