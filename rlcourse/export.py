"""Export a trained policy for deployment (TorchScript; ONNX in a later step)."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def export_torchscript(agent: Any, path: str | os.PathLike) -> Path:
    """Script the agent's deterministic policy (normalizer included) into ``path``, atomically.

    ``agent`` is an rlcourse agent or an inference policy module itself (e.g. the runner's
    best policy so far). The file loads anywhere with ``torch.jit.load(path)`` and needs no
    rlcourse: ``actions = policy(obs)`` with ``obs`` a float32 ``(batch, num_obs)`` tensor.
    """
    module = agent if isinstance(agent, torch.nn.Module) else agent.inference_policy()
    policy = copy.deepcopy(module).cpu().eval()
    scripted = torch.jit.script(policy)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        scripted.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_policy(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """Load an exported TorchScript policy."""
    return torch.jit.load(str(path), map_location="cpu")


def export_onnx(agent: Any, path: str | os.PathLike, opset: int = 17) -> Path:
    """Export the deterministic policy (normalizer included) to ONNX with a dynamic batch axis.

    Needs the ``onnx`` and ``onnxscript`` packages (``pip install rlcourse[export]``);
    raises ``ImportError`` naming them otherwise. Input ``obs`` float32 ``(batch, num_obs)``,
    output ``actions``.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("ONNX export needs `pip install onnx onnxscript` (or rlcourse[export])") from exc
    policy = copy.deepcopy(agent.inference_policy()).cpu().eval()
    example = torch.zeros(2, agent.spec.num_obs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        policy, (example,), dynamo=True, input_names=["obs"], output_names=["actions"],
        dynamic_shapes=({0: batch},), opset_version=opset, optimize=True, verbose=False,
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        program.save(tmp, external_data=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
