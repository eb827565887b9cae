"""A tiny check counter shared by the Python integration tests: each check prints FAIL
with its description when it does not hold, and finish() prints the closing
'N passed, N failed' line and exits non-zero on any failure."""
import sys

_counts = {"passed": 0, "failed": 0}


def check(cond, what):
    if cond:
        _counts["passed"] += 1
    else:
        _counts["failed"] += 1
        print(f"FAIL: {what}", flush=True)
    return cond


def failed():
    return _counts["failed"]


def finish(name):
    print(f"{name}: {_counts['passed']} passed, {_counts['failed']} failed")
    sys.exit(1 if _counts["failed"] else 0)
