"""Checks on a config as parsed from YAML, before pydantic sees it: values no person writes."""

from __future__ import annotations

import math
from typing import Any

MAX_CONFIG_VALUES = 100_000  # a real config holds hundreds; YAML aliases can make billions ("billion laughs")


def too_big(root: Any) -> str | None:
    """Why the parsed YAML is not a config a person wrote: an alias that contains itself, or more than
    MAX_CONFIG_VALUES values once aliases are expanded (counted per object, in linear time)."""
    size: dict[int, int] = {}  # id → values under it, aliases expanded
    open_: set[int] = set()
    stack: list[Any] = [root]
    while stack:
        node = stack[-1]
        kids = [k for k in (node.values() if isinstance(node, dict) else node) if isinstance(k, dict | list)]
        todo = [k for k in kids if id(k) not in size]
        if any(id(k) in open_ for k in todo):
            return "holds an alias that contains itself"
        if todo and id(node) not in open_:
            open_.add(id(node))
            stack.extend(todo)
            continue
        if todo:  # a child was pushed twice (the same alias twice in one list): finish it first
            stack.extend(todo[:1])
            continue
        stack.pop()
        open_.discard(id(node))
        items = node.values() if isinstance(node, dict) else node
        size[id(node)] = len(node) + sum(size[id(k)] for k in items if isinstance(k, dict | list))
        if size[id(node)] > MAX_CONFIG_VALUES:
            return f"expands to more than {MAX_CONFIG_VALUES:,} values"
    return None


def non_finite(raw: Any) -> tuple[tuple[str | int, ...], float] | None:
    """The first inf or NaN anywhere in `raw` (YAML's .inf / .nan) and where it is; walked without recursion."""
    todo: list[tuple[tuple[str | int, ...], Any]] = [((), raw)]
    while todo:
        loc, node = todo.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return loc, node
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list | tuple) else ()
        todo.extend(reversed([((*loc, k), v) for k, v in items]))
    return None
