"""What a result was produced on: the processor and the library versions.

Runs are deterministic per machine, not across machines: floating-point results differ in
the last bits between processors (and between library versions), and training amplifies
such differences like a change of seed would. So everything that records a result (a run's
``run.yaml``, the grading pins, the benchmark lines) records this too.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The processor's model name from Linux ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """The CPU, the platform and the versions of Python and the numerical libraries, as strings.

    Versions are read from the installed packages' metadata, without importing them: importing
    ``mujoco`` here would happen before :mod:`rlcourse.envs.locomotion` chooses the offscreen
    OpenGL backend.
    """
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    info = {"python": platform.python_version()}
    info.update({name: version(name) for name in ("torch", "numpy", "gymnasium", "mujoco", "rlcourse")})
    info.update({"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": str(os.cpu_count())})
    return info
