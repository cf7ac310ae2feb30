"""The terminal `ratchet run` leaves, for real: the tiny model's 2-round bootstrap in a subprocess, with its own
Prefect home and temporary server. test_e2e_smollm2.py runs with --verbose."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import migrated_prefect_home

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_NOISE = ("Map", "Saving the dataset", "Loading weights", "Warning", "Finished in state", "mlflow.store")


def ratchet_run(config: Path, home: Path) -> list[str]:
    env = os.environ | {"PREFECT_HOME": str(migrated_prefect_home(home / "prefect"))}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(config), "--store", str(home)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (proc.stderr + proc.stdout).splitlines()


def test_quiet_run_prints_a_line_per_stage_and_the_round_table(write_tiny_config, tmp_path):
    quiet = ratchet_run(write_tiny_config(tmp_path), tmp_path)
    assert len(quiet) <= 40, "\n".join(quiet)
    for stage in ("generate", "judge", "train", "evaluate"):
        assert sum(f"· {stage}" in line for line in quiet) == 2  # one line per round
    assert not [line for line in quiet if any(noise in line for noise in LIBRARY_NOISE)]
    header = next(i for i, line in enumerate(quiet) if line.startswith("round  judge win"))
    assert [line.split()[0] for line in quiet[header + 2 : header + 4]] == ["1", "2"]
