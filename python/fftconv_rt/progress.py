"""Step-by-step progress lines for the CLI's long commands."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Steps:
    def __init__(self, total: int, stream=None):
        self.total, self.done, self.stream = total, 0, stream or sys.stderr

    @contextmanager
    def step(self, title: str):
        self.done += 1
        self.stream.write(f"[{self.done}/{self.total}] {title} ...")
        self.stream.flush()
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.stream.write(" failed\n")
            raise
        self.stream.write(f" done ({time.perf_counter() - start:.1f} s)\n")
        self.stream.flush()
