"""Old names kept for one release: each use warns with a ``DeprecationWarning`` naming the new one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any


def module_getattr(
    module: str, renamed: Mapping[str, str], namespace: Mapping[str, Any]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that gives ``namespace[renamed[old]]`` for each old name, warning."""

    def __getattr__(name: str) -> Any:
        new = renamed.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is deprecated and goes in the next release: use pipeline_sdk.{new} (the same)",
            DeprecationWarning,
            stacklevel=2,
        )
        return namespace[new]

    return __getattr__
