"""The C library, loaded once through `ctypes` for the sandbox layers' system calls.

`errno` is kept per call (`use_errno=True`), so callers read it with `ctypes.get_errno()`
right after a failed call.
"""

from __future__ import annotations

import ctypes
from functools import cache


@cache
def libc() -> ctypes.CDLL:
    """Return the process's C library, with the return types the sandbox relies on."""
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    lib.prctl.restype = ctypes.c_int
    lib.ioctl.restype = ctypes.c_int
    return lib
