"""The experiment config: the schema (`experiment`, with `judges`, `training` and `gate` for its larger sections),
reading YAML into it (`loading`), and every check of a run's inputs before any work (`validate`, `confinement`)."""
