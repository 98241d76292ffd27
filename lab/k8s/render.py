"""`lab k8s render SCENARIO --shards N`: the scenario file → the manifests, as one YAML stream
(a header naming each grant and its reason, then ConfigMap, shards' Job, merge Job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.errors import BadInput
from lab.k8s.manifests import CAPABILITIES, OTHER_GRANTS, merge_job, scenario_configmap, shard_job
from lab.k8s.options import RenderOptions, S3Results, job_name
from lab.run.plan import estimate_cell_s, plan, shard_of_pairs
from lab.scenario.load import load_scenario
from lab.scenario.matrix import expand_cells
from lab.scenario.models import Cell, Scenario


def run_args(opts: RenderOptions) -> list[str]:
    """The `lab run` flags every shard pod passes beyond the scenario and its shard."""
    args = []
    if opts.repeat is not None:
        args += ["--repeat", str(opts.repeat)]
    if opts.impair is not None:
        args += ["--impair", opts.impair]
    return args


def documents(scenario_file: str | Path, opts: RenderOptions) -> list[dict[str, Any]]:
    """The objects for `scenario_file` (validated, as `lab validate` would); BadInput when
    there are more shards than (cell, repetition) pairs."""
    path = Path(scenario_file)
    scenario, _ = _plan(path, opts)
    name = opts.name or job_name(scenario.name)
    return [
        scenario_configmap(name, opts.namespace, path.name, path.read_text()),
        shard_job(name, path.name, run_args(opts), opts),
        merge_job(name, opts),
    ]


def shard_estimates_s(scenario_file: str | Path, opts: RenderOptions) -> list[float]:
    """The estimated seconds of each shard, 1 … N."""
    _, pairs = _plan(Path(scenario_file), opts)
    loads = [0.0] * opts.shards
    for (cell, _), k in zip(
        pairs, shard_of_pairs([estimate_cell_s(c) for c, _ in pairs], opts.shards), strict=True
    ):
        loads[k] += estimate_cell_s(cell)
    return loads


def _plan(path: Path, opts: RenderOptions) -> tuple[Scenario, list[tuple[Cell, int]]]:
    scenario = load_scenario(path, repeat=opts.repeat)
    pairs = plan(expand_cells(scenario), opts.repeat or scenario.repeat)
    if opts.shards > len(pairs):
        raise BadInput(
            f"--shards {opts.shards}: the scenario has only {len(pairs)} (cell, repetition) "
            "pair(s); more shards would leave pods with nothing to do"
        )
    return scenario, pairs


def header(opts: RenderOptions, estimates_s: list[float]) -> str:
    """The YAML comment block above the objects: how to use them, and every grant's reason."""
    lines = [
        "Rendered by `lab k8s render` (docs/scale.md). Apply, wait, then un-suspend the merge:",
        "  kubectl apply -f THIS && kubectl wait --for=condition=complete job/NAME --timeout=24h",
        '  kubectl patch job NAME-merge --type=merge -p \'{"spec":{"suspend":false}}\'',
        f"Shards: {opts.shards}; estimated seconds per shard: "
        + ", ".join(f"{e:.0f}" for e in estimates_s),
        "Shard pods get, beyond the defaults (every other capability is dropped):",
        *(f"  capability {cap}: {why}" for cap, why in CAPABILITIES.items()),
        *(f"  {what}: {why}" for what, why in OTHER_GRANTS.items()),
    ]
    if isinstance(opts.results, S3Results):
        lines.append(
            f"S3: credentials from Secret {opts.s3_secret} (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION; AWS_ENDPOINT_URL for S3-compatible stores)"
        )
    return "".join(f"# {line}\n" for line in lines)


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors or aliases, multi-line strings as `|` blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_scenario(scenario_file: str | Path, opts: RenderOptions) -> str:
    """The YAML stream `lab k8s render` prints."""
    docs = documents(scenario_file, opts)
    text = header(opts, shard_estimates_s(scenario_file, opts))
    return text.replace("NAME", docs[1]["metadata"]["name"]) + yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )
