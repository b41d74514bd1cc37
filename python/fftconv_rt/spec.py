"""The op contract (op_spec.toml) as Python values."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def op_spec() -> dict:
    return tomllib.loads((Path(__file__).with_name("op_spec.toml")).read_text())


def inputs(version: int | None = None) -> list[dict]:
    """The inputs of the op at a version (default: the newest), in slot order."""
    version = OP_VERSION if version is None else version
    return [i for i in op_spec()["inputs"] if i.get("since_version", 1) <= version]


def input_names(version: int | None = None) -> list[str]:
    return [i["name"] for i in inputs(version)]


def attributes(version: int | None = None) -> dict[str, dict]:
    """The attributes of the op at a version (default: the newest)."""
    version = OP_VERSION if version is None else version
    return {name: a for name, a in op_spec()["attributes"].items() if a.get("since_version", 1) <= version}


def tolerance(dtype_name: str) -> float:
    """Allowed max|y - ref| / max|ref| for an I/O type name ("float32", "float16", "bfloat16")."""
    return float(op_spec()["tolerance"][dtype_name])


DOMAIN = op_spec()["domain"]
OP_NAME = op_spec()["name"]
OP_VERSION = op_spec()["version"]
OP_VERSIONS = tuple(op_spec()["versions"])
