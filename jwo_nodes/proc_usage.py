"""Resident memory and CPU time of a running process, read from /proc (Linux): the
soak and the bench sample the store's processes with it."""
import os
from typing import Optional

from jwo_nodes.core.soak_stats import parse_stat_ticks, parse_vmrss_kb

TICKS_PER_S = os.sysconf('SC_CLK_TCK')


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as stream:
            return stream.read()
    except OSError:
        return None


def usage(pid: int) -> tuple:
    """(resident MB, CPU ticks so far: user + system), each None when unreadable (the
    process is gone)."""
    kb = parse_vmrss_kb(_read(f'/proc/{pid}/status') or '')
    return (None if kb is None else kb / 1024.0), parse_stat_ticks(_read(f'/proc/{pid}/stat') or '')
