"""Giving freed memory back to the operating system after a prune.

CPython returns small objects to its own pools and glibc keeps freed heap pages for reuse, so the
resident size of a long-running emulator stays at its peak even after most tasks are gone.
`malloc_trim(0)` asks glibc to release what it holds; elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_memory() -> None:
    """Collect cycles, then hand free heap pages back; cheap enough for a prune every few seconds."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
