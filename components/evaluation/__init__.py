"""The measures of a challenger against its champion on held-out prompts (`measures`: win rate, task completion,
refusals, CIs) and of the judges that scored them (`reliability`: order consistency, abstentions, length slope,
agreement). The stage that runs them is `components/evaluate_stage.py`."""
