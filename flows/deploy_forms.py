"""Each deployment's run form shows its own config's values, and offers no testing-only judge.

Prefect makes a deployment's form (its parameter schema) from the flow's signature, which is the same for every
deployment: each knob reads "None". After `prefect deploy`, this writes each bootstrap deployment's own schema: every
knob's default is the value its config file gives it, and the biased judge (a judge that exists to test the gate)
is left out. The values are the form's defaults, not the deployment's parameters; a field emptied in the form
still means "the config's value".

Run it after deploying: `python -m flows.deploy_forms` (`ratchet stack up` does; `ratchet serve` writes its own
deployments' forms once it has registered them)."""

from __future__ import annotations

import copy
from pathlib import Path

from prefect import get_client
from prefect.client.schemas.actions import DeploymentUpdate

from components.config.loading import load_config
from flows.bootstrap import KNOBS

TESTING_ONLY = "BiasedJudgeConfig"


def form_schema(schema: dict, config: dict) -> dict:
    """`schema` with each knob's default set to `config`'s value (its JSON form) and the testing-only judge gone."""
    schema = _without(copy.deepcopy(schema), TESTING_ONLY)
    for knob, path in KNOBS.items():
        value = config
        for key in path.split("."):
            value = value[key]
        schema["properties"][knob]["default"] = value
    return schema


def _without(node, definition: str):
    """The schema without `definition`: its entry in the definitions, each reference to it, its discriminator tag."""
    reference = {"$ref": f"#/definitions/{definition}"}
    if isinstance(node, dict):
        node.get("definitions", {}).pop(definition, None)
        mapping = node.get("discriminator", {}).get("mapping", {})
        for tag in [t for t, target in mapping.items() if target == reference["$ref"]]:
            del mapping[tag]
        pruned = {k: [i for i in v if i != reference] if k in ("anyOf", "oneOf") else v for k, v in node.items()}
        return {k: _without(v, definition) for k, v in pruned.items()}
    if isinstance(node, list):
        return [_without(item, definition) for item in node]
    return node


def update_forms(project: Path) -> list[str]:
    """Write the form of every bootstrap deployment on the server; return their names."""
    updated = []
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            if set(KNOBS) - set(deployment.parameter_openapi_schema.get("properties", {})):
                continue  # not a bootstrap: its form has no knobs
            schema = deployment.parameter_openapi_schema
            path = deployment.parameters.get("config") or schema["properties"]["config"]["default"]
            schema = form_schema(schema, load_config(project / path).model_dump(mode="json"))
            client.update_deployment(deployment.id, DeploymentUpdate(parameter_openapi_schema=schema))
            updated.append(deployment.name)
    return updated


if __name__ == "__main__":
    print("forms with the config's values:", ", ".join(update_forms(Path.cwd())) or "none")
