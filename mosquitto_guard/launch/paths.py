"""Ownership and permission checks on the paths of files the broker loads.

A file is only as safe as every directory above it: whoever can write to any of them can
rename the file away and put another in its place. `check_path` walks the path from `/` and
checks each component with `lstat`, so that a symlink is seen as a symlink and not as its target.

Two strictness levels exist:
- plugins and other admin-chosen code (`allow_symlinks=False`): no symlink anywhere in the
  path, because the path the config names must be the file that was verified;
- system libraries (`allow_symlinks=True`): symlinks such as Debian's `/lib -> usr/lib` are
  followed, and every hop must itself pass the checks.

NOTE: POSIX ACLs and Linux capabilities such as CAP_DAC_OVERRIDE held by other processes are not
considered; only owner, group and mode bits are.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class PathProblem:
    """Why a path is unsafe: the component at fault, what is wrong, and the fixing command."""

    component: Path
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.component}: {self.reason}; fix: {self.fix}"


def check_path(path: Path, *, allow_symlinks: bool) -> list[PathProblem]:
    """Return every problem on the way from `/` to `path`; an empty list means the path is safe.

    `path` must be absolute. The final component must be a regular file owned by root and not
    writable by group or others; so must every directory above it.
    """
    if not path.is_absolute():
        raise ValueError(f"check_path needs an absolute path, got {path}")
    parts = list(Path(path).parts[1:])
    if not allow_symlinks and ".." in parts:
        # The kernel applies ".." after following symlinks, so "link/../x" names a different
        # file than the text suggests; a verified path must say what it means.
        real = os.path.realpath(path)
        return [PathProblem(path, "contains '..'", f"name the real path {real} instead")]
    problems: list[PathProblem] = []
    # No normpath here: ".." is resolved during the walk, after any symlink before it.
    _walk(_Walk(path, allow_symlinks, problems), Path("/"), parts, 0)
    # A directory passed twice (".." after a symlink) is reported once.
    return list(dict.fromkeys(problems))


@dataclass
class _Walk:
    origin: Path
    allow_symlinks: bool
    problems: list[PathProblem]
    final_is_directory: bool = False


def _walk(walk: _Walk, current: Path, remaining: list[str], hops: int) -> None:
    allow_symlinks, problems = walk.allow_symlinks, walk.problems
    problem = _check_owner_and_mode(current, is_final=False)
    if problem:
        problems.append(problem)
    while remaining:
        part = remaining.pop(0)
        if part in ("", "."):
            continue
        candidate = current.parent if part == ".." else current / part
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            problems.append(PathProblem(candidate, "does not exist", "correct the path"))
            return
        except OSError as error:
            problems.append(
                PathProblem(candidate, f"cannot be inspected ({error.strerror})", "check the path")
            )
            return
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(candidate)
            if not allow_symlinks:
                real = os.path.realpath(walk.origin)
                problems.append(
                    PathProblem(
                        candidate,
                        f"is a symlink to {target}, which can be swapped after the check",
                        f"name the real path {real} instead",
                    )
                )
                return
            if info.st_uid != 0:
                problems.append(
                    PathProblem(
                        candidate,
                        f"is a symlink owned by uid {info.st_uid}, not root",
                        f"chown -h root {candidate}",
                    )
                )
            if hops >= MAX_SYMLINK_HOPS:
                problems.append(
                    PathProblem(
                        candidate, "has too many levels of symlinks", "fix the symlink loop"
                    )
                )
                return
            target_path = Path(target)
            base = Path("/") if target_path.is_absolute() else current
            parts = target_path.parts[1:] if target_path.is_absolute() else target_path.parts
            _walk(walk, base, list(parts) + remaining, hops + 1)
            return
        current = candidate
        is_file = not remaining and not walk.final_is_directory
        problem = _check_owner_and_mode(current, is_final=is_file, info=info)
        if problem:
            problems.append(problem)


def _check_owner_and_mode(
    path: Path, *, is_final: bool, info: os.stat_result | None = None
) -> PathProblem | None:
    if info is None:
        info = os.lstat(path)
    kind = "file" if is_final else "directory"
    if is_final and not stat.S_ISREG(info.st_mode):
        return PathProblem(
            path, "is not a regular file", "point the config at the library file itself"
        )
    if not is_final and not stat.S_ISDIR(info.st_mode):
        return PathProblem(path, "is not a directory", "correct the path")
    if info.st_uid != 0:
        return PathProblem(
            path, f"{kind} is owned by uid {info.st_uid}, not root", f"chown root {path}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = (
            "group and others"
            if info.st_mode & stat.S_IWGRP and info.st_mode & stat.S_IWOTH
            else ("group" if info.st_mode & stat.S_IWGRP else "others")
        )
        mode = stat.S_IMODE(info.st_mode)
        # A sticky directory such as /tmp is meant to be shared, so the fix is to move away.
        fix = (
            "move the file into a directory only root can write"
            if info.st_mode & stat.S_ISVTX
            else f"chmod go-w {path}"
        )
        return PathProblem(path, f"{kind} is writable by {who} (mode {mode:04o})", fix)
    return None


def check_directory(path: Path) -> list[PathProblem]:
    """Return every problem on the way from `/` to the directory `path` (symlinks followed).

    Each directory, `path` included, must be owned by root and not writable by group or
    others. A directory that does not exist yet is judged by its nearest existing parent, the
    directory in which it would be created.
    """
    if not path.is_absolute():
        raise ValueError(f"check_directory needs an absolute path, got {path}")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problems: list[PathProblem] = []
    walk = _Walk(existing, True, problems, final_is_directory=True)
    _walk(walk, Path("/"), list(existing.parts[1:]), 0)
    return problems


def is_inside(path: Path, directories: list[Path]) -> bool:
    """Return True when `path` lies inside one of `directories` or their subdirectories.

    `path` is compared as written, so callers must first make sure it contains no symlink and no
    "..", which `check_path(path, allow_symlinks=False)` rejects. Each
    directory is compared both as written and with its symlinks resolved, so that a policy may
    name `/lib/x86_64-linux-gnu` on a system where `/lib` links to `/usr/lib`.
    """
    normal = Path(path)
    for directory in directories:
        for base in {Path(os.path.normpath(directory)), Path(os.path.realpath(directory))}:
            if normal == base or base in normal.parents:
                return True
    return False
