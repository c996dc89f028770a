"""State trees without pickle: nested dicts and lists whose leaves are arrays or JSON values.

One representation for everything streamkm persists or sends (checkpoints, the group
model's messages): :func:`split_tree` replaces every ndarray leaf by a marker and
collects the arrays; :func:`join_tree` puts them back. Standard library and NumPy only,
so any package may import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ARRAY_MARK", "StateTreeError", "split_tree", "join_tree"]

#: Key of the marker dict that stands for an array in the JSON part.
ARRAY_MARK = "__ndarray__"


class StateTreeError(ValueError):
    """The JSON part names an array that is not there."""


def split_tree(state: Any, path: str, arrays: dict[str, np.ndarray], table: dict[str, dict[str, Any]]) -> Any:
    """Replace ndarray leaves by markers; returns the JSON-able tree.

    Arrays go to *arrays* (names ``a0``, ``a1``, ...) and their description
    (``path``, ``dtype``, ``shape``) to *table*. Raises TypeError for anything that
    would need pickle (object arrays, non-str keys, other leaf types).
    """
    if isinstance(state, np.ndarray):
        if state.dtype.kind not in "biufc" or state.dtype.hasobject:
            raise TypeError(f"state at {path or '<root>'!r}: array dtype {state.dtype} is not "
                            f"allowed (numeric/bool only, no object arrays: no pickle)")
        name = f"a{len(arrays)}"
        arrays[name] = state
        table[name] = {"path": path, "dtype": state.dtype.str, "shape": list(state.shape)}
        return {ARRAY_MARK: name}
    if isinstance(state, dict):
        out = {}
        for k, v in state.items():
            if not isinstance(k, str):
                raise TypeError(f"state at {path or '<root>'!r}: dict keys must be str, "
                                f"got {type(k).__name__} {k!r}")
            if k == ARRAY_MARK:
                raise ValueError(f"state at {path!r}: key {ARRAY_MARK!r} is reserved")
            out[k] = split_tree(v, f"{path}.{k}" if path else k, arrays, table)
        return out
    if isinstance(state, (list, tuple)):
        return [split_tree(v, f"{path}[{i}]", arrays, table) for i, v in enumerate(state)]
    if isinstance(state, np.generic):
        if state.dtype.kind not in "biuf":
            raise TypeError(f"state at {path!r}: NumPy scalar of dtype {state.dtype} not allowed")
        return state.item()
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"state at {path or '<root>'!r}: unsupported type {type(state).__name__} "
                    f"(use ndarrays, dicts, lists and JSON scalars)")


def join_tree(tree: Any, arrays: Any) -> Any:
    """Inverse of :func:`split_tree`: markers in *tree* replaced by ``arrays[name]``."""
    if isinstance(tree, dict):
        if len(tree) == 1 and ARRAY_MARK in tree:
            name = tree[ARRAY_MARK]
            if not isinstance(name, str) or name not in arrays:
                raise StateTreeError(f"array {name!r} listed in the manifest is missing")
            return arrays[name]
        return {k: join_tree(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_tree(v, arrays) for v in tree]
    return tree
