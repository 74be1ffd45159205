"""Batched rigid-body helpers in torch. Quaternions are MuJoCo's ``(w, x, y, z)``.

Isaac Gym stores root quaternions as ``(x, y, z, w)``; porting IsaacGymEnvs code to
MuJoCo without swapping the order is a classic silent bug, so every function here
says which convention it expects.
"""

from __future__ import annotations

import numpy as np
import torch


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors ``v`` (N, 3) by unit quaternions ``q`` (N, 4) in ``(w, x, y, z)`` order."""
    w, xyz = q[:, :1], q[:, 1:]
    t = 2.0 * torch.cross(xyz, v, dim=1)
    return v + w * t + torch.cross(xyz, t, dim=1)


def quat_rotate_inverse(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Express world vectors ``v`` (N, 3) in the body frame of ``q`` (N, 4), ``(w, x, y, z)``."""
    w, xyz = q[:, :1], q[:, 1:]
    t = 2.0 * torch.cross(xyz, v, dim=1)
    return v - w * t + torch.cross(xyz, t, dim=1)


def roll_pitch_yaw(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-Y-X Euler angles ``(roll, pitch, yaw)`` of ``(w, x, y, z)`` quaternions, each (N,)."""
    w, x, y, z = q.unbind(dim=1)
    roll = torch.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = torch.asin(torch.clamp(2.0 * (w * y - z * x), -1.0, 1.0))
    yaw = torch.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return roll, pitch, yaw


def wrap_to_pi(angle: torch.Tensor) -> torch.Tensor:
    """Map angles to ``(-pi, pi]``."""
    return torch.atan2(torch.sin(angle), torch.cos(angle))


def scale_to_unit(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Map ``[lower, upper]`` linearly onto ``[-1, 1]`` (IsaacGymEnvs' ``unscale``)."""
    return (2.0 * x - upper - lower) / (upper - lower)


def quat_to_matrix_np(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(N, 3, 3)`` (body -> world) of ``(w, x, y, z)`` quaternions ``(N, 4)``, NumPy."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz, wx, wy, wz = x * y, x * z, y * z, w * x, w * y, w * z
    return np.stack(
        [
            1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
            2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
            2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
        ],
        axis=1,
    ).reshape(-1, 3, 3)
