"""Runs one model-written check function on a list of responses: the program inside the OS sandbox.

The program judge's model writes `def check(response: str)` from an instruction in the request; this script runs it
with {"code": ..., "responses": [...]} on stdin, always inside bubblewrap (components/judging/isolation.py: no
network, no view of the machine's files or environment), and prints one result per response: true, false, null (what the
function returned), or "error" (it raised, or ran out of time). As a first line only, the code is parsed first
(imports of re, string and math only; no names with double underscores) and run with a short list of builtins;
rlimits cap its memory, CPU time and file size, and each response gets half a second (new processes: the
sandbox's seccomp filter refuses them; RLIMIT_NPROC, set too, does not bind in its user namespace here).
"""

import ast
import builtins
import json
import math  # noqa: F401 - the modules a check may import, loaded before the memory limit
import re  # noqa: F401
import resource
import signal
import string  # noqa: F401
import sys

ALLOWED_MODULES = {"re", "string", "math"}
SAFE_BUILTINS = (
    "abs",
    "all",
    "any",
    "bool",
    "dict",
    "enumerate",
    "filter",
    "float",
    "int",
    "isinstance",
    "len",
    "list",
    "map",
    "max",
    "min",
    "range",
    "reversed",
    "round",
    "set",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
    "Exception",
    "IndexError",
    "KeyError",
    "TypeError",
    "ValueError",
)
SECONDS_PER_RESPONSE = 0.5
OUTPUT_BYTES = 1 << 20  # isolation.OUTPUT_BYTES: this script runs alone in the sandbox and imports nothing of ours
ERROR = "error"


def validate(code: str) -> ast.Module:
    """The parsed code, or ValueError when it imports anything else or reaches for dunder names."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if not set(names) <= ALLOWED_MODULES:
                raise ValueError(f"imports {names}")
        elif isinstance(node, ast.Name | ast.Attribute):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name.startswith("__"):
                raise ValueError(f"uses {name}")
    return tree


def _import(name, *args, **kwargs):
    if name not in ALLOWED_MODULES:
        raise ImportError(name)
    return builtins.__import__(name, *args, **kwargs)


def _timeout(signum, frame):
    raise TimeoutError


def check_function(code: str):
    names = {"__builtins__": {name: getattr(builtins, name) for name in SAFE_BUILTINS} | {"__import__": _import}}
    exec(compile(validate(code), "<check>", "exec"), names)  # noqa: S102 - validated, restricted, own process
    return names["check"]


def run(check, response: str) -> bool | str | None:
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_RESPONSE)
    try:
        result = check(response)
    except Exception:  # a check that fails on this response decides nothing for it
        return ERROR
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return None if result is None else bool(result)  # a match object or a count reads as its truth


def main() -> None:
    request = json.load(sys.stdin)
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_BYTES, OUTPUT_BYTES))  # stdout is a file: the results fit
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    signal.signal(signal.SIGALRM, _timeout)
    signal.setitimer(signal.ITIMER_REAL, SECONDS_PER_RESPONSE)
    try:
        check = check_function(request["code"])
    except Exception:
        results = [ERROR] * len(request["responses"])
    else:
        results = [run(check, response) for response in request["responses"]]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
