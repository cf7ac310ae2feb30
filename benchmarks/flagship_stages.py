"""Each stage of a flagship round beside the bare library call doing the same work, in one run (issue 37).

    .venv/bin/python benchmarks/flagship_stages.py [--train-prompts 64] [--eval-prompts 48] [--steps 4]

On the first prompts of `configs/efficacy.yaml` (its settings; a whole round is ~45 min here), round 1 runs stage by
stage as the flow runs it, each stage in a fresh process, and beside each the same work written against the library
alone (the script a user would write from its docs, with the settings measured on these machines):

- generate: Ratchet's stage (its vLLM worker process) vs `vllm.LLM.generate` on the same token ids and sampling;
- train: Ratchet's DPO stage vs TRL's `DPOTrainer` on the same pairs, steps and LoRA;
- evaluate: Ratchet's stage vs the library calls it is made of: vLLM greedy answers of both policies (one engine,
  the challenger as a LoRA request), llama.cpp on the very prompts the judge scored and completed (recorded from
  Ratchet's run), and one transformers forward per log-prob.

Then what the options buy, on the same data: the champion's adapter merged before vLLM or served as LoRA (round 2's
generate); TRL's precomputed reference log-probs and a shorter `max_length` (train); the memo (round 2's evaluate
with round 1's memo and without it). Ratios are Ratchet / bare (or variant / default); prints markdown tables.
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

from own_process import print_result, result_of  # noqa: E402

CONFIG = ROOT / "configs/efficacy.yaml"


def config(scratch: Path, **sections):
    """The efficacy config cut to the benchmark's prompts (`sections` replace values by section)."""
    from components.config.loading import load_config

    args = json.loads((scratch / "args.json").read_text())
    overrides = {"data.max_train_prompts": args["train_prompts"], "data.max_eval_prompts": args["eval_prompts"]}
    overrides |= {"training.max_steps": args["steps"], "training.save_steps": 10_000}
    overrides |= {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}
    return load_config(str(CONFIG), overrides)


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


# --- generate -------------------------------------------------------------------------------------------------


def generate(scratch: Path, champion: str, adapter: str = "auto") -> dict:
    from components import stages
    from components.models import Policy
    from components.requests import generate_request

    cfg = config(scratch, generation={"adapter": adapter})
    policy = Policy(cfg.models.policy, tuple(json.loads(champion)))
    out = scratch / f"generations-{len(policy.adapters)}-{adapter}"
    seconds, generated = timed(lambda: stages.generate(generate_request(cfg, policy, out, cfg.seed)))
    return {"seconds": seconds, "samples": generated.samples, "tokens": _tokens(out)}


def generate_bare(scratch: Path) -> dict:
    """vLLM's own API on the prompts the stage sampled, as its docs and this machine's settings say."""
    from components.data import load_prompts
    from components.generation.generator import chat_prompt, prompt_seed
    from components.generation.vllm_worker import CPU_ENVIRONMENT
    from components.models import load_tokenizer, resolve_model

    cfg = config(scratch)
    os.environ.update(CPU_ENVIRONMENT)
    from vllm import LLM, SamplingParams, TokensPrompt

    g, tokenizer = cfg.generation, load_tokenizer(cfg.models.policy)
    prompts = list(load_prompts(cfg.data.train_prompts, cfg.data.max_train_prompts))
    ids = [tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False).input_ids for p in prompts]
    started = time.perf_counter()
    llm = LLM(str(resolve_model(cfg.models.policy)), dtype="float32", enforce_eager=True, enable_chunked_prefill=False)
    params = [
        SamplingParams(
            n=g.samples_per_prompt,
            temperature=g.temperature,
            top_p=g.top_p,
            max_tokens=g.max_new_tokens,
            seed=prompt_seed(cfg.seed, p["id"]),
        )
        for p in prompts
    ]
    results = llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], params, use_tqdm=False)
    tokens = sum(len(o.token_ids) for r in results for o in r.outputs)
    return {"seconds": time.perf_counter() - started, "tokens": tokens}


def _tokens(generations: Path) -> int:
    from components.data import load_rows

    return sum(load_rows(generations)["n_tokens"])


# --- judge and train ------------------------------------------------------------------------------------------


def judge(scratch: Path) -> dict:
    from components import stages
    from components.models import Policy
    from components.requests import judge_request

    cfg = config(scratch)
    policy, generations = Policy(cfg.models.policy), scratch / "generations-0-auto"
    seconds, judged = timed(
        lambda: stages.judge(judge_request(cfg, policy, str(generations), scratch / "pairs", None, None))
    )
    return {"seconds": seconds, "pairs": judged.pairs - judged.abstained}


def train(scratch: Path, variant: str, again: bool = False) -> dict:
    """Ratchet's train stage (DPO) on the judged pairs; `variant` names a changed setting; `again` trains into a
    directory of its own (a published one would be skipped), as a resumed round does after a kill."""
    from components import stages
    from components.data import load_rows
    from components.models import Policy
    from components.requests import train_request
    from components.stages import Judged

    changes = {"default": {}, "precompute": {"precompute_ref_log_probs": True}, "max_length 192": {"max_length": 192}}
    cfg = config(scratch, training=changes[variant])
    pairs = load_rows(scratch / "pairs")
    judged = Judged(str(scratch / "pairs"), len(pairs), sum(pairs["abstained"]), [])
    out = scratch / f"adapter-{variant.replace(' ', '-')}{'-again' if again else ''}"
    policy = Policy(cfg.models.policy)
    seconds, trained = timed(lambda: stages.train(train_request(cfg, policy, "", judged, out, cfg.seed, None)))
    return {"seconds": seconds, "steps": trained.metrics["steps"], "tokens": trained.metrics["tokens"]}


def train_bare(scratch: Path) -> dict:
    """TRL's DPOTrainer with PEFT, the same pairs and settings, as a user writes it from TRL's docs."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from components.data import load_rows
    from components.models import resolve_model
    from components.training.pair_selection import to_conversational

    cfg = config(scratch)
    t, path = cfg.training, resolve_model(cfg.models.policy)
    data = to_conversational(load_rows(scratch / "pairs"), None, False)  # the pairs in TRL's conversational format
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = DPOConfig(
        output_dir=str(scratch / "bare-ckpt"),
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        beta=t.beta,
        per_device_train_batch_size=t.per_device_train_batch_size,
        max_length=t.max_length,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=cfg.seed,
    )
    lora = LoraConfig(
        r=t.lora_r,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(path),
        peft_config=lora,
    )
    trainer.train()
    trainer.model.save_pretrained(str(scratch / "bare-adapter"))
    tokens = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e][-1]
    return {"seconds": time.perf_counter() - started, "tokens": tokens}


def padding(scratch: Path) -> dict:
    """How much of a DPO batch is padding: tokens in padded batches over tokens in the pairs (batches as drawn)."""
    from components.data import load_rows
    from components.models import chat_turn, load_tokenizer

    cfg = config(scratch)
    tokenizer = load_tokenizer(cfg.models.policy)
    pairs = [p for p in load_rows(scratch / "pairs") if not p["abstained"]]
    lengths = []
    for p in pairs:
        prompt = len(tokenizer(chat_turn(tokenizer, p["prompt"]), add_special_tokens=False).input_ids)
        lengths += [(prompt + len(tokenizer(p["chosen"]).input_ids), prompt + len(tokenizer(p["rejected"]).input_ids))]
    batch, padded, real = cfg.training.per_device_train_batch_size, 0, 0
    for start in range(0, len(lengths), batch):
        group = lengths[start : start + batch]
        padded += 2 * len(group) * max(max(pair) for pair in group)
        real += sum(sum(pair) for pair in group)
    return {"padded_tokens": padded, "real_tokens": real}


# --- evaluate -------------------------------------------------------------------------------------------------


def evaluate(scratch: Path, round_: int, memo: str) -> dict:
    """Ratchet's evaluate stage: round 1 (base vs base + the trained adapter) or round 2 (that against it plus a
    second adapter), with the memo round 1 left (`warm`) or an empty one (`cold`); the judge's prompts recorded."""
    from components.evaluate_stage import evaluate
    from components.judging import scorers
    from components.models import Policy
    from components.requests import evaluate_request

    recorded = {"two_way": [], "complete": []}
    two_way, complete = scorers.LlamaCppScorer.two_way, scorers.LlamaCppScorer.complete

    def record_two_way(self, texts, labels):
        recorded["two_way"] += [[t, labels] for t in texts]
        return two_way(self, texts, labels)

    def record_complete(self, text, max_new_tokens, stop):
        recorded["complete"].append([text, max_new_tokens, stop])
        return complete(self, text, max_new_tokens, stop)

    scorers.LlamaCppScorer.two_way, scorers.LlamaCppScorer.complete = record_two_way, record_complete
    cfg = config(scratch)
    base = Policy(cfg.models.policy)
    first = base.with_adapter(str(scratch / "adapter-default"))
    champion, challenger = (base, first) if round_ == 1 else (first, first.with_adapter(str(scratch / "adapter-2")))
    # Round 1 fills the shared memo (empty until then), so round 2 `warm` finds what round 1 computed.
    shared = memo == "warm" or round_ == 1
    memo_dir = scratch / "memo" if shared else Path(tempfile.mkdtemp(prefix="cold-memo-", dir=scratch))
    out = scratch / f"eval-{round_}-{memo}"
    seconds, _ = timed(lambda: evaluate(evaluate_request(cfg, champion, challenger, out, memo_dir)))
    (scratch / f"judge-prompts-{round_}-{memo}.json").write_text(json.dumps(recorded))
    return {"seconds": seconds, "scored": len(recorded["two_way"]), "completed": len(recorded["complete"])}


def evaluate_bare(scratch: Path) -> dict:
    """Round 1's evaluation as library calls: vLLM greedy answers of both policies, llama.cpp on the same judge
    prompts, a transformers forward per log-prob (4 per prompt: both policies on both answers)."""
    os.environ.update(__import__("components.generation.vllm_worker", fromlist=["CPU_ENVIRONMENT"]).CPU_ENVIRONMENT)
    from components.data import load_prompts
    from components.embedded import gguf_file
    from components.generation.generator import chat_prompt
    from components.models import load_tokenizer, resolve_model

    cfg = config(scratch)
    prompts = list(load_prompts(cfg.data.eval_prompts, cfg.data.max_eval_prompts))
    tokenizer = load_tokenizer(cfg.models.policy)
    parts = {}
    parts["answers"], answers = _bare_answers(cfg, prompts, tokenizer, scratch)
    parts["judge"] = _bare_judge(gguf_file(cfg.evaluation.judge.model), scratch, cfg.evaluation.judge.context_tokens)
    texts = [(chat_prompt(tokenizer, p), a) for p, pair in zip(prompts, answers, strict=True) for a in pair]
    parts["log-probs"] = _bare_logprobs(resolve_model(cfg.models.policy), scratch / "adapter-default", tokenizer, texts)
    return {"seconds": sum(parts.values()), **{f"{k}_seconds": v for k, v in parts.items()}}


def _bare_answers(cfg, prompts, tokenizer, scratch: Path) -> tuple[float, list[tuple[str, str]]]:
    from vllm import LLM, SamplingParams, TokensPrompt
    from vllm.lora.request import LoRARequest

    from components.generation.generator import chat_prompt
    from components.models import resolve_model

    ids = [
        TokensPrompt(prompt_token_ids=tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False).input_ids)
        for p in prompts
    ]
    started = time.perf_counter()
    llm = LLM(
        str(resolve_model(cfg.models.policy)),
        dtype="float32",
        enforce_eager=True,
        enable_lora=True,
        max_lora_rank=cfg.training.lora_r,
        enable_chunked_prefill=False,
    )
    greedy = SamplingParams(temperature=0, max_tokens=cfg.evaluation.max_new_tokens)
    base = llm.generate(ids, greedy, use_tqdm=False)
    lora = LoRARequest("challenger", 1, str(scratch / "adapter-default"))
    tuned = llm.generate(ids, greedy, lora_request=lora, use_tqdm=False)
    seconds = time.perf_counter() - started
    return seconds, [(b.outputs[0].text, t.outputs[0].text) for b, t in zip(base, tuned, strict=True)]


def _bare_judge(gguf: Path, scratch: Path, context: int) -> float:
    """llama.cpp's own API on the prompts Ratchet's judge scored (next-token logits) and completed (greedy)."""
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    from components.judging.scorers import cpu_threads

    recorded = json.loads((scratch / "judge-prompts-1-cold.json").read_text())
    started = time.perf_counter()
    llm = Llama(model_path=str(gguf), n_ctx=context, n_threads=cpu_threads(), verbose=False)
    for text, _ in recorded["two_way"]:
        llm.reset()
        llm.eval(llm.tokenize(text.encode(), add_bos=False, special=True))
        np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).argmax()
    for text, max_tokens, stop in recorded["complete"]:
        llm.create_completion(text, max_tokens=max_tokens, temperature=0.0, stop=[stop])
    return time.perf_counter() - started


def _bare_logprobs(base: Path, adapter: Path, tokenizer, texts: list[tuple[str, str]]) -> float:
    """One forward per (prompt, answer) under each policy: the loop a user writes."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
    with torch.inference_mode():
        for use_adapter in (True, False):
            for prompt, answer in texts:
                ids = tokenizer(prompt + answer, return_tensors="pt", add_special_tokens=False).input_ids
                if use_adapter:
                    model(ids)
                else:
                    with model.disable_adapter():
                        model(ids)
    return time.perf_counter() - started


def second_adapter(scratch: Path) -> dict:
    """Round 2's challenger: an adapter trained on the same pairs from the round-1 adapter's champion."""
    from components import stages
    from components.data import load_rows
    from components.models import Policy
    from components.requests import train_request
    from components.stages import Judged

    cfg = config(scratch)
    pairs = load_rows(scratch / "pairs")
    judged = Judged(str(scratch / "pairs"), len(pairs), sum(pairs["abstained"]), [])
    champion = Policy(cfg.models.policy, (str(scratch / "adapter-default"),))
    seconds, _ = timed(
        lambda: stages.train(train_request(cfg, champion, "", judged, scratch / "adapter-2", cfg.seed + 1, None))
    )
    return {"seconds": seconds}


# --- the run --------------------------------------------------------------------------------------------------

STEPS = {
    "generate": lambda s: generate(s, "[]"),
    "generate bare": generate_bare,
    "judge": judge,
    "padding": padding,
    "train": lambda s: train(s, "default"),
    "train bare": train_bare,
    "train precompute": lambda s: train(s, "precompute"),
    "train precompute again": lambda s: train(s, "precompute", again=True),
    "train max_length 192": lambda s: train(s, "max_length 192"),
    "evaluate": lambda s: evaluate(s, 1, "cold"),
    "evaluate bare": evaluate_bare,
    "second adapter": second_adapter,
    "generate round 2 merged": lambda s: generate(s, json.dumps([str(s / "adapter-default")]), "merged"),
    "generate round 2 lora": lambda s: generate(s, json.dumps([str(s / "adapter-default")]), "lora"),
    "evaluate round 2 memo": lambda s: evaluate(s, 2, "warm"),
    "evaluate round 2 no memo": lambda s: evaluate(s, 2, "cold"),
}


def step(name: str, scratch: Path) -> dict:
    """One step in a fresh process; its result as the step prints it."""
    command = [sys.executable, __file__, "--step", name, "--scratch", str(scratch)]
    log = scratch / f"{name.replace(' ', '-')}.log"
    with open(log, "w") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    result = result_of(log.read_text())
    print(f"{name}: {result}", file=sys.stderr)
    return result


def report(r: dict[str, dict], args) -> None:
    def row(*cells) -> None:
        print("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |")

    def seconds(name: str) -> float:
        return r[name]["seconds"]

    print(
        f"\n{date.today()} · {platform.machine()} · {os.cpu_count()} cores · {args.train_prompts} training prompts, "
        f"{args.eval_prompts} held-out, {args.steps} DPO steps, configs/efficacy.yaml otherwise\n"
    )
    row("stage", "Ratchet s", "bare library s", "Ratchet / bare", "work")
    row("---", "---", "---", "---", "---")
    g, t, e, bare = r["generate"], r["train"], r["evaluate"], r["evaluate bare"]
    work = f"{g['samples']} samples, {g['tokens']} tokens"
    row("generate", seconds("generate"), seconds("generate bare"), seconds("generate") / seconds("generate bare"), work)
    row("judge (verifier + refusal classifier)", seconds("judge"), "-", "-", f"{r['judge']['pairs']} pairs")
    work = f"{t['steps']} steps, {t['tokens']} tokens"
    row("train (DPO)", seconds("train"), seconds("train bare"), seconds("train") / seconds("train bare"), work)
    parts = ", ".join(f"{k.removesuffix('_seconds')} {v:.1f}" for k, v in bare.items() if k.endswith("_seconds"))
    work = f"{e['scored']} judge prompts scored, {e['completed']} written"
    row(
        "evaluate (round 1)",
        seconds("evaluate"),
        f"{bare['seconds']:.2f} ({parts})",
        e["seconds"] / bare["seconds"],
        work,
    )
    print()
    row("option", "seconds", "vs default", "note")
    row("---", "---", "---", "---")
    lora, merged = seconds("generate round 2 lora"), seconds("generate round 2 merged")
    row("generate round 2, the adapter served as LoRA", lora, 1.0, "")
    row("generate round 2, the adapter merged", merged, merged / lora, "")
    for name in ("train precompute", "train precompute again", "train max_length 192"):
        row(name, seconds(name), seconds(name) / seconds("train"), f"{r[name]['tokens']} tokens")
    pad = r["padding"]
    row("(padding in the DPO batches as drawn)", "", "", f"{pad['padded_tokens'] / pad['real_tokens']:.2f}x the tokens")
    cold, warm = r["evaluate round 2 no memo"], r["evaluate round 2 memo"]
    row("evaluate round 2, an empty memo", cold["seconds"], 1.0, f"{cold['scored']} judge prompts scored")
    row(
        "evaluate round 2, round 1's memo",
        warm["seconds"],
        warm["seconds"] / cold["seconds"],
        f"{warm['scored']} judge prompts scored",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-prompts", type=int, default=64)
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--step", choices=list(STEPS))
    parser.add_argument("--scratch", type=Path)
    args = parser.parse_args()
    if args.step:
        print_result(STEPS[args.step](args.scratch))
        return
    scratch = Path(tempfile.mkdtemp(prefix="ratchet-flagship-stages-"))
    (scratch / "args.json").write_text(json.dumps(vars(args) | {"scratch": str(scratch)}))
    print(f"logs in {scratch}", file=sys.stderr)
    report({name: step(name, scratch) for name in STEPS}, args)


if __name__ == "__main__":
    main()
