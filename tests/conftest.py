"""Shared fixtures and capability markers.

Markers (pyproject.toml): cuda, ort_cuda, tensorrt. A marked test is skipped
with the reason when the machine lacks the capability, never passed silently.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest


def _has_cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to torch"
    return True, ""


def _has_ort_cuda() -> tuple[bool, str]:
    try:
        import onnxruntime
    except ImportError:
        return False, "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False, "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu on a GPU machine)"
    return True, ""


def _has_tensorrt() -> tuple[bool, str]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, "the tensorrt Python module is not installed"
    return True, ""


_CAPABILITIES = {"cuda": _has_cuda, "ort_cuda": _has_ort_cuda, "tensorrt": _has_tensorrt}


def pytest_collection_modifyitems(config, items):
    cache = {}
    for item in items:
        for name, probe in _CAPABILITIES.items():
            if item.get_closest_marker(name) is not None:  # the marker, not a parametrize id that contains it
                if name not in cache:
                    cache[name] = probe()
                ok, reason = cache[name]
                if not ok:
                    item.add_marker(pytest.mark.skip(reason=f"{name}: {reason}"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def nm_available():
    if shutil.which("nm") is None:
        pytest.skip("binutils' nm is not installed")
    return True
