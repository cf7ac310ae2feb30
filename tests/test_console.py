"""The terminal `ratchet run` leaves, for real: the tiny model's 2-round bootstrap in a subprocess, with its own
Prefect home and temporary server. test_e2e_smollm2.py runs with --verbose."""

from reliability.ratchet_process import finish, ratchet_run

LIBRARY_NOISE = ("Map", "Saving the dataset", "Loading weights", "Warning", "Finished in state", "mlflow.store")


def test_quiet_run_prints_a_line_per_stage_and_the_round_table(write_tiny_config, tmp_path):
    quiet = finish(ratchet_run(write_tiny_config(tmp_path), tmp_path), tmp_path).splitlines()
    assert len(quiet) <= 40, "\n".join(quiet)
    for stage in ("generate", "judge", "train", "evaluate"):
        assert sum(f"· {stage}" in line for line in quiet) == 2  # one line per round
    assert not [line for line in quiet if any(noise in line for noise in LIBRARY_NOISE)]
    header = next(i for i, line in enumerate(quiet) if line.startswith("round  judge win"))
    assert [line.split()[0] for line in quiet[header + 2 : header + 4]] == ["1", "2"]
