"""The prompt cohorts Ratchet knows, and which of them a verifier can check (counted in task completion)."""

COHORTS = ("arithmetic", "ifeval", "grounded", "factual", "benign", "should_refuse", "injection")
SCENARIO_COHORTS = ("false_premise", "unanswerable")  # only in the gate-scenario files (data/gate_*.jsonl)
TASK_COHORTS = ("arithmetic", "ifeval", "grounded", "factual", "false_premise")  # checkable: in task completion
