"""``OutputLock``: one run at a time writes into an output folder (a lock file with the owner's pid).

Two ``evaluate`` runs into one ``--output`` used to overwrite each other's files silently (last
writer wins). The lock file is created with ``O_EXCL`` (atomic on local file systems); a lock left by
a process that no longer exists on this host is reported and taken over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from rec_lightning.errors import OutputExistsError

log = logging.getLogger(__name__)

LOCK_FILE = ".rec_lightning.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """Context manager holding ``<folder>/.rec_lightning.lock`` while a command writes into ``folder``.

    Args:
        folder: the output folder (created if missing).
        command: what is writing (shown to a second run that is refused).

    Raises:
        OutputExistsError: on entry, when another live process holds the lock.
    """

    def __init__(self, folder: str | Path, command: str) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.command = command
        self.held = False

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == owner["host"] and isinstance(holder.get("pid"), int) \
                        and not _alive(holder["pid"]):
                    log.warning("removing a stale lock %s (process %s no longer runs)", self.path, holder["pid"])
                    self.path.unlink(missing_ok=True)
                    continue
                raise OutputExistsError(
                    f"{self.path.parent} is being written by another run ({holder.get('command', '?')}, pid "
                    f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}); "
                    f"two runs into one folder would overwrite each other's results. Fix: give this run another "
                    f"--output, or wait for that one (if it is gone, delete {self.path})") from None
            with os.fdopen(handle, "w") as stream:
                json.dump(owner, stream)
            self.held = True
            return self
        raise OutputExistsError(f"could not take the lock {self.path}. Fix: delete it if no run is writing there")

    def _holder(self) -> dict:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):
            return {}

    def __exit__(self, *exc_info) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
