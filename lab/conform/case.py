"""`@case(...)`: a catalogue entry on the small async function that runs it.

```python
@case("H2-12", "h2", "PING is echoed with ACK and the same payload", "RFC 9113 §6.7", "MUST",
      impaired=True, needs={"h2"})
async def ping(ctx: CaseContext) -> Outcome: ...
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from lab.conform.context import CaseContext
from lab.conform.model import CaseSpec, Group, Level, Need, Outcome

CaseFn = Callable[[CaseContext], Awaitable[Outcome]]


@dataclass(frozen=True)
class Case:
    """A catalogue entry and its function."""

    spec: CaseSpec
    run: CaseFn


def case(
    case_id: str,
    group: Group,
    title: str,
    rfc: str,
    level: Level,
    *,
    impaired: bool = False,
    needs: Iterable[Need] = (),
    slow: bool = False,
) -> Callable[[CaseFn], Case]:
    """Decorator: the function becomes a `Case` (lab.conform.registry collects them)."""
    spec = CaseSpec(case_id, group, title, rfc, level, impaired, frozenset(needs), slow)

    def wrap(fn: CaseFn) -> Case:
        return Case(spec, fn)

    return wrap
