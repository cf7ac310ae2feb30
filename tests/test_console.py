"""The terminal `ratchet run` leaves, for real: the tiny model's 2-round bootstrap in a subprocess, quiet and with
--verbose (each with its own Prefect home and temporary server)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_NOISE = ("Map", "Saving the dataset", "Loading weights", "Warning", "Finished in state", "mlflow.store")


def ratchet_run(config: Path, home: Path, *flags: str) -> list[str]:
    env = os.environ | {"PREFECT_HOME": str(home / "prefect")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(config), "--store", str(home), *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (proc.stderr + proc.stdout).splitlines()


@pytest.fixture(scope="module")
def both(write_tiny_config, tmp_path_factory):
    quiet_dir, verbose_dir = tmp_path_factory.mktemp("quiet"), tmp_path_factory.mktemp("verbose")
    quiet = ratchet_run(write_tiny_config(quiet_dir), quiet_dir)
    verbose = ratchet_run(write_tiny_config(verbose_dir, rounds=1), verbose_dir, "--verbose")
    return quiet, verbose


def test_quiet_run_prints_a_line_per_stage_and_the_round_table(both):
    quiet, _ = both
    assert len(quiet) <= 40, "\n".join(quiet)
    for stage in ("generate", "judge", "train", "evaluate"):
        assert sum(f"· {stage}" in line for line in quiet) == 2  # one line per round
    assert not [line for line in quiet if any(noise in line for noise in LIBRARY_NOISE)]
    header = next(i for i, line in enumerate(quiet) if line.startswith("round  judge win"))
    assert [line.split()[0] for line in quiet[header + 2 : header + 4]] == ["1", "2"]


def test_verbose_shows_prefect_and_training_step_lines(both):
    quiet, verbose = both
    assert any("Finished in state Completed" in line for line in verbose)
    assert any("train dpo step 1/" in line for line in verbose)  # components' log lines, on the terminal too
    assert len(verbose) > len(quiet)
