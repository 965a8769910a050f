"""One trainer per run directory: ``RUN/train.lock``.

``fit`` holds :class:`RunLock` while it trains. The lock file is created atomically (``O_CREAT | O_EXCL``) and holds
JSON ``{pid, host, started, command}``; a second process that wants the same run directory refuses with
:class:`RunLockedError`, one line naming the holder. A lock left by a process that died (same host, pid gone, or the
pid belongs to a process started after the lock) is taken over with a warning. The lock is released when the
``with`` block ends, also on exceptions and Ctrl-C; a process killed by a signal leaves it behind, which the next
run detects as stale.

Under DDP only rank 0 owns the lock: Lightning (and torchrun, SLURM) start the other ranks as processes that run
``fit`` too, with a non-zero rank in their environment. Torch-free: it only knows paths, pids and small files.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from vfusion.errors import UserError

log = logging.getLogger(__name__)

# environment variables a launcher sets to a process's rank (global, local, node); any
# non-zero value means "not rank 0" (Lightning's DDP launcher, torchrun, SLURM)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
# a lock file that cannot be read is being written right now, unless it is older than this
_UNREADABLE_GRACE_S = 10.0


class RunLockedError(UserError):
    """The run directory is in use by another training process."""


def is_nonzero_rank(environ=None) -> bool:
    """True when the environment says this process is a distributed rank other than 0."""
    env = os.environ if environ is None else environ
    for var in RANK_VARIABLES:
        value = str(env.get(var, "")).strip()
        if value:
            try:
                if int(value) != 0:
                    return True
            except ValueError:
                continue
    return False


def _proc_start_ticks(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, start_ticks: Optional[int] = None) -> bool:
    """Whether ``pid`` runs on this host (a zombie counts as dead; with ``start_ticks``, a later
    process that reuses the pid counts as dead too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2:].split()[0] == "Z":
            return False
    except (OSError, ValueError, IndexError):
        pass
    if start_ticks is not None:
        now = _proc_start_ticks(pid)
        if now is not None and now != start_ticks:
            return False
    return True


def describe_holder(info: dict) -> str:
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}"
            f" ({info.get('command') or 'unknown command'})")


class RunLock:
    """``with RunLock(lock_path):`` owns the run's lock file for the block (a no-op on ranks other than 0);
    :meth:`vfusion.rundir.RunDir.lock` names the file."""

    def __init__(self, lock_path: str | Path, command: Optional[str] = None):
        self.path = Path(lock_path)
        self.run_dir = self.path.parent
        self.command = command if command is not None else shlex.join(sys.argv)
        self.held = False
        self._info: Optional[dict] = None

    # ---- the lock file ---------------------------------------------------------------------
    def _read(self) -> Optional[dict]:
        """The holder's record; ``{}`` when the file exists but cannot be parsed; None when it is gone."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            return {}
        return info if isinstance(info, dict) else {}

    def _create(self) -> bool:
        """Create the lock file with our record; False when it already exists."""
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now().astimezone().isoformat(timespec="seconds"), "command": self.command}
        ticks = _proc_start_ticks(os.getpid())
        if ticks is not None:
            info["pid_start_ticks"] = ticks
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(info) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        self._info = info
        return True

    def _stale_reason(self, info: dict) -> Optional[str]:
        """Why the lock in ``info`` is stale, or None when its holder may be alive."""
        if not info:  # unparsable: a writer between O_EXCL and its write, or the leftover of a crash there
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return "it is gone"
            return f"it is unreadable and {age:.0f} s old" if age > _UNREADABLE_GRACE_S else None
        if info.get("host") != socket.gethostname():
            return None  # cannot tell whether a process on another host lives
        try:
            pid = int(info.get("pid"))
        except (TypeError, ValueError):
            return "it names no pid"
        ticks = info.get("pid_start_ticks")
        if not pid_alive(pid, ticks if isinstance(ticks, int) else None):
            return f"process {pid} is no longer running"
        return None

    def _remove_if_unchanged(self, seen: dict) -> None:
        """Delete the stale lock ``seen``, unless another process replaced it meanwhile.

        Two processes that find the same stale lock serialise on an ``flock`` of the run directory,
        so neither removes the lock the other has just created (best effort where flock is missing)."""
        dir_fd = None
        try:
            dir_fd = os.open(self.run_dir, os.O_RDONLY)
            import fcntl

            fcntl.flock(dir_fd, fcntl.LOCK_EX)
        except (OSError, ImportError):
            pass
        try:
            if self._read() == seen:
                self.path.unlink(missing_ok=True)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)  # closing releases the flock

    def acquire(self) -> "RunLock":
        if is_nonzero_rank():
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                self.held = True
                return self
            info = self._read()
            if info is None:  # released between our attempt and the read: try again
                continue
            reason = self._stale_reason(info)
            if reason is None:
                holder = describe_holder(info) if info else "a process that is writing the lock right now"
                raise RunLockedError(f"run directory '{self.run_dir}' is in use by {holder}; wait for it to finish "
                                     f"or train in another run_dir=... (if that process is gone, delete {self.path})")
            log.warning("taking over the stale lock %s (%s): %s", self.path, reason,
                        describe_holder(info) if info else "no holder recorded")
            self._remove_if_unchanged(info)
        raise RunLockedError(f"could not take the lock {self.path}: other processes keep taking it; try again")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._read() == self._info:
            self.path.unlink(missing_ok=True)
        else:  # someone deleted ours and another process took it: leave theirs alone
            log.warning("the lock %s is no longer this process's; left in place", self.path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
