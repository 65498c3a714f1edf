"""Published numbers beside the leaderboard (issue #17): a suite's `Suite.published` entries
(bench/suites.py), numbered by source, each with the protocol differences it states. They are
the literature's numbers, never ours, and never take part in ranks, bold or ties."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.config import Published

if TYPE_CHECKING:
    from .frame import Report


@dataclass(frozen=True)
class Source:
    number: int
    suite: str
    source: str
    differences: str


@dataclass(frozen=True)
class Entry:
    suite: str
    method: str
    metric: str
    name: str       # the column's readable name
    value: float
    number: int     # of its Source

    @property
    def text(self) -> str:
        return f"{self.name}: {self.value:g} [{self.number}]"


def suite_published(rep: "Report", suite: str) -> tuple[Published, ...]:
    """The published entries of a registered suite whose stored setup (dataset, backbone, image
    size) is the one the entries were published for; () otherwise (a suite file, an edited copy)."""
    from bench.suites import SUITES
    if suite not in SUITES:
        return ()
    s = SUITES.get(suite)
    runs = [r.config for r in rep.results if r.config.suite == suite]
    if not runs or any((c.dataset, c.backbone, c.image_size) != (s.dataset, s.backbone, s.image_size) for c in runs):
        return ()
    return s.published


def published(rep: "Report") -> tuple[list[Entry], list[Source]]:
    """Every published entry of the report's suites for a method it shows, and their sources."""
    from .frame import metric_name
    entries: list[Entry] = []
    sources: dict[tuple[str, str, str], Source] = {}
    shown = {(str(s), str(m)) for s, m in zip(rep.board["suite"], rep.board["method"])}
    for suite in rep.suites:
        for p in suite_published(rep, suite):
            if (suite, p.method) not in shown:
                continue
            key = (suite, p.source, p.differences)
            if key not in sources:
                sources[key] = Source(len(sources) + 1, suite, p.source, p.differences)
            entries.append(Entry(suite, p.method, p.metric, rep.names.get(p.metric, metric_name(p.metric)),
                                 float(p.value), sources[key].number))
    return entries, list(sources.values())


def row_entries(entries: list[Entry], suite: str, method: str) -> list[Entry]:
    return [e for e in entries if e.suite == suite and e.method == method]
