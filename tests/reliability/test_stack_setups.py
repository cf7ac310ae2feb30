"""Faults that need a team stack of their own (`ratchet stack up`): the artifact store's disk full, and a local store
migrated into an empty stack. A file apart from test_stack_faults.py, so the two test processes of `make test-slow`
run one each (each file runs in one process). docs/reliability.md records what each shows."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import BIN, ROOT
from ratchet_process import finish, ratchet_run
from test_stack_faults import ONE_ROUND, bring_up, env_of, mlflow_lineage

pytestmark = pytest.mark.slow


def test_full_artifact_disk_fails_clearly_and_registers_no_version(write_tiny_config, tmp_path):
    directory = tmp_path / ".stack"
    artifacts = directory / "mlflow-artifacts"
    artifacts.mkdir(parents=True)
    # 160 KB: the round's tables, review traces and the model's small files fit (~90 KB in 4 KB pages); the tiny
    # adapter's 134 KB of weights after them do not.
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(artifacts)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root (CAP_SYS_ADMIN) here: {mounted.stderr.decode().strip()}")
    stack = None
    try:
        stack = bring_up(directory, auth=False)
        config = write_tiny_config(tmp_path, name="tiny-full", rounds=1, gate={"rules": []})
        env = stack.client_env() | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
        output = finish(ratchet_run(config, tmp_path, **env), tmp_path, expect=1)
        stored = "the adapter of round run .* could not be stored in MLflow's artifact store"
        assert "error: the bootstrap failed" in output and re.search(stored, output), output[-3000:]
        assert mlflow_lineage(stack, "tiny-full")["versions"] == []
    finally:
        if stack:
            stack.down(say=lambda line: None)
        subprocess.run(["umount", str(artifacts)], check=False)


def test_migrate_a_local_store_into_the_stack(write_tiny_config, tmp_path):
    store = tmp_path / "local"
    store.mkdir()
    config = write_tiny_config(store, rounds=1, gate={"rules": []})
    local_run = ratchet_run(config, store)  # the stack comes up meanwhile: it does not touch the local store
    stack = None
    try:
        stack = bring_up(tmp_path / ".stack")
        finish(local_run, store)
        local = subprocess.run(
            [str(BIN / "ratchet"), "compare", "tiny", "--store", str(store)], cwd=ROOT, capture_output=True, text=True
        )
        assert local.returncode == 0, local.stderr
        migrate = [str(BIN / "ratchet"), "stack", "migrate", "--store", str(store), "--directory", str(stack.directory)]
        done = subprocess.run(migrate, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0 and "copied into" in done.stdout, done.stdout + done.stderr
        on_stack = subprocess.run(
            [str(BIN / "ratchet"), "compare", "tiny"], cwd=ROOT, env=env_of(stack), capture_output=True, text=True
        )
        assert on_stack.returncode == 0 and on_stack.stdout == local.stdout, on_stack.stdout + on_stack.stderr
        again = subprocess.run(migrate, cwd=ROOT, capture_output=True, text=True)
        assert again.returncode == 1 and "already holds runs" in again.stderr

        # The registered adapter's files come back through the proxy; the resumed bootstrap adds nothing.
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts

        os.environ.update(stack.client_env())
        try:
            version = MlflowClient(stack.mlflow_url).get_model_version("ratchet-tiny", "1")
            files = os.listdir(download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path / "download")))
            assert "adapter_model.safetensors" in files
        finally:
            for key in stack.client_env():
                os.environ.pop(key, None)
        finish(ratchet_run(config, store, **stack.client_env()), store)
        assert mlflow_lineage(stack, "tiny")["runs"] == ONE_ROUND
    finally:
        local_run.kill()  # a no-op once it has finished
        if stack:
            stack.down(say=lambda line: None)
