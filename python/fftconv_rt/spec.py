"""The op contract (op_spec.toml) as Python values."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def op_spec() -> dict:
    return tomllib.loads((Path(__file__).with_name("op_spec.toml")).read_text())


def input_names() -> list[str]:
    return [i["name"] for i in op_spec()["inputs"]]


def tolerance(dtype_name: str) -> float:
    """Allowed max|y - ref| / max|ref| for an I/O type name ("float32", "float16", "bfloat16")."""
    return float(op_spec()["tolerance"][dtype_name])


DOMAIN = op_spec()["domain"]
OP_NAME = op_spec()["name"]
OP_VERSION = op_spec()["version"]
