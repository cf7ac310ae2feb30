"""Past one machine, measured on one (issue 25), side by side in one run:
- generation: in the flow's process, then as 1 and as 2 shard tasks on a local Ray cluster (`make cluster`: a head
  and a worker node, a CPU each);
- DPO training: in-process, then under `accelerate launch` with 1 and with 2 processes (the same global batch).

    .venv/bin/python benchmarks/scaling.py [--prompts 16] [--pairs 16]

On 2 cores neither is expected to be faster: the table shows what dispatch costs (Ray tasks, each loading the model
in its worker; accelerate's processes, each loading the champion). Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generation_rows(prompts: int, workdir: Path, address: str) -> list[tuple[str, float]]:
    from prefect import flow

    from components import stages
    from components.config.experiment import DataConfig, ExecutionConfig, ModelsConfig, TransformersGenerationConfig
    from components.models import Policy
    from components.requests import GenerateRequest
    from flows import shards
    from flows.engine import engine_for
    from flows.runtime import prefect_api

    models, data = ModelsConfig(), DataConfig(max_train_prompts=prompts)
    generation = TransformersGenerationConfig(max_new_tokens=32, batch_size=max(prompts // 2, 1))
    champion = Policy(models.policy)
    rows = []
    started = time.perf_counter()
    request = GenerateRequest(
        models=models, data=data, generation=generation, champion=champion, out=workdir / "local", seed=1
    )
    local = stages.generate(request)
    rows.append(("generate, the flow's process", time.perf_counter() - started))
    with prefect_api():
        for count in (1, 2):
            execution = ExecutionConfig(engine="ray", address=address, shards=count)

            @flow(task_runner=engine_for(execution).task_runner())
            def sharded(execution, out):
                return shards.generate(execution, request.model_copy(update={"out": Path(out)}))

            started = time.perf_counter()
            result = sharded(execution, str(workdir / f"shards-{count}"))
            rows.append(
                (f"generate, {count} shard{'s' * (count > 1)} on the Ray cluster", time.perf_counter() - started)
            )
            assert result.samples == local.samples
    return rows


def training_rows(pairs: int, workdir: Path) -> list[tuple[str, float]]:
    from components.config.experiment import DataConfig, DPOTrainingConfig, ModelsConfig
    from components.config.judges import VerifierJudgeConfig
    from components.data import load_prompts, save_rows
    from components.models import Policy
    from components.stages import Judged, train

    prompts = list(load_prompts("data/train.jsonl", pairs))
    rows = [
        {
            "prompt_id": p["id"],
            "cohort": p["cohort"],
            "prompt": p["prompt"],
            "chosen": "Sure: here it is, briefly.",
            "rejected": "I cannot help with that.",
            "judge": "bench",
            "p_chosen": 1.0,
            "order_consistent": True,
            "abstained": False,
            "rationale": "",
        }
        for p in prompts
    ]
    save_rows(rows, workdir / "pairs")
    judged = Judged(str(workdir / "pairs"), len(rows), 0, [])
    found = []
    for label, launcher, processes, per_device in (
        ("train DPO, in-process", "in_process", 1, 4),
        ("train DPO, accelerate, 1 process", "accelerate", 1, 4),
        ("train DPO, accelerate, 2 processes (DDP, gloo)", "accelerate", 2, 2),
    ):
        training = DPOTrainingConfig(
            launcher=launcher,
            num_processes=processes,
            per_device_train_batch_size=per_device,
            num_train_epochs=1,
            max_length=128,
        )
        out = workdir / f"adapter-{launcher}-{processes}"
        started = time.perf_counter()
        trained = train(
            ModelsConfig(),
            DataConfig(),
            training,
            VerifierJudgeConfig(),
            Policy(ModelsConfig().policy),
            "",
            judged,
            out,
            seed=0,
        )
        found.append((f"{label}: {trained.metrics['steps']} steps", time.perf_counter() - started))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=16)
    args = parser.parse_args()
    from components.process_group import free_port

    os.chdir(ROOT)
    port = free_port()
    subprocess.run(["make", "-s", "cluster", f"RAY_PORT={port}"], check=True, stdout=subprocess.DEVNULL)
    try:
        with tempfile.TemporaryDirectory(prefix="ratchet-bench-scaling-") as tmp:
            generation = generation_rows(args.prompts, Path(tmp), f"127.0.0.1:{port}")
            training = training_rows(args.pairs, Path(tmp))
    finally:
        subprocess.run(["make", "-s", "cluster-down"], stdout=subprocess.DEVNULL)
    print(
        f"\n{date.today()}, {platform.machine()}, {os.cpu_count()} cores; SmolLM2-135M, {args.prompts} prompts x 4 "
        f"samples x <=32 tokens; {args.pairs} DPO pairs, global batch 4, 1 epoch\n"
    )
    print("| run | seconds | vs the first of its kind |\n|---|---|---|")
    for rows in (generation, training):
        for label, seconds in rows:
            print(f"| {label} | {seconds:.1f} | {seconds / rows[0][1]:.2f} |")
    print(json.dumps({"generation": generation, "training": training}))


if __name__ == "__main__":
    main()
