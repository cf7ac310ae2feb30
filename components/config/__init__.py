"""The experiment config: the schema (`experiment`, with `judges`, `training` and `gate` for its larger sections),
reading YAML into it (`loading`), and where a deployment run may read and write (`confinement`). The checks that
need models and files are `components/validate.py`."""
