"""What code and which machine made a stage's outputs, recorded in its DONE.json.

A figure read from a work directory months later (or from its archive under `results/`,
`experiments.archive`) then names the commit it came from, whether the tree had uncommitted
changes, and the machine: a 2-core CPU and an H100 give the same tables at very different
speeds, and the README quotes both.
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from typing import Any

import jax

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str) -> str | None:
    """The output of `git args` in this checkout; None where git or the repository is absent
    (a pip-installed copy, a tarball)."""
    try:
        proc = subprocess.run(["git", "-C", REPO_ROOT, *args], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@functools.cache
def _describe_process() -> dict[str, Any]:
    # Once per process: the code that runs is the code imported at its start, and the machine
    # does not change between stages, so every stage need not ask git again.
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    devices = jax.devices()
    return {
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "jax": jax.__version__,
        "devices": f"{len(devices)} x {devices[0].device_kind}",
        "cpu_cores": os.cpu_count(),
        "machine": platform.machine(),
    }


def describe() -> dict[str, Any]:
    """{"git_commit": 40 hex digits or None, "git_dirty": bool or None (tracked files changed
    since that commit), "jax": version, "devices": e.g. "2 x cpu", "cpu_cores", "machine"},
    taken at the first call in this process."""
    return dict(_describe_process())
