"""inotify watches on the watched files, on their directories and on their symlink targets.

Each watched path is watched in two ways, so that no kind of change goes unseen:

- on its own inode (with IN_DONT_FOLLOW, so a symlink's own inode): a write through any name,
  a hard link included, a chmod, a chown, a delete;
- by name, through its parent directory: a rename over it, a new symlink in its place, a
  delete, a create.

For a symlink, each hop of the chain and the final target are watched in both ways too. So
is, by name, each directory symlink above one of them (/lib on a merged /usr). A rename over a
path puts a new inode behind the name, so after each change the caller passes the affected
paths to `watch_paths` again. It watches the inode now behind each name and removes the
watches of inodes that no watched name leads to any more.

Directories that decide what the watch list contains are "listed": include_dir, capath, the
trees of `[integrity] paths` and the systemd drop-in directory. When a name that is not watched
yet is created, deleted or moved in a listed directory, the watch list must be derived again.
When a directory is missing, its nearest existing ancestor is watched instead, so its creation
is seen.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from inotify_simple import INotify, flags

from mosquitto_guard.errors import HostError

MASK = (
    flags.MODIFY
    | flags.ATTRIB
    | flags.CLOSE_WRITE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.CREATE
    | flags.DELETE
    | flags.DELETE_SELF
    | flags.MOVE_SELF
)
NAME_CHANGES = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO
# Linux follows at most 40 symlinks when it resolves a path (MAXSYMLINKS).
MAX_SYMLINK_HOPS = 40


@dataclass
class Changes:
    """The meaning of a batch of inotify events for the watch list."""

    # Watched paths to record again.
    paths: set[str] = field(default_factory=set)
    # A listed directory gained or lost a name: derive the watch list again.
    relist: bool = False
    # The kernel's event queue overflowed, so events were lost.
    overflow: bool = False


class Watches:
    """The inotify instance, and which watched paths each of its watch descriptors concerns."""

    def __init__(self) -> None:
        """Create the inotify instance. Raises `HostError` when the kernel cannot create one."""
        try:
            self._inotify = INotify()
        except OSError as error:
            raise HostError(
                f"cannot create an inotify instance: {error.strerror}",
                fix="raise the limit with sysctl fs.inotify.max_user_instances",
            ) from None
        # Watch descriptor -> watched paths that lead to its inode (the path or a symlink hop).
        self._inode_paths: dict[int, set[str]] = {}
        self._path_inodes: dict[str, set[int]] = {}
        # Watch descriptor -> the directory paths it watches (several when a symlink leads there).
        self._directories: dict[int, set[str]] = {}
        # A path whose name may change -> the watched paths that such a change affects.
        self._names: dict[str, set[str]] = {}
        self._path_names: dict[str, set[str]] = {}
        self._listed: set[str] = set()
        # Missing components on the way to a missing listed directory.
        self._listed_names: set[str] = set()

    def fileno(self) -> int:
        """Return the inotify file descriptor, readable when events are waiting."""
        return int(self._inotify.fileno())

    def close(self) -> None:
        """Close the inotify instance, which removes every watch."""
        self._inotify.close()

    def read(self) -> list[object]:
        """Return the events waiting now, without blocking."""
        return list(self._inotify.read(timeout=0))

    def watch_paths(self, paths: Iterable[str]) -> list[str]:
        """Watch the inode now behind each path and its directory, and return what failed."""
        failures: list[str] = []
        for path in paths:
            failures += self._watch_path(path)
        return failures

    def forget(self, path: str) -> None:
        """Stop watching `path`, removing the watches that no other watched path needs."""
        self._forget_names(path)
        for wd in self._path_inodes.pop(path, set()):
            self._detach(wd, path)

    def _forget_names(self, path: str) -> None:
        for name in self._path_names.pop(path, set()):
            affected = self._names.get(name)
            if affected is not None:
                affected.discard(path)
                if not affected:
                    del self._names[name]

    def set_listed(self, directories: Iterable[str]) -> list[str]:
        """Make `directories` the listed ones, watch them, and return what failed."""
        self._listed = set(directories)
        self._listed_names = set()
        failures: list[str] = []
        for directory in sorted(self._listed):
            names: set[str] = set()
            failures += self._watch_directory(directory, names)
            self._listed_names |= names
        return failures

    def classify(self, events: Iterable[object]) -> Changes:
        """Return the watched paths that `events` concern, and whether to derive the list again.

        Events on names that no watched path leads to are ignored.
        """
        changes = Changes()
        for event in events:
            wd, mask, name = event.wd, event.mask, event.name  # type: ignore[attr-defined]
            if mask & flags.Q_OVERFLOW:
                changes.overflow = True
            elif mask & flags.IGNORED:
                changes.paths |= self._drop(wd)
            elif name:
                self._classify_name(wd, mask, name, changes)
            else:
                changes.paths |= self._inode_paths.get(wd, set())
                if mask & flags.MOVE_SELF and wd in self._directories:
                    # The directory now lives under another name: watch the one at its path.
                    changes.paths |= self._drop(wd)
                    changes.relist = True
                    self._remove_watch(wd)
        return changes

    def _classify_name(self, wd: int, mask: int, name: str, changes: Changes) -> None:
        for directory in self._directories.get(wd, ()):
            child = os.path.join(directory, name)
            affected = self._names.get(child)
            if affected:
                changes.paths |= affected
            elif mask & NAME_CHANGES and (directory in self._listed or child in self._listed_names):
                changes.relist = True

    def _watch_path(self, path: str) -> list[str]:
        old_inodes = self._path_inodes.pop(path, set())
        self._forget_names(path)
        failures: list[str] = []
        inodes: set[int] = set()
        names: set[str] = set()
        for hop in [path, *symlink_chain(path)]:
            names.add(hop)
            wd = self._add(hop, MASK | flags.DONT_FOLLOW, failures)
            if wd is not None:
                inodes.add(wd)
                self._inode_paths.setdefault(wd, set()).add(path)
            failures += self._watch_directory(os.path.dirname(hop), names)
            # A directory symlink on the way, retargeted, changes the file behind the name.
            for link in symlinked_ancestors(hop):
                names.add(link)
                failures += self._watch_directory(os.path.dirname(link), names)
        self._path_inodes[path] = inodes
        self._path_names[path] = names
        for name in names:
            self._names.setdefault(name, set()).add(path)
        for wd in old_inodes - inodes:
            self._detach(wd, path)
        return failures

    def _watch_directory(self, directory: str, names: set[str]) -> list[str]:
        """Watch `directory`, or its nearest existing ancestor.

        The missing directories on the way go into `names`, so that their creation is seen.
        """
        failures: list[str] = []
        current = directory
        while True:
            try:
                wd = self._inotify.add_watch(current, MASK | flags.ONLYDIR)
            except (FileNotFoundError, NotADirectoryError):
                parent = os.path.dirname(current)
                if parent == current:
                    return failures
                names.add(current)
                current = parent
                continue
            except OSError as error:
                failures.append(_watch_failure(current, error))
                return failures
            self._directories.setdefault(wd, set()).add(current)
            return failures

    def _add(self, path: str, mask: int, failures: list[str]) -> int | None:
        try:
            return int(self._inotify.add_watch(path, mask))
        except (FileNotFoundError, NotADirectoryError):
            # Missing now: the watch on its directory reports its creation.
            return None
        except OSError as error:
            failures.append(_watch_failure(path, error))
            return None

    def _detach(self, wd: int, path: str) -> None:
        """Remove `path` from the watch `wd`, and the watch when nothing else needs it."""
        paths = self._inode_paths.get(wd)
        if paths is None:
            return
        paths.discard(path)
        if paths or wd in self._directories:
            return
        del self._inode_paths[wd]
        self._remove_watch(wd)

    def _remove_watch(self, wd: int) -> None:
        # OSError: the kernel removed the watch already, because the inode is gone.
        with contextlib.suppress(OSError):
            self._inotify.rm_watch(wd)

    def _drop(self, wd: int) -> set[str]:
        """Forget a watch that the kernel removed or that moved, and return the paths it served."""
        affected = self._inode_paths.pop(wd, set())
        for path in affected:
            self._path_inodes.get(path, set()).discard(wd)
        for directory in self._directories.pop(wd, set()):
            for name, paths in self._names.items():
                if os.path.dirname(name) == directory:
                    affected |= paths
        return affected


def symlink_chain(path: str) -> list[str]:
    """Return each path the symlink `path` leads to, in order; [] when it is no symlink."""
    chain: list[str] = []
    current = path
    for _ in range(MAX_SYMLINK_HOPS):
        try:
            target = os.readlink(current)
        except OSError:
            break
        current = os.path.normpath(os.path.join(os.path.dirname(current), target))
        chain.append(current)
    return chain


def symlinked_ancestors(path: str) -> list[str]:
    """Return the directories above `path` that are symlinks, e.g. /lib on a merged /usr."""
    links: list[str] = []
    current = os.path.dirname(path)
    while current != os.path.dirname(current):
        if os.path.islink(current):
            links.append(current)
        current = os.path.dirname(current)
    return links


def _watch_failure(path: str, error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return (
            f"cannot watch {path}: the inotify watch limit is reached; raise it with "
            "sysctl fs.inotify.max_user_watches"
        )
    return f"cannot watch {path}: {error.strerror}"
