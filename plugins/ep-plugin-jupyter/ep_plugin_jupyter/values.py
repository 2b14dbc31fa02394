"""What kind of JSON value a taskinfo field holds, tested the cheap way first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

__all__ = ["is_object"]

#: Types that are never mappings: a value of one is not an object without
#: asking ``Mapping``'s subclass hook.
_NOT_OBJECTS = (str, list, int, float, type(None))


def is_object(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``: a dict (from the wire) at once, a
    string, list, number or ``None`` at once, anything else as ``Mapping``
    says."""
    if isinstance(value, dict):
        return True
    return not isinstance(value, _NOT_OBJECTS) and isinstance(value, Mapping)
