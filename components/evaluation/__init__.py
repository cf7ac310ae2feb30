"""The measures of a challenger against its champion on held-out prompts (`measures`: win rate, task completion,
refusals, CIs; `substance`: whether an answer does what it was asked). The stage that runs them is
`components/evaluate_stage.py`."""
