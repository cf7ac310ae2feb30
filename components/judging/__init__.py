"""Deciding which of two answers is better, and turning the verdicts into preference pairs: the judges (`judge`,
`remote_judge`, `program_judge` with its sandbox `check_sandbox` and `isolation`, `refusal_judge`, `biased`), what
runs their models (`scorers`), and the pair makers (`pairs`, `revise`). The programmatic checks the verifier runs
are `components/checks.py`."""
