"""The prompt cohorts Ratchet knows, and which of them a verifier can check (counted in task completion)."""

COHORTS = ("arithmetic", "ifeval", "ifeval_unseen", "grounded", "factual", "benign", "should_refuse", "injection")
SCENARIO_COHORTS = ("false_premise", "unanswerable")  # only in the gate-scenario files (data/gate_*.jsonl)
# Checkable, so counted in task completion; ifeval_unseen holds instruction types that training never shows.
TASK_COHORTS = ("arithmetic", "ifeval", "ifeval_unseen", "grounded", "factual", "false_premise")
