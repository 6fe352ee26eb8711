"""Files under one folder, reached by names a stranger chose, without ever leaving that folder.

Used on both sides: `fetch` installs what a host sent into runs/<run>/ here, and the host's
dataset download (download_dataset.py) unpacks an archive from the internet. Both take names
from someone else, so a name is checked (relative, no "..", ".", empty part or NUL) and then
resolved one component at a time from an open folder with O_NOFOLLOW|O_DIRECTORY (openat(2)),
so neither a symlink planted earlier (by the archive itself, by rsync, by anyone) nor a folder
swapped for a symlink between a check and the write can redirect it: every step is a real
folder, the last one a regular file. Hand-written because the standard library has no
"open under this folder" (tarfile.data_filter exists only from 3.12 / 3.11.4, and checks names
against the paths on disk at extraction time rather than refusing links outright).

Standard library only and no import from deploy/: sync.py sends this file's source to the host
ahead of download_dataset.py (see sync.host_program).
"""

from __future__ import annotations

import errno
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # NONBLOCK: a FIFO never hangs
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class Unsafe(ValueError):
    """A name or a file that may not be read or written here; str() says why in a few words."""


def parts(name: str) -> list[str]:
    """'a/b/c' -> ['a', 'b', 'c'] for a name that stays under its folder; else Unsafe.

    A leading './' (tar's and find's habit) and a trailing '/' (a folder member) are allowed.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise Unsafe("empty or NUL in the name")
    if name.startswith("/"):
        raise Unsafe("an absolute path")
    while name.startswith("./"):
        name = name[2:]
    out = name.rstrip("/").split("/")
    if any(p == ".." for p in out):
        raise Unsafe("'..' in the path")
    if any(p in ("", ".") for p in out):
        raise Unsafe("an empty or '.' path component")
    return out


class Tree:
    """One folder, opened once; every name below is resolved from that open folder."""

    def __init__(self, root: str | os.PathLike, create: bool = False):
        if create:
            os.makedirs(root, exist_ok=True)
        self.root = os.fspath(root)
        # the root is ours to choose (runs/<run> may be a link to another disk); what is below it is not
        self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Tree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _folder(self, components: list[str], create: bool, mode: int = 0o755) -> int:
        """An fd of the folder `components` (each one a real folder, never a symlink)."""
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(components):
                if create:
                    try:
                        os.mkdir(part, mode, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    why = "a symlink or a file" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else exc.strerror
                    raise Unsafe(f"{'/'.join(components[:i + 1])} is not a folder ({why})") from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def makedirs(self, name: str, mode: int = 0o755) -> None:
        os.close(self._folder(parts(name), create=True, mode=mode))

    def _open(self, name: str, flags: int, mode: int, create_folders: bool) -> int:
        *folders, leaf = parts(name)
        dfd = self._folder(folders, create=create_folders)
        try:
            try:
                fd = os.open(leaf, flags, mode, dir_fd=dfd)
            except OSError as exc:
                raise Unsafe("a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)) from None
        finally:
            os.close(dfd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise Unsafe("not a regular file")
        return fd

    def open_read(self, name: str) -> int:
        """An fd of the regular file `name` (Unsafe when it is a symlink, a folder, a device, a FIFO)."""
        return self._open(name, _READ_FLAGS, 0, create_folders=False)

    def create(self, name: str, mode: int = 0o644) -> int:
        """A new (or truncated) regular file `name`, its folders made as needed; an fd open for writing."""
        return self._open(name, _WRITE_FLAGS, mode & 0o777, create_folders=True)

    def lstat(self, name: str) -> os.stat_result:
        *folders, leaf = parts(name)
        dfd = self._folder(folders, create=False)
        try:
            return os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)

    def move_here(self, source: "Tree", name: str) -> None:
        """Atomically replace `name` here with `name` from `source` (same file system): fsync'd file and folder."""
        *folders, leaf = parts(name)
        fd = source.open_read(name)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        sfd = source._folder(folders, create=False)
        dfd = self._folder(folders, create=True)
        try:
            try:
                os.replace(leaf, leaf, src_dir_fd=sfd, dst_dir_fd=dfd)
            except OSError as exc:
                raise Unsafe(exc.strerror or str(exc)) from None
            os.fsync(dfd)
        finally:
            os.close(sfd)
            os.close(dfd)


def scrub(root: str | os.PathLike) -> int:
    """Remove everything under `root` that is neither a regular file nor a folder (symlinks, FIFOs,
    devices), never following a link; returns how many. Used on a staging folder before reuse."""
    removed = 0
    for here, dirs, files in os.walk(root, topdown=True, followlinks=False):
        for entry in list(dirs) + files:
            path = os.path.join(here, entry)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                os.unlink(path)
                removed += 1
                if entry in dirs:
                    dirs.remove(entry)
    return removed
