"""Sealed in-memory copies of the files the broker loads.

The bytes that were verified must be the bytes the broker maps. A path on disk can be replaced
between the check and the broker's `dlopen`, so the launcher copies each verified file into a
memfd. It adds every write seal (`F_SEAL_WRITE`, `F_SEAL_SHRINK`, `F_SEAL_GROW`) and then
`F_SEAL_SEAL`. After that, no process, root included, can change the contents or lift the
seals. The broker then loads `/proc/self/fd/N`, which names that memfd in its own process.
"""

from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from mosquitto_guard.errors import HostError, VerificationError

ALL_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
# Go plugins with their runtime reach tens of MiB; this bounds memory use on a hostile file.
MAX_SEALED_SIZE = 512 * 1024 * 1024
# Since Linux 6.3 a memfd may be created without execute permission, and vm.memfd_noexec=2
# forbids executable ones; a sealed plugin copy must stay mappable with PROT_EXEC.
MFD_EXEC = getattr(os, "MFD_EXEC", 0x10)


@dataclass(frozen=True)
class SealedFile:
    """A sealed memfd holding a copy of `source`, with the digest and size of those bytes."""

    fd: int
    source: Path
    sha256: str
    size: int

    @property
    def proc_path(self) -> str:
        """The path under which the process that inherits `fd` can open the copy."""
        return f"/proc/self/fd/{self.fd}"


def seal_bytes(name: str, data: bytes, *, executable: bool) -> int:
    """Create a memfd named `name`, write `data`, seal it and return the descriptor.

    The descriptor is close-on-exec; the caller marks the ones the broker needs as inheritable.
    Raises `HostError` when the kernel lacks sealable memfds.
    """
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    fd = _create_memfd(name, flags | MFD_EXEC if executable else flags)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, ALL_SEALS)
    except OSError as error:
        os.close(fd)
        raise HostError(f"cannot seal a copy of {name}: {error.strerror}") from error
    return fd


def _create_memfd(name: str, flags: int) -> int:
    try:
        return os.memfd_create(name, flags)
    except OSError as error:
        if flags & MFD_EXEC:
            # Kernels before 6.3 reject the unknown MFD_EXEC flag; their memfds are executable.
            try:
                return os.memfd_create(name, flags & ~MFD_EXEC)
            except OSError:
                pass
        raise HostError(f"memfd_create failed for {name}: {error.strerror}") from error


def seal_file(path: Path) -> SealedFile:
    """Read `path` once, without following a final symlink, and return a sealed copy of it.

    The digest is computed over the same buffer that is written to the memfd, so it describes
    exactly what the broker will map. Raises `VerificationError` when the file is not a regular
    file or is too large, `HostError` when it cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise HostError(f"cannot open {path}: {error.strerror}") from error
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise VerificationError(
                f"{path} is not a regular file", fix="point the config at the .so file"
            )
        if info.st_size > MAX_SEALED_SIZE:
            raise VerificationError(
                f"{path} is {info.st_size} bytes, more than the maximum of {MAX_SEALED_SIZE}",
                fix="check that the config names the right file",
            )
        data = _read_all(fd, info.st_size)
    finally:
        os.close(fd)
    digest = _sha256_hex(data)
    sealed_fd = seal_bytes(path.name, data, executable=True)
    return SealedFile(fd=sealed_fd, source=path, sha256=digest, size=len(data))


def _sha256_hex(data: bytes) -> str:
    # `cryptography`, loaded anyway to verify the manifests, rather than hashlib, whose import
    # loads the system's libcrypto as well: about 3 ms of every broker start.
    context = hashes.Hash(hashes.SHA256())
    context.update(data)
    return context.finalize().hex()


def _read_all(fd: int, expected: int) -> bytes:
    chunks = []
    total = 0
    while True:
        chunk = os.read(fd, max(expected - total, 0) + 65536)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_SEALED_SIZE:
            raise VerificationError(f"file grew beyond {MAX_SEALED_SIZE} bytes while being read")
    return b"".join(chunks)


def is_sealed(fd: int) -> bool:
    """Return True when `fd` carries every seal that `seal_bytes` adds."""
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    return seals & ALL_SEALS == ALL_SEALS
