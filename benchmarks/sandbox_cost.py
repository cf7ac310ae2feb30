"""What the OS sandbox costs a model-written check (issue 39): the same checks run as before it (`python -I
check_sandbox.py`, no isolation) and through the program judge's path (bubblewrap with its seccomp filter),
interleaved in one run.

    .venv/bin/python benchmarks/sandbox_cost.py [--checks 40] [--responses 8]

Each check is one sandbox start with a batch of responses, as the program judge runs one per instruction. Prints a
markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.judging.program_judge import SANDBOX, run_check  # noqa: E402

CHECK = "import re\n\ndef check(response: str):\n    return re.search(',', response) is None\n"


def unisolated(code: str, responses: list[str]) -> list:
    """The program judge's way before the sandbox: the same script, in a plain child process."""
    request = json.dumps({"code": code, "responses": responses})
    done = subprocess.run([sys.executable, "-I", str(SANDBOX)], input=request, capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=40)
    parser.add_argument("--responses", type=int, default=8)
    args = parser.parse_args()
    responses = [f"answer {i}, with a comma" if i % 2 else f"answer {i}" for i in range(args.responses)]
    run_check(CHECK, responses)  # the filter is compiled and the machine probed once a process
    seconds = {"no isolation (before)": 0.0, "bubblewrap + seccomp": 0.0}
    for _ in range(args.checks):
        for name, run in (("no isolation (before)", unisolated), ("bubblewrap + seccomp", run_check)):
            started = time.perf_counter()
            assert run(CHECK, responses) == [i % 2 == 0 for i in range(args.responses)]
            seconds[name] += time.perf_counter() - started
    base = seconds["no isolation (before)"] / args.checks
    print(f"| how a check runs ({args.responses} responses) | ms a check | vs before |\n|---|---|---|")
    for name, total in seconds.items():
        each = total / args.checks
        print(f"| {name} | {1000 * each:.1f} | {each / base:.2f} |")


if __name__ == "__main__":
    main()
