"""The benchmarks' way of timing variants side by side: each variant runs in a process of its own (so that one's
memory peak, threads and warm caches do not touch the next), which prints its result as one `RESULT {json}` line."""

from __future__ import annotations

import json
import subprocess
import sys


def print_result(result: dict) -> None:
    """What a variant's process prints for its parent."""
    print("RESULT " + json.dumps(result), flush=True)


def result_of(output: str) -> dict:
    """The result a variant's process printed."""
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])


def run_variants(script: str, variants: list[str], repeats: int, *arguments: str) -> dict[str, list[dict]]:
    """`script --worker VARIANT *arguments` for each variant in turn, `repeats` times; each variant's results."""
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    for repeat in range(repeats):
        for variant in variants:
            command = [sys.executable, script, "--worker", variant, *arguments]
            runs[variant].append(result_of(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
            print(f"repeat {repeat + 1} {variant}: {runs[variant][-1]}", file=sys.stderr)
    return runs
