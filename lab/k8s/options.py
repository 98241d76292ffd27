"""What `lab k8s render` renders: shards, image, resources, and where the results go
(`pvc:NAME` or `s3://BUCKET/PREFIX`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
MAX_NAME_CHARS = 52  # a Job's pods are named <job>-<index>-<5 random>: 63 at most
DEFAULT_UPLOADER_IMAGE = "amazon/aws-cli:latest"


@dataclass(frozen=True)
class PvcResults:
    """The runs go to a PersistentVolumeClaim (ReadWriteMany: pods on different nodes)."""

    claim: str


@dataclass(frozen=True)
class S3Results:
    """The runs go to an S3-compatible store, `s3://bucket/prefix`."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


Results = PvcResults | S3Results


def parse_results(text: str) -> Results:
    """`pvc:NAME` or `s3://BUCKET/PREFIX` (PREFIX may be empty); ValueError otherwise."""
    if text.startswith("pvc:"):
        claim = text[4:]
        if not _DNS_LABEL.match(claim) or len(claim) > 63:
            raise ValueError(f"--results {text!r}: a claim name is a DNS label, e.g. pvc:lab")
        return PvcResults(claim)
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        if not _BUCKET.match(bucket):
            raise ValueError(f"--results {text!r}: {bucket!r} is not an S3 bucket name")
        if any(c in prefix for c in "'\"\\$`\n ") or ".." in prefix.split("/"):
            raise ValueError(f"--results {text!r}: the prefix may not contain quotes, $, spaces")
        return S3Results(bucket, prefix.strip("/"))
    raise ValueError(f"--results {text!r}: expected pvc:NAME or s3://BUCKET/PREFIX")


@dataclass(frozen=True)
class RenderOptions:
    """The `lab k8s render` flags, checked (ValueError naming the flag)."""

    shards: int
    image: str = "lab:latest"
    results: Results = PvcResults("lab-results")
    name: str | None = None  # the Job's name; None: lab-<scenario name>
    namespace: str | None = None
    parallelism: int | None = None  # None: every shard at once
    cpus: int = 2  # per shard pod, request = limit (whole CPUs: the static CPU manager pins)
    memory: str = "4Gi"  # per shard pod, request = limit
    backoff_limit_per_index: int = 2  # retries of one shard (each resumes the shard's run)
    repeat: int | None = None  # `lab run --repeat`
    impair: str | None = None  # `lab run --impair`
    s3_secret: str = "lab-s3"
    uploader_image: str | None = None  # None: DEFAULT_UPLOADER_IMAGE

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 100_000:
            raise ValueError("--shards must be between 1 and 100,000 (the Job limit)")
        if self.parallelism is not None and not 1 <= self.parallelism <= self.shards:
            raise ValueError("--parallelism must be between 1 and --shards")
        if self.cpus < 1:
            raise ValueError("--cpus must be ≥ 1")
        if not _QUANTITY.match(self.memory):
            raise ValueError(f"--memory {self.memory!r} is not a quantity like 4Gi")
        if self.backoff_limit_per_index < 0:
            raise ValueError("--backoff-limit-per-index must be ≥ 0")
        if self.repeat is not None and self.repeat < 1:
            raise ValueError("--repeat must be ≥ 1")
        if self.name is not None and not job_name_ok(self.name):
            raise ValueError(f"--name {self.name!r}: a DNS label of at most {MAX_NAME_CHARS}")
        for flag, value in (("--namespace", self.namespace), ("--s3-secret", self.s3_secret)):
            if value is not None and not _DNS_LABEL.match(value):
                raise ValueError(f"{flag} {value!r} is not a DNS label")
        if not self.image or any(c.isspace() for c in self.image):
            raise ValueError(f"--image {self.image!r} is not an image reference")


def job_name_ok(name: str) -> bool:
    return bool(_DNS_LABEL.match(name)) and len(name) <= MAX_NAME_CHARS


def job_name(scenario_name: str) -> str:
    """lab-<scenario name> as a DNS label (lowercase, [-a-z0-9], at most MAX_NAME_CHARS)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", scenario_name.lower()).strip("-")
    return f"lab-{slug}"[:MAX_NAME_CHARS].rstrip("-") or "lab"
