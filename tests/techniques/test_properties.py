"""Typed properties keep the JSON shape step records have always stored, and read back from it."""

from __future__ import annotations

import pytest

from modelshrink.errors import UnknownNameError
from modelshrink.techniques.properties import NM, DistinctValues, Sparsity, property_from_dict


@pytest.mark.parametrize(
    ("prop", "stored"),
    [
        (Sparsity(("a", "b"), 0.5), {"property": "sparsity", "tensors": ["a", "b"], "min": 0.5}),
        (DistinctValues(("a",), 16), {"property": "distinct_values", "tensors": ["a"], "max": 16}),
        (NM(("a",), 2, 4), {"property": "nm", "n": 2, "m": 4, "tensors": ["a"]}),
    ],
)
def test_round_trip_through_the_stored_shape(prop: Sparsity | DistinctValues | NM, stored: dict) -> None:
    assert prop.to_dict() == stored
    assert list(prop.to_dict()) == list(stored)  # key order too: stored rows' JSON does not change
    assert property_from_dict(stored) == prop


def test_unknown_property_names_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"'dense'.*known: distinct_values, nm, sparsity"):
        property_from_dict({"property": "dense", "tensors": []})
