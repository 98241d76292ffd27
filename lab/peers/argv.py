"""Pieces of the peers' command lines: an option that is given only when it has a value."""

from __future__ import annotations


def option(flag: str, value: object | None) -> list[str]:
    """`["--flag=value"]`, or nothing when `value` is None."""
    return [] if value is None else [f"{flag}={value}"]


def switch(flag: str, on: bool) -> list[str]:
    """`["--flag"]` when `on`, else nothing."""
    return [flag] if on else []
