"""llama.cpp's batch threads: a judge prompt evaluated with `n_threads_batch` equal to the decode threads (Ratchet's
`open_gguf`) against llama-cpp-python's default (every CPU of the machine), side by side in one run.

The judge evaluates each prompt as one batch, then each token of a written check alone. In `make test`'s three
processes on two cores, each process is given one thread (OMP_NUM_THREADS=1), but the library's default still ran a
prompt's batch on two: with the other core busy, its threads wait for each other. `--busy N` starts N processes that
keep a core each busy for the whole run, as another test process or stage does; 0 measures the machine as it is.

    .venv/bin/python benchmarks/llama_batch.py [--model qwen2.5-coder-1.5b-instruct] [--threads 1] [--busy 1]

Prints a markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.embedded import gguf_file  # noqa: E402
from components.judging.program_judge import PROGRAM_INSTRUCTIONS  # noqa: E402

SPIN = "while True: pass"


def timed_prompt(llm, tokens: list[int]) -> float:
    """Seconds to evaluate `tokens` from an empty cache, as one batch."""
    llm.reset()
    started = time.perf_counter()
    llm.eval(tokens)
    return time.perf_counter() - started


def main() -> None:
    from llama_cpp import Llama

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, default=1, help="decode threads, as OMP_NUM_THREADS gives a test")
    parser.add_argument("--busy", type=int, default=1, help="processes that keep a core busy meanwhile")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    gguf = str(gguf_file(args.model))
    settings = {"Ratchet (batch threads = decode threads)": args.threads, "library default": None}
    models = {name: Llama(gguf, n_ctx=2048, n_threads=args.threads, n_threads_batch=batch, verbose=False)
              for name, batch in settings.items()}  # fmt: skip
    prompt = PROGRAM_INSTRUCTIONS.format(instruction="Answer in at most 12 words, without commas.")
    tokens = models["library default"].tokenize(prompt.encode(), add_bos=False)
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
    try:
        seconds = {name: [] for name in models}
        for _ in range(args.repeats):  # alternated, so that drifts in load fall on both alike
            for name, llm in models.items():
                seconds[name].append(timed_prompt(llm, tokens))
    finally:
        for spinner in spinners:
            spinner.kill()
    ours = statistics.median(seconds["Ratchet (batch threads = decode threads)"])
    machine = (
        f"{multiprocessing.cpu_count()} CPUs ({platform.machine()}), load {os.getloadavg()[0]:.1f}, {date.today()}"
    )
    print(
        f"\n{args.model} (GGUF as shipped), a {len(tokens)}-token judge prompt from an empty cache, {args.threads} "
        f"decode thread(s), {args.busy} busy process(es) beside it, median of {args.repeats}; {machine}\n"
    )
    print("| batch threads | prompt s (median) | min - max | time / Ratchet's |")
    print("|---|---|---|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {min(values):.2f} - {max(values):.2f} | {median / ours:.2f} |")


if __name__ == "__main__":
    main()
