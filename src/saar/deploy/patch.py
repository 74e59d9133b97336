"""RFC 6902 JSON Patch: compute one between two JSON values, and apply one.

The admission webhook answers with a JSON Patch from the Pod it received to the Pod ``inject``
would write, so the webhook and the CLI can never disagree about what injection means: the
patch is derived from ``inject``'s output, not written by hand. The diff is simple rather than
minimal: lists are compared element by element and grown or shrunk at the end, which is what
injection does (it appends containers, volumes and mounts, or replaces one in place).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["JsonPatchError", "apply_json_patch", "json_patch"]


class JsonPatchError(ValueError):
    """A patch operation does not fit the document (bad path, failed ``test``)."""


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def json_patch(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """The operations that turn ``old`` into ``new`` (applying them gives ``new`` exactly)."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
        for key, value in new.items():
            child = f"{path}/{_escape(key)}"
            if key not in old:
                ops.append({"op": "add", "path": child, "value": copy.deepcopy(value)})
            else:
                ops.extend(json_patch(old[key], value, child))
        return ops
    if isinstance(old, list) and isinstance(new, list):
        ops = []
        common = min(len(old), len(new))
        for index in range(common):
            ops.extend(json_patch(old[index], new[index], f"{path}/{index}"))
        ops.extend(
            {"op": "add", "path": f"{path}/-", "value": copy.deepcopy(value)}
            for value in new[common:]
        )
        # Remove from the end so earlier indices stay valid.
        ops.extend(
            {"op": "remove", "path": f"{path}/{index}"}
            for index in range(len(old) - 1, common - 1, -1)
        )
        return ops
    if type(old) is type(new) and old == new:
        return []
    return [{"op": "replace", "path": path, "value": copy.deepcopy(new)}]


def _parent(document: Any, path: str) -> tuple[Any, str]:
    if not path.startswith("/"):
        raise JsonPatchError(f"path {path!r} must start with '/'")
    tokens = [_unescape(token) for token in path[1:].split("/")]
    node = document
    for token in tokens[:-1]:
        node = _child(node, token, path)
    return node, tokens[-1]


def _child(node: Any, token: str, path: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise JsonPatchError(f"path {path!r}: no member {token!r}")
        return node[token]
    if isinstance(node, list):
        return node[_index(node, token, path, allow_end=False)]
    raise JsonPatchError(f"path {path!r}: cannot descend into a {type(node).__name__}")


def _index(node: list[Any], token: str, path: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(node)
    if not token.isdigit():
        raise JsonPatchError(f"path {path!r}: {token!r} is not a list index")
    index = int(token)
    limit = len(node) if allow_end else len(node) - 1
    if index > limit:
        raise JsonPatchError(f"path {path!r}: index {index} out of range")
    return index


def apply_json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """Apply ``add``/``remove``/``replace``/``test`` operations to a copy of ``document``."""
    result = copy.deepcopy(document)
    for operation in operations:
        op = operation.get("op")
        path = str(operation.get("path", ""))
        if path == "":
            if op in ("add", "replace"):
                result = copy.deepcopy(operation["value"])
                continue
            raise JsonPatchError(f"op {op!r} on the whole document is not supported")
        parent, token = _parent(result, path)
        if op == "test":
            if _child(parent, token, path) != operation["value"]:
                raise JsonPatchError(f"test failed at {path!r}")
        elif op == "add":
            value = copy.deepcopy(operation["value"])
            if isinstance(parent, list):
                parent.insert(_index(parent, token, path, allow_end=True), value)
            elif isinstance(parent, dict):
                parent[token] = value
            else:
                raise JsonPatchError(f"path {path!r}: parent is not a container")
        elif op in ("remove", "replace"):
            _child(parent, token, path)  # raises when absent
            if isinstance(parent, list):
                index = _index(parent, token, path, allow_end=False)
                if op == "remove":
                    del parent[index]
                else:
                    parent[index] = copy.deepcopy(operation["value"])
            elif op == "remove":
                del parent[token]
            else:
                parent[token] = copy.deepcopy(operation["value"])
        else:
            raise JsonPatchError(f"unsupported op {op!r}")
    return result
