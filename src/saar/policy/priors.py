"""Priors for switch economics: quality gap, handoff penalty, expected remaining turns.

Theory of operation: the economics need three numbers that a single request cannot tell:

* **quality gap** per ``(decision, from, to)``: how many quality points ``to`` is better than
  ``from`` on this decision's traffic (default: the difference of the configured qualities);
* **handoff penalty** per ``(from, to)``: the one-off quality points lost when a running session
  is handed to another physical model (default ``default_handoff_penalty``);
* **expected remaining turns** per decision (default ``default_remaining_turns``).

All three are in the model quality scale (or turns), never in currency, so the economics keep
one unit (docs/design/0002). Each table entry carries a sample count and a source. Entries built
from replay (``PriorSource.REPLAY``) with fewer than ``min_samples`` samples are rejected (the
default is used and the trace says ``rejected``); accepted replay entries are shrunk towards the
default with ``min_samples`` pseudo-samples, so a prior with few samples moves the decision
only a little. ``CONFIG`` entries (operator overrides) are trusted as is. The replay builder
(later, in ``saar.replay``) only has to fill the three mappings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

__all__ = ["PriorEntry", "PriorLookup", "PriorSource", "Priors"]


class PriorSource(StrEnum):
    """Where a prior value came from."""

    DEFAULT = "default"
    """No usable entry: the configured default."""
    CONFIG = "config"
    """An operator override: trusted regardless of samples."""
    REPLAY = "replay"
    """Derived from replay records: subject to the minimum-sample rule and shrinkage."""


@dataclass(frozen=True, slots=True)
class PriorEntry:
    """One stored prior value."""

    value: float
    samples: int = 0
    source: PriorSource = PriorSource.REPLAY


@dataclass(frozen=True, slots=True)
class PriorLookup:
    """The value the economics used, and how it was obtained (for the trace)."""

    value: float
    samples: int
    source: PriorSource
    rejected: bool = False
    """True when a replay entry existed but had fewer than ``min_samples`` samples."""


def _empty_gap() -> Mapping[tuple[str, str, str], PriorEntry]:
    return MappingProxyType({})


def _empty_pair() -> Mapping[tuple[str, str], PriorEntry]:
    return MappingProxyType({})


def _empty_single() -> Mapping[str, PriorEntry]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Priors:
    """Prior tables with configured defaults and the minimum-sample rule."""

    quality_gap: Mapping[tuple[str, str, str], PriorEntry] = field(default_factory=_empty_gap)
    """Keyed by ``(decision, from model@pool, to model@pool)``; quality points."""
    handoff_penalty: Mapping[tuple[str, str], PriorEntry] = field(default_factory=_empty_pair)
    """Keyed by ``(from model@pool, to model@pool)``; quality points lost once per handoff."""
    remaining_turns: Mapping[str, PriorEntry] = field(default_factory=_empty_single)
    """Keyed by decision name; expected turns after the current one."""
    min_samples: int = 20
    default_handoff_penalty: float = 0.05
    default_remaining_turns: float = 8.0
    default_cache_hit_ratio: float = 0.8
    """Assumed share of a resident prefix that the next turn reuses, before a warm turn of the
    session reported cached tokens."""

    def lookup_quality_gap(
        self, decision: str, from_key: str, to_key: str, default: float
    ) -> PriorLookup:
        """Quality points ``to_key`` gains over ``from_key`` on ``decision``."""
        return self._resolve(self.quality_gap.get((decision, from_key, to_key)), default)

    def lookup_handoff(self, from_key: str, to_key: str) -> PriorLookup:
        """One-off quality points lost by handing a session from ``from_key`` to ``to_key``."""
        entry = self.handoff_penalty.get((from_key, to_key))
        return self._resolve(entry, self.default_handoff_penalty, floor=0.0)

    def lookup_remaining_turns(self, decision: str) -> PriorLookup:
        """Return the expected turns after this one for a session on ``decision``."""
        entry = self.remaining_turns.get(decision)
        return self._resolve(entry, self.default_remaining_turns, floor=0.0)

    def _resolve(
        self, entry: PriorEntry | None, default: float, floor: float | None = None
    ) -> PriorLookup:
        if entry is None:
            return PriorLookup(default, 0, PriorSource.DEFAULT)
        value = entry.value
        if entry.source is PriorSource.REPLAY:
            if entry.samples < self.min_samples:
                return PriorLookup(default, entry.samples, PriorSource.DEFAULT, rejected=True)
            # Shrink towards the default: min_samples pseudo-observations of the default.
            value = (entry.samples * value + self.min_samples * default) / (
                entry.samples + self.min_samples
            )
        if floor is not None and value < floor:
            value = floor
        return PriorLookup(value, entry.samples, entry.source)
