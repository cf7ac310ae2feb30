"""The prompt cohorts Ratchet knows, and which of them a verifier can check (counted in task completion)."""

COHORTS = ("arithmetic", "ifeval", "grounded", "benign", "should_refuse", "injection")
SCENARIO_COHORTS = ("false_premise", "unanswerable")  # only in the gate-scenario files (data/gate_*.jsonl)
TASK_COHORTS = ("arithmetic", "ifeval", "grounded", "false_premise")  # checkable: counted in task completion
