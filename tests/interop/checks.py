"""The checks of the Python client scripts: each check is a function run at once,
its failure recorded with its traceback; `report()` prints one line per check and
'N passed, N failed', and exits 1 when any failed.
"""
import sys
import traceback

results = []


def check(name):
    """Run the decorated function now as the check `name`."""
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
        except Exception:
            results.append((name, traceback.format_exc()))
        return fn
    return wrap


def report():
    failed = [(n, tb) for n, tb in results if tb]
    for name, tb in results:
        print(("ok   " if tb is None else "FAIL ") + name)
        if tb:
            print(tb)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
