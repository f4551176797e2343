"""What a technique establishes about the weights it leaves, so later steps and the files can be checked.

A technique returns these on `TechniqueResult.properties`; the runner stores them in the step's
record as `to_dict()` (the JSON shape rows have always had) and `runner/checks.py` checks them
after every later stage and after export. Tensors are named as in the model's `state_dict()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelshrink.errors import UnknownNameError


@dataclass(frozen=True)
class Sparsity:
    """At least `min` of all the weights of `tensors`, taken together, are exactly zero."""

    tensors: tuple[str, ...]
    min: float  # fraction 0-1 over the tensors' elements

    def to_dict(self) -> dict[str, Any]:
        return {"property": "sparsity", "tensors": list(self.tensors), "min": self.min}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Sparsity:
        return cls(tuple(raw["tensors"]), float(raw["min"]))


@dataclass(frozen=True)
class DistinctValues:
    """Each tensor of `tensors` holds at most `max` distinct values (e.g. k shared centroids)."""

    tensors: tuple[str, ...]
    max: int

    def to_dict(self) -> dict[str, Any]:
        return {"property": "distinct_values", "tensors": list(self.tensors), "max": self.max}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DistinctValues:
        return cls(tuple(raw["tensors"]), int(raw["max"]))


@dataclass(frozen=True)
class NM:
    """Every group of `m` consecutive weights along each tensor's input dimension has at most `n` nonzeros."""

    tensors: tuple[str, ...]
    n: int
    m: int

    def to_dict(self) -> dict[str, Any]:
        return {"property": "nm", "n": self.n, "m": self.m, "tensors": list(self.tensors)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> NM:
        return cls(tuple(raw["tensors"]), int(raw["n"]), int(raw["m"]))


Property = Sparsity | DistinctValues | NM

_BY_NAME: dict[str, type[Sparsity] | type[DistinctValues] | type[NM]] = {
    "sparsity": Sparsity,
    "distinct_values": DistinctValues,
    "nm": NM,
}


def property_from_dict(raw: Mapping[str, Any]) -> Property:
    """The property a `to_dict()` mapping describes (as read back from a step record)."""
    name = raw.get("property")
    if name not in _BY_NAME:
        raise UnknownNameError(f"unknown property {name!r} in {dict(raw)!r}; known: {', '.join(sorted(_BY_NAME))}")
    return _BY_NAME[str(name)].from_dict(raw)
