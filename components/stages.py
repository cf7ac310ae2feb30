"""The training half of a round as plain functions: generate, judge and train. One request in (requests.py), a
finished directory and a small record out (the evaluation is in evaluation.py, the reward model in reward_stage.py).

Each stage writes to a temp dir and renames it into place (`save_stage`), and returns at once when its output
directory already exists, so a re-run after a crash skips finished stages and never reads a half-written one.
Prefect wraps these in tasks (flows/round.py); a plain script can call them in the same order.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from components import human_review as review
from components import metrics
from components.build import make_generator, nothing_to_learn, pairs_trained, prompts_per_batch, train_runner
from components.build_judges import make_judge, make_pair_maker
from components.config.experiment import DataConfig
from components.data import load_prompts, load_rows, save_rows, save_stage, user_message
from components.generation.generator import Sampling
from components.judging.pairs import example_pairs, model_judged
from components.judging.revise import dropped
from components.memo import Memo
from components.models import Policy, load_tokenizer
from components.requests import GenerateRequest, JudgeRequest, TrainRequest

EXAMPLE_PAIRS = 3  # shown in the round report


@dataclass(frozen=True)
class Generated:
    path: str
    kind: str  # the generator that sampled them: transformers or vllm
    samples: int


@dataclass(frozen=True)
class Judged:
    path: str
    pairs: int
    abstained: int
    examples: list[dict]  # the most decisive pairs, for the report
    model_judged: int = 0  # pairs a model judge decided (not a verifier, classifier or person)
    dropped: dict[str, int] = field(default_factory=dict)  # revisions dropped, by reason (pairs.kind: revise)


@dataclass(frozen=True)
class Trained:
    path: str | None  # None: nothing to learn from (every pair abstained), so no adapter
    metrics: dict[str, float | bool | None]
    pairs: int | None = None  # the pairs DPO trained on (after `max_pairs` and `length_balanced`); None online


def generate(request: GenerateRequest) -> Generated:
    """Sample `samples_per_prompt` responses per training prompt (of the shard) from the champion."""
    r, generation = request, request.generation

    def build(tmp: Path) -> dict:
        prompts = list(load_prompts(r.data.train_prompts, r.data.max_train_prompts))
        prompts = r.shard.select(prompts, prompts_per_batch(generation))
        tokenizer = load_tokenizer(r.champion.base)
        sampling = Sampling(generation.max_new_tokens, generation.temperature, generation.top_p)
        generator = make_generator(generation, r.champion, r.models, tokenizer, sampling)
        rows = generator.generate(prompts, generation.samples_per_prompt, r.seed)
        save_rows(rows, tmp)
        return {"kind": generation.kind, "samples": len(rows)}

    return Generated(str(r.out), **save_stage(r.out, build))


def judge(request: JudgeRequest) -> Judged:
    """Turn each prompt's samples (of the shard) into preference pairs, or a counted abstention, with the training
    judge, and add the gold pairs people labelled in the review queue. An AI judge's scores are kept in the memo, so
    a killed stage resumes with those it had."""
    r = request

    def build(tmp: Path) -> dict:
        prompts = r.shard.select(list(load_prompts(r.data.train_prompts, r.data.max_train_prompts)))
        judge_ = make_judge(r.judge, r.champion, r.models, memo=Memo(r.memo))
        pairs = make_pair_maker(r.pairs, r.champion, r.models).pairs(judge_, prompts, list(load_rows(r.generations)))
        return _save_pairs(review.with_gold(pairs, _gold_rows(r.gold)), tmp)

    return Judged(str(r.out), **save_stage(r.out, build))


def merge_generated(shards: list[Generated], out: Path) -> Generated:
    """The shards' samples in shard order: the rows an unsharded `generate` writes. (A shard has no prompts when
    there are fewer batches than shards.)"""

    def build(tmp: Path) -> dict:
        rows = [row for shard in shards if shard.samples for row in load_rows(shard.path)]
        save_rows(rows, tmp)
        return {"kind": shards[0].kind, "samples": len(rows)}

    return Generated(str(out), **save_stage(out, build))


def merge_judged(shards: list[Judged], out: Path, gold: str | None) -> Judged:
    """The shards' pairs in shard order, then the gold pairs: the rows an unsharded `judge` writes."""

    def build(tmp: Path) -> dict:
        pairs = [row for shard in shards if shard.pairs for row in load_rows(shard.path)]
        return _save_pairs(review.with_gold(pairs, _gold_rows(gold)), tmp)

    return Judged(str(out), **save_stage(out, build))


def _gold_rows(gold: str | None) -> list[dict]:
    return json.loads(Path(gold).read_text()) if gold else []


def _save_pairs(pairs: list[dict], tmp: Path) -> dict:
    save_rows(pairs, tmp)
    abstained = sum(p["abstained"] for p in pairs)
    found = {"pairs": len(pairs), "abstained": abstained, "model_judged": model_judged(pairs)}
    found["examples"] = example_pairs(pairs, EXAMPLE_PAIRS)
    return found | {"dropped": dropped(pairs)}


def train(request: TrainRequest) -> Trained:
    """Train a fresh LoRA adapter on the champion; no adapter when DPO has no pair to learn from, or the reward is
    a reward model that no pair has trained yet. With `launcher: accelerate` the training runs in `num_processes`
    processes (accelerate_launch.py)."""
    if nothing_to_learn(request):
        return Trained(None, {"examples": 0})
    run, out = train_runner(request.training), request.out
    metrics = save_stage(out, lambda tmp: run(request, tmp), record="train_metrics.json")
    return Trained(str(out), metrics, pairs_trained(request.training, metrics))


def round_metrics(judged: Judged, trained: Trained, evaluated, rewarded=None) -> dict[str, float]:
    """Everything a round reports, by grouped name: the evaluation's metrics (none when nothing trained), the
    training judge's yield and abstentions, the trainer's signals (named `train_…`) and the reward model's."""
    found = dict(rewarded.metrics) if rewarded else {}  # a reward_stage.Rewarded
    found |= {"pairs": float(judged.pairs), "abstention_rate": judged.abstained / max(judged.pairs, 1)}
    trained_on = judged.pairs - judged.abstained if trained.pairs is None else trained.pairs
    found |= {"pairs_trained": float(trained_on), "pairs_model_judged": float(judged.model_judged)}
    found |= {f"revisions_{reason}": float(n) for reason, n in judged.dropped.items()}
    found |= {f"train_{k}": float(v) for k, v in trained.metrics.items() if isinstance(v, int | float)}
    return (dict(evaluated.metrics) if evaluated else {}) | metrics.grouped(found)


def review_items(
    pairs: str, evaluated: str | None, data: DataConfig, judge_name: str, limit: int, blocked_on_tasks: bool
) -> list:
    """The round's pairs for a person's review: doubtful training pairs, and the held-out prompts where the judges
    disagree or that made the gate block (none when nothing was evaluated)."""
    items = review.training_items(list(load_rows(pairs)), limit)
    if evaluated:
        texts = {p["id"]: user_message(p) for p in load_prompts(data.eval_prompts, data.max_eval_prompts)}
        items += review.heldout_items(texts, list(load_rows(evaluated)), judge_name, limit, blocked_on_tasks)
    return items


def claim_round(round_dir: Path, champion: Policy) -> None:
    """Make `round_dir` the round of `champion` before any stage runs in it.

    A re-decided earlier round can change the champion a round starts from. The round that another champion ran is
    then moved aside to `round-<k>.superseded-<its champion>`, and one that this champion ran before is moved back,
    so a stage directory in `round_dir` always belongs to the champion it names (and Prefect's cached paths, which
    include the champion in their key, stay true).
    """
    record = round_dir / "champion.json"
    key = champion.key()
    if record.exists():
        previous = json.loads(record.read_text())["key"]
        if previous == key:
            return
        shutil.move(round_dir, _superseded(round_dir, previous))
    if _superseded(round_dir, key).exists():
        shutil.move(_superseded(round_dir, key), round_dir)
        return
    round_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"key": key, "base": champion.base, "adapters": list(champion.adapters)}))


def _superseded(round_dir: Path, key: str) -> Path:
    return round_dir.with_name(f"{round_dir.name}.superseded-{key}")
