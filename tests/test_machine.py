"""``rlcourse.machine``: what a result was produced on, recorded with runs and pins."""

from __future__ import annotations

import platform
import subprocess
import sys

import yaml

from rlcourse import machine
from rlcourse.runner import Runner


def test_versions_names_the_processor_and_the_installed_libraries() -> None:
    import gymnasium
    import numpy
    import torch

    info = machine.versions()
    assert info["cpu"] == machine.cpu_model() and info["cpu"]
    assert info["python"] == platform.python_version()
    assert (info["torch"], info["numpy"], info["gymnasium"]) == (torch.__version__, numpy.__version__,
                                                                 gymnasium.__version__)
    assert info["mujoco"] != "not installed" and info["rlcourse"] != "not installed"
    assert all(isinstance(v, str) for v in info.values())


def test_cpu_model_reads_proc_cpuinfo(tmp_path, monkeypatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU @ 1.00GHz\n")
    real_path = machine.Path
    monkeypatch.setattr(machine, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    assert machine.cpu_model() == "Test CPU @ 1.00GHz"
    cpuinfo.unlink()  # no /proc (macOS, Windows): falls back to the platform module
    assert machine.cpu_model() == (platform.processor() or platform.machine())


def test_versions_does_not_import_mujoco() -> None:
    # rlcourse.envs.locomotion picks the offscreen GL backend only if mujoco is not imported yet.
    code = "import sys, rlcourse.machine as m; m.versions(); print('mujoco' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_yaml_records_the_machine(tiny_ppo, tmp_path) -> None:
    agent = tiny_ppo("CartPole-v1", num_envs=2)
    Runner(agent, agent.env, run_dir=tmp_path, eval_episodes=0, progress=False).learn(2 * 16 * 2)
    info = yaml.safe_load((tmp_path / "run.yaml").read_text())
    assert info["machine"] == machine.versions()
    assert info["algo"] == "ppo" and info["env"] == "CartPole-v1"
