"""`lab k8s render`: Kubernetes manifests that run a scenario's shards on a cluster — an
Indexed Job (one pod per shard, `lab run --shard I/N` inside it) and a merge Job.

Modules: `options` (what to render, where the results go), `scripts` (the containers' shell
steps), `manifests` (the objects, as dicts), `render` (scenario file → YAML). docs/scale.md.
"""
