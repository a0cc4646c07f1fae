"""File operations below one root that never follow a symlink and never leave the root.

Every directory is opened component by component from the root with O_NOFOLLOW|O_DIRECTORY, and
every operation is relative to such a directory descriptor: a directory swapped for a symlink
between the scan and the apply makes the operation fail instead of acting elsewhere.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections import OrderedDict

#: FICLONE from <linux/fs.h>: _IOW(0x94, 9, int).
FICLONE = 0x40049409
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)
_CHUNK = 1 << 20
#: errno values that mean "this filesystem cannot reflink".
REFLINK_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS, errno.EBADF})


class ReflinkUnsupported(OSError):
    """The filesystem refused FICLONE."""


def _nofile() -> int:
    try:
        import resource

        return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, OSError, ValueError):
        return 1024


def split_rel(rel: str) -> tuple[str, str]:
    """('dir/sub', 'name') of a root-relative path with '/' separators."""
    head, _, name = rel.rpartition("/")
    return head, name


class RootFS:
    """Directory descriptors below `root`, cached (LRU), opened without following symlinks."""

    def __init__(self, root: str, cache_size: int | None = None) -> None:
        self.root = root
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cache: OrderedDict[str, int] = OrderedDict()
        # A group spans many directories: keep enough open that a group does not evict itself,
        # within a quarter of the descriptor limit.
        self._size = cache_size or max(16, min(4096, _nofile() // 4))

    @property
    def cache_size(self) -> int:
        return self._size

    def close(self) -> None:
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def __enter__(self) -> RootFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dirfd(self, rel_dir: str) -> int:
        """Descriptor of `rel_dir` ('' is the root); OSError (ELOOP/ENOTDIR) if a component is a symlink."""
        if not rel_dir:
            return self.root_fd
        fd = self._cache.get(rel_dir)
        if fd is not None:
            self._cache.move_to_end(rel_dir)
            return fd
        parent, name = split_rel(rel_dir)
        if name in ("", ".", ".."):
            raise OSError(errno.EINVAL, "path component not allowed", rel_dir)
        fd = os.open(name, _DIR_FLAGS, dir_fd=self.dirfd(parent))
        self._cache[rel_dir] = fd
        if len(self._cache) > self._size:
            _old, old_fd = self._cache.popitem(last=False)
            os.close(old_fd)
        return fd

    def at(self, rel: str) -> tuple[int, str]:
        """(directory descriptor, name) of a root-relative path."""
        head, name = split_rel(rel)
        if name in ("", ".", ".."):
            raise OSError(errno.EINVAL, "not a file name", rel)
        return self.dirfd(head), name

    def lstat(self, rel: str) -> os.stat_result:
        dfd, name = self.at(rel)
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)

    def try_lstat(self, rel: str) -> os.stat_result | None:
        try:
            return self.lstat(rel)
        except FileNotFoundError:
            return None

    def open_read(self, rel: str) -> int:
        """Read-only descriptor of a regular file (ELOOP if it is a symlink)."""
        dfd, name = self.at(rel)
        return os.open(name, _READ_FLAGS, dir_fd=dfd)

    def readlink(self, rel: str) -> str:
        dfd, name = self.at(rel)
        return os.readlink(name, dir_fd=dfd)

    def unlink(self, rel: str) -> None:
        dfd, name = self.at(rel)
        os.unlink(name, dir_fd=dfd)

    def hardlink(self, src_rel: str, dst_rel: str) -> None:
        """Create `dst_rel` as a new name of `src_rel`'s inode (src not followed if a symlink)."""
        sfd, sname = self.at(src_rel)
        dfd, dname = self.at(dst_rel)
        os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)

    def symlink(self, target: str, dst_rel: str) -> None:
        dfd, dname = self.at(dst_rel)
        os.symlink(target, dname, dir_fd=dfd)

    def reflink(self, src_fd: int, dst_rel: str, like: os.stat_result) -> None:
        """Create `dst_rel` as a copy-on-write clone of `src_fd` with the mode, owner and times of `like`."""
        dfd, dname = self.at(dst_rel)
        fd = os.open(dname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            try:
                fcntl.ioctl(fd, FICLONE, src_fd)
            except OSError as exc:
                if exc.errno in REFLINK_UNSUPPORTED:
                    raise ReflinkUnsupported(exc.errno, f"reflink not supported here: {exc.strerror}") from exc
                raise
            try:
                os.fchown(fd, like.st_uid, like.st_gid)
            except PermissionError:
                pass
            os.fchmod(fd, stat.S_IMODE(like.st_mode))
            os.utime(fd, ns=(like.st_atime_ns, like.st_mtime_ns))
        except BaseException:
            os.close(fd)
            fd = -1
            try:
                os.unlink(dname, dir_fd=dfd)
            except OSError:
                pass
            raise
        finally:
            if fd >= 0:
                os.close(fd)

    def replace(self, src_rel: str, dst_rel: str) -> None:
        """Atomically rename `src_rel` over `dst_rel` (both in the same directory in practice)."""
        sfd, sname = self.at(src_rel)
        dfd, dname = self.at(dst_rel)
        os.replace(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    def fchmod_checked(self, rel: str, inode: int, mode: int) -> bool:
        """chmod the regular file at `rel` to `mode` if it is still inode `inode`; False if it is not."""
        fd = self.open_read(rel)
        try:
            st = os.fstat(fd)
            if st.st_ino != inode or not stat.S_ISREG(st.st_mode):
                return False
            os.fchmod(fd, mode)
            return True
        finally:
            os.close(fd)


def fchmod_path_checked(path: str, inode: int, mode: int) -> bool:
    """chmod the file at absolute `path` (a symlink there is not followed) to `mode` if it is still
    inode `inode`; False if it is not. The twin of `RootFS.fchmod_checked` outside the root (store
    objects)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_ino != inode:
            return False
        os.fchmod(fd, mode)
        return True
    finally:
        os.close(fd)


def read_all(fd: int, size: int) -> bytes:
    """`size` bytes from the start of `fd` (+1 byte to notice growth); one pread unless it comes up short."""
    data = os.pread(fd, size + 1, 0)
    if len(data) >= size:
        return data
    chunks = [data]
    total = len(data)
    while total <= size:
        chunk = os.pread(fd, min(_CHUNK, size + 1 - total), total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def same_bytes(fd_a: int, fd_b: int, size: int) -> bool:
    """True when both descriptors hold exactly `size` identical bytes (read in 1 MiB chunks)."""
    offset = 0
    while offset <= size:
        want = max(1, min(_CHUNK, size + 1 - offset))
        a = os.pread(fd_a, want, offset)
        b = os.pread(fd_b, want, offset)
        if a != b:
            return False
        if not a:
            break
        offset += len(a)
    return offset == size


def copy_range(src: int, dst: int, size: int) -> None:
    """Copy `size` bytes from the start of `src` to `dst`."""
    done = 0
    while done < size:
        chunk = os.pread(src, min(1 << 20, size - done), done)
        if not chunk:
            break
        os.pwrite(dst, chunk, done)
        done += len(chunk)


def link_max(root: str) -> int:
    """The most names one inode may have on the filesystem of `root` (LINK_MAX)."""
    try:
        value = os.pathconf(root, "PC_LINK_MAX")
    except (OSError, ValueError):
        return 65000
    return max(2, min(int(value), 1 << 31))
