"""The containers' shell steps (`sh -c`), as text: what each pod of the rendered Jobs does.

Each script reads `LAB_RESULTS` (the results volume's mount point) and, in a shard pod, the
Job's `JOB_COMPLETION_INDEX` (0 … N−1; `lab run --shard` counts 1 … N). Every value put into a
script is checked or quoted with `shlex.quote`, so a script is exactly what it says.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

EXIT_CODE_FILE = '"$LAB_RESULTS/exit-code"'  # the lab's exit code, for the S3 uploader to pass on

_SHARD_DIR = '"$LAB_RESULTS/{name}/shard-$i"'
_INDEX = (
    "# Kubernetes numbers an Indexed Job's pods 0…N-1; lab run --shard counts 1…N\n"
    "i=$((JOB_COMPLETION_INDEX + 1))\n"
)


def shard_script(
    name: str, shards: int, scenario_path: str, run_args: Sequence[str], *, keep_exit: bool
) -> str:
    """Run (or, in a retried pod, resume) shard i of `shards` into $LAB_RESULTS/<name>/shard-i.

    `keep_exit`: record lab's exit code in EXIT_CODE_FILE and exit 0, so that the next
    container (the S3 uploader) runs and passes the code on; else `exec` lab."""
    out = _SHARD_DIR.format(name=name)
    args = "".join(f" {shlex.quote(a)}" for a in run_args)
    new = f'lab run {shlex.quote(scenario_path)} --shard "$i/{shards}" --out "$out" --yes{args}'
    return (
        "set -eu\n"
        + _INDEX
        + f"out={out}\n"
        + "# containers get /proc/sys read-only; the lab writes net.* sysctls in its own netns\n"
        + "mount -o remount,rw /proc/sys\n"
        + "# a retried pod of the same index resumes the shard's run: done pairs are kept\n"
        + 'prev=$(find "$out" -mindepth 2 -maxdepth 2 -name run.json 2>/dev/null'
        + " | sort | head -n 1)\n"
        + 'if [ -n "$prev" ]; then set -- lab run --resume "${prev%/run.json}"\n'
        + f"else set -- {new}\nfi\n"
        + _finish(keep_exit)
    )


def _finish(keep_exit: bool) -> str:
    """Run "$@": `exec` it, or record its exit code in EXIT_CODE_FILE and exit 0."""
    if not keep_exit:
        return 'exec "$@"\n'
    return f'rc=0\n"$@" || rc=$?\necho "$rc" > {EXIT_CODE_FILE}\n'


def merge_script(name: str, *, keep_exit: bool) -> str:
    """Merge every shard's run under $LAB_RESULTS/<name> into $LAB_RESULTS/<name>/merged/."""
    merge = f'set -- lab merge shard-*/*/ -o "merged/{name}-merged"\n'
    return f'set -eu\ncd "$LAB_RESULTS/{name}"\n' + merge + _finish(keep_exit)


def s3_download_shard_script(name: str) -> str:
    """Fetch what an earlier attempt of this shard uploaded (nothing on the first)."""
    return (
        "set -eu\n"
        + _INDEX
        + f'aws s3 sync "$LAB_S3_URL/{name}/shard-$i" {_SHARD_DIR.format(name=name)}\n'
    )


def s3_upload_shard_script(name: str) -> str:
    """Upload the shard's directory (replacing an earlier attempt's), then exit with lab's
    exit code: a failed shard still leaves its finished pairs for the retry to resume."""
    return (
        "set -eu\n"
        + _INDEX
        + f'aws s3 sync --delete {_SHARD_DIR.format(name=name)} "$LAB_S3_URL/{name}/shard-$i"\n'
        + f'exit "$(cat {EXIT_CODE_FILE})"\n'
    )


def s3_download_all_script(name: str) -> str:
    """Fetch every shard's directory for the merge."""
    return f'set -eu\naws s3 sync "$LAB_S3_URL/{name}" "$LAB_RESULTS/{name}" --exclude "merged/*"\n'


def s3_upload_merged_script(name: str) -> str:
    """Upload the merged run, then exit with `lab merge`'s exit code."""
    return (
        "set -eu\n"
        f'aws s3 sync "$LAB_RESULTS/{name}/merged" "$LAB_S3_URL/{name}/merged"\n'
        f'exit "$(cat {EXIT_CODE_FILE})"\n'
    )
