#!/usr/bin/python3
"""The docs stay true: every route the code registers is in docs/openapi.yaml with the
role and the credential the code requires, and every configuration key is in the README's
reference.

usage: docs_check.py SOURCE_DIR CERTFLEET_BINARY
"""
import os
import re
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402

src, binary = sys.argv[1], sys.argv[2]


roles = {"kPublic": "public", "kReader": "reader", "kOperator": "operator", "kAdmin": "admin"}
openapi = open(os.path.join(src, "docs", "openapi.yaml")).read()
routes = []
plain_http = []  # paths also served over server.http_listen
for root, _, files in os.walk(os.path.join(src, "src", "http")):
    for f in files:
        text = open(os.path.join(root, f)).read()
        routes += [(m, p, a, c == "true") for m, p, a, c in
                   re.findall(r'router\.Add(?:Async)?\("([A-Z]+)", "([^"]+)", \{(?:\.access = )?Access::(\w+)'
                              r'(?:, (true|false))?', text)]
        # Routes whose options are a named RouteOptions of the same file.
        named = {n: (a, c == "true") for n, a, c in
                 re.findall(r'RouteOptions (\w+)\{(?:\.access = )?Access::(\w+)(?:, (true|false))?', text)}
        routes += [(m, p, *named[n]) for m, p, n in
                   re.findall(r'router\.Add(?:Async)?\("([A-Z]+)", "([^"]+)",\s+(\w+),', text) if n in named]
        plain_http += re.findall(r'router\.Add(?:Async)?\("[A-Z]+", "([^"]+)", \{[^}]*\.plain_http = true', text)
        plain_named = set(re.findall(r'RouteOptions (\w+)\{[^}]*\.plain_http = true', text))
        plain_http += [p for p, n in re.findall(r'router\.Add(?:Async)?\("[A-Z]+", "([^"]+)",\s+(\w+),', text)
                       if n in plain_named]
        # The registry's: five routes per kind (AddRegistryKindRoutes), two per link route.
        for kind in re.findall(r'\{(?:RegistryKindRoute\{|registry::)?Kind::\w+, "([a-z-]+)", "\w*"\}', text):
            routes += [("POST", f"/v1/{kind}", "kOperator", False), ("GET", f"/v1/{kind}", "kReader", False),
                       ("GET", f"/v1/{kind}/{{name}}", "kReader", False),
                       ("PUT", f"/v1/{kind}/{{name}}", "kOperator", False),
                       ("DELETE", f"/v1/{kind}/{{name}}", "kOperator", False)]
        for link in re.findall(r'AddLinkRoutes\(router, c, [\w:]+, "([^"]+)"\)', text):
            routes += [("PUT", link, "kOperator", False), ("DELETE", link, "kOperator", False)]
check(len(routes) >= 10, f"found the registered routes ({len(routes)})")
check(len(plain_http) >= 3, f"found the routes served over plain HTTP too ({plain_http})")
for path in plain_http:
    m = re.search(r"^  " + re.escape(path.replace("{*", "{")) + r":\n((?:    .*\n|\n)*)", openapi, re.M)
    check(m is not None and re.search(r"^    servers:\n(?:      .*\n)*      - url: http://", m.group(1), re.M),
          f"{path} documents that server.http_listen serves it too")
for method, path, access, client_cert in routes:
    path = path.replace("{*", "{")  # a rest-of-path parameter is a plain one in OpenAPI
    m = re.search(r"^  " + re.escape(path) + r":\n((?:    .*\n|\n)*)", openapi, re.M)
    check(m is not None, f"{path} is in docs/openapi.yaml")
    if not m:
        continue
    op = re.search(r"^    " + method.lower() + r":\n((?:      .*\n)*)", m.group(1), re.M)
    check(op is not None, f"{method} {path} is in docs/openapi.yaml")
    if op:
        check(f"x-certfleet-role: {roles[access]}" in op.group(1), f"{method} {path} documents role {roles[access]}")
        # Routes without a bearer token say what they need instead of inheriting the bearer.
        if client_cert:
            check("security:\n        - agentCertificate: []" in op.group(1),
                  f"{method} {path} documents its mutual-TLS credential")
        elif access == "kPublic":
            check("security: []" in op.group(1), f"{method} {path} is documented as public")


def null_keys(node, where):
    """Keys without a value: in a YAML flow mapping an unquoted comma ends the value, and
    what follows it becomes such a key ({description: SHA-256 of the DER, hex})."""
    if isinstance(node, dict):
        for k, v in node.items():
            if v is None:
                yield f"{where}/{k}"
            yield from null_keys(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from null_keys(v, f"{where}/{i}")


stray = list(null_keys(yaml.safe_load(openapi), ""))
check(not stray, f"docs/openapi.yaml has no keys without values: {stray[:5]}")

readme = open(os.path.join(src, "README.md")).read()
# The configuration reference: every key its module declares, with the same variable and
# default (the keys are written once, in their modules; `certfleet config keys` prints them).
keys = subprocess.run([binary, "config", "keys"], capture_output=True, text=True, cwd="/",
                      env={"PATH": os.environ["PATH"]}).stdout.splitlines()
check(len(keys) > 50, f"certfleet config keys lists the keys ({len(keys)})")
rows = {m.group(1): m for m in re.finditer(r"^\| `([a-z_.0-9]+)` \| `(CERTFLEET_[A-Z_0-9]+)` \| ([^|]*) \|", readme, re.M)}
for line in keys:
    name, env, default, _range, _help = line.split("\t")
    row = rows.get(name)
    check(row is not None, f"config key {name} is in the README's configuration reference")
    if not row:
        continue
    check(row.group(2) == env, f"{name}: the README names {env}")
    shown = row.group(3).strip()
    check(shown == (f"`{default}`" if default else "empty"), f"{name}: the README's default {shown} is `{default}`")
declared = {line.split("\t")[0] for line in keys}
check(not set(rows) - declared, f"the README documents no key that is not declared: {set(rows) - declared}")

finish("docs_check")
