"""Validate the KEDA scale rules of the queue consumers against keda-azure-servicebus-scale.schema.json.

Two container apps scale on a Service Bus queue: the workers (infra/modules/workers.bicep, on
batches) and the aggregator (infra/modules/aggregator.bicep, on stitch). Each rule is built from
parameters, so it is rendered for every combination of each parameter's allowed extremes
(minimum, default, maximum, every @allowed value) and each rendering is validated: no value an
operator may pass can produce a rule that scales without a managed identity, never scales to
zero, or waits on another queue.

Cross-checks beyond the schema:
- the rule's queue is the one its app consumes (CONSUMERS below) and one that servicebus.bicep
  creates;
- the rule's identity is kept from the containers (identitySettings lifecycle None);
- the termination grace period covers the container's own shutdown grace and stays within the
  600 seconds Container Apps allows.

The schema and the cross-checks are also shown rules they must reject, so a check loosened by
mistake fails here.

Usage: python check_keda.py <infra dir>
"""

from __future__ import annotations

import copy
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pycep

SCHEMA = "keda-azure-servicebus-scale.schema.json"
TERMINATION_GRACE_CAP = 600
# Each module with a scaled container app, and the queue that app consumes.
CONSUMERS = {
    "workers.bicep": "batches",
    "aggregator.bicep": "stitch",
}


class Unrenderable(Exception):
    """An expression this checker does not evaluate; failing beats guessing."""


def parse(path: Path) -> dict[str, Any]:
    return pycep.BicepParser().parse(file_path=path)


def choices(name: str, param: dict[str, Any]) -> list[Any]:
    """Values worth trying for one parameter."""
    decorators = {d["type"]: d["argument"] for d in param.get("decorators", [])}
    if "allowed" in decorators:
        return list(decorators["allowed"])
    values = []
    if "min_value" in decorators:
        values.append(decorators["min_value"])
    if param.get("default") is not None and not isinstance(param["default"], dict):
        values.append(param["default"])
    if "max_value" in decorators:
        values.append(decorators["max_value"])
    if not values:
        # A required string (an identity id, a name): any non-empty stand-in.
        values.append(f"<{name}>")
    return list(dict.fromkeys(values))


class Renderer:
    """Evaluates the small expression subset the scale block uses."""

    def __init__(self, variables: dict[str, Any], params: dict[str, Any]) -> None:
        self.variables = variables
        self.params = params

    def __call__(self, value: Any) -> Any:
        if isinstance(value, bool) or isinstance(value, int):
            return value
        if isinstance(value, str):
            if value in self.params:
                return self.params[value]
            if value in self.variables:
                return self(self.variables[value]["value"])
            if "${" in value:
                raise Unrenderable(f"interpolated string {value!r}")
            return value
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            if "function" in value:
                return self.function(value["function"])
            if "operator" in value:
                return self.operator(value["operator"])
            return {k: self(v) for k, v in value.items()}
        raise Unrenderable(repr(value))

    def function(self, fn: dict[str, Any]) -> Any:
        args = fn.get("parameters", {})
        if fn["type"] == "string":
            inner = self(args["value_to_convert"])
            return json.dumps(inner) if isinstance(inner, bool) else str(inner)
        if fn["type"] == "int":
            return int(self(args["value_to_convert"]))
        raise Unrenderable(f"function {fn['type']}")

    def operator(self, op: dict[str, Any]) -> Any:
        kind, operands = op["type"], op["operands"]
        if kind == "add":
            return self(operands["operand_1"]) + self(operands["operand_2"])
        if kind == "substract":
            return self(operands["operand_1"]) - self(operands["operand_2"])
        if kind == "property_accessor":
            return self(operands["operand_1"])[operands["operand_2"]]
        if kind == "index_accessor":
            return self(operands["operand_1"])[self(operands["operand_2"])]
        raise Unrenderable(f"operator {kind}")


def scaled_apps(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    apps = []
    for name, resource in template.get("resources", {}).items():
        if resource.get("type") != "Microsoft.App/containerApps":
            continue
        config = resource["config"]
        # A conditional resource nests its body under "config" once more.
        if "condition" in config:
            config = config["config"]
        apps.append((name, config))
    return apps


def env_value(container: dict[str, Any], name: str) -> Any:
    for var in container.get("env", []):
        if var["name"] == name:
            return var.get("value")
    raise AssertionError(f"container {container['name']} sets no {name}")


def check_app(
    app: dict[str, Any], render: Renderer, queues: set[str], consumed: str, schema_validator
) -> None:
    properties = app["properties"]
    template = properties["template"]
    scale = render(template["scale"])
    check_scale(scale, queues, consumed, schema_validator)

    rule = scale["rules"][0]["custom"]
    settings = {render(s["identity"]): render(s["lifecycle"]) for s in properties["configuration"]["identitySettings"]}
    assert settings.get(rule["identity"]) == "None", (
        f"the scaler identity {rule['identity']!r} must be kept from the containers (lifecycle None), "
        f"found {settings.get(rule['identity'])!r}"
    )

    termination = render(template["terminationGracePeriodSeconds"])
    for container in template["containers"]:
        grace = int(render(env_value(container, "STYLEFLEET_SHUTDOWN_GRACE_SECS")))
        assert grace + 10 <= termination <= TERMINATION_GRACE_CAP, (
            f"terminationGracePeriodSeconds {termination} must leave 10 s beyond the container's "
            f"shutdown grace {grace} and stay within {TERMINATION_GRACE_CAP}"
        )


def check_scale(scale: dict[str, Any], queues: set[str], consumed: str, schema_validator) -> None:
    schema_validator.validate(scale)
    rule = scale["rules"][0]["custom"]
    queue = rule["metadata"]["queueName"]
    assert queue in queues, f"scale rule waits on {queue!r}, which servicebus.bicep does not create"
    assert queue == consumed, f"scale rule waits on {queue!r}, but the app consumes {consumed!r}"


def must_reject_crossed(scales: dict[str, dict[str, Any]], queues: set[str], validator) -> int:
    """Feeds the cross-check each app's rule with another app's queue; returns how many it refused."""
    refused = 0
    for module, scale in scales.items():
        for other, queue in CONSUMERS.items():
            if other == module:
                continue
            crossed = copy.deepcopy(scale)
            crossed["rules"][0]["custom"]["metadata"]["queueName"] = queue
            try:
                check_scale(crossed, queues, CONSUMERS[module], validator)
            except AssertionError:
                refused += 1
                continue
            raise AssertionError(f"the check accepts the {module} app scaling on {queue}")
    return refused


def must_reject(validator, valid_scale: dict[str, Any]) -> int:
    """Feeds the schema rules it exists to refuse; returns how many it refused."""
    mutations = {
        "connection string in metadata": lambda s: s["rules"][0]["custom"]["metadata"].update(
            {"connectionFromEnv": "SERVICEBUS_CONNECTION"}
        ),
        "secret-based auth": lambda s: s["rules"][0]["custom"].update(
            {"auth": [{"secretRef": "bus-connection", "triggerParameter": "connection"}]}
        ),
        "no identity": lambda s: s["rules"][0]["custom"].pop("identity"),
        "system identity": lambda s: s["rules"][0]["custom"].update({"identity": "system"}),
        "never scales to zero": lambda s: s.update({"minReplicas": 1}),
        "zero messages per replica": lambda s: s["rules"][0]["custom"]["metadata"].update({"messageCount": "0"}),
        "numeric metadata": lambda s: s["rules"][0]["custom"]["metadata"].update({"messageCount": 4}),
        "a queue nobody consumes": lambda s: s["rules"][0]["custom"]["metadata"].update({"queueName": "uploads"}),
        "another scaler": lambda s: s["rules"][0]["custom"].update({"type": "azure-queue"}),
        "a second rule": lambda s: s["rules"].append(copy.deepcopy(s["rules"][0])),
    }
    for what, mutate in mutations.items():
        bad = copy.deepcopy(valid_scale)
        mutate(bad)
        if validator.is_valid(bad):
            raise AssertionError(f"the schema accepts a rule with {what}")
    return len(mutations)


def main(infra: Path) -> int:
    schema = json.loads((infra / "schema" / SCHEMA).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    bus = parse(infra / "modules" / "servicebus.bicep")
    queues = {
        r["config"]["name"]
        for r in bus["resources"].values()
        if r["type"] == "Microsoft.ServiceBus/namespaces/queues"
    }

    checked = 0
    scales: dict[str, dict[str, Any]] = {}
    for module, consumed in CONSUMERS.items():
        template = parse(infra / "modules" / module)
        apps = scaled_apps(template)
        assert apps, f"{module} declares no container app"
        params = template.get("parameters", {})
        names = list(params)
        combos = list(itertools.product(*(choices(n, params[n]) for n in names)))
        renderings = 0
        for combo in combos:
            render = Renderer(template.get("variables", {}), dict(zip(names, combo)))
            for _, app in apps:
                check_app(app, render, queues, consumed, validator)
                scales[module] = render(app["properties"]["template"]["scale"])
                renderings += 1
        checked += renderings
        print(
            f"{module}: {renderings} renderings over {len(combos)} parameter combinations scale on "
            f"{consumed}, valid against schema/{SCHEMA}"
        )
    refused = sum(must_reject(validator, scale) for scale in scales.values())
    crossed = must_reject_crossed(scales, queues, validator)
    print(
        f"KEDA scale rules: {checked} renderings valid; each app scales on the queue it consumes, "
        f"which servicebus.bicep creates; scaler identity kept from containers; grace periods fit; "
        f"schema refuses {refused}/{refused} bad rules, the queue check {crossed}/{crossed} crossed ones"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]))
    except (AssertionError, jsonschema.ValidationError, Unrenderable, KeyError) as err:
        print(f"KEDA scale rule check failed: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
