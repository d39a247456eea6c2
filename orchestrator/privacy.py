"""What a cache may trust: a file or directory of the current user that nobody else can write
(the shadow's histories, the prepared data directories of throwaway clusters)."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def ours_alone(info: os.stat_result) -> bool:
    """Ours, and writable by nobody else."""
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def private_directory_at(directory: Path, *, create: bool) -> bool:
    """Whether ``directory`` is a directory (not a link) that is ours alone; ``create``:
    make it first (mode 0700) when missing."""
    try:
        if create:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(directory, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and ours_alone(info)
