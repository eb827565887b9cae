"""A tiny check counter shared by the Python integration tests: each check prints FAIL
with its description when it does not hold, and finish() prints the closing
'N passed, N failed' line and exits non-zero on any failure."""
import sys
import time

_counts = {"passed": 0, "failed": 0}


def check(cond, what):
    if cond:
        _counts["passed"] += 1
    else:
        _counts["failed"] += 1
        print(f"FAIL: {what}", flush=True)
    return cond


def wait_for(what, fn, timeout=40):
    """fn()'s first true answer, asked every 0.2 s; a failed check after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    check(False, f"timed out waiting for {what}")


def failed():
    return _counts["failed"]


def finish(name):
    print(f"{name}: {_counts['passed']} passed, {_counts['failed']} failed")
    sys.exit(1 if _counts["failed"] else 0)
