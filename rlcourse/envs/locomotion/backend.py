"""The embedded physics backend: ``num_envs`` MuJoCo models stepped together with ``mujoco.rollout``.

Isaac Gym / Isaac Lab keep every environment in one GPU simulation. On a laptop the
closest thing is MuJoCo's ``rollout`` module: it steps a whole batch of independent
simulations in C++ on a thread pool, releasing the GIL, and returns the batch state
as one NumPy array. We call it once per control step with ``nstep = decimation``
(open loop inside a control step, closed loop across steps).

Each env owns its own ``MjModel`` copy. ``rollout`` accepts a list of models as long
as their *sizes* match ("floating point values can differ"), which is exactly what
per-env domain randomization of mass, friction, gains and gravity needs.

The state of env ``i`` is the row ``state[i]`` laid out as MuJoCo's
``mjSTATE_FULLPHYSICS`` vector: ``[time, qpos (nq), qvel (nv), act (na), ...]``.
``qpos``/``qvel`` below are NumPy *views* into that array, so writing a reset state
is a plain slice assignment.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import mujoco
import numpy as np
from mujoco import rollout

FULLPHYSICS = mujoco.mjtState.mjSTATE_FULLPHYSICS

_INTEGRATORS = {
    "euler": mujoco.mjtIntegrator.mjINT_EULER,
    "rk4": mujoco.mjtIntegrator.mjINT_RK4,
    "implicit": mujoco.mjtIntegrator.mjINT_IMPLICIT,
    "implicitfast": mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
}


def gymnasium_asset(name: str) -> Path:
    """Path of an MJCF file shipped inside the installed gymnasium wheel (e.g. ``"ant.xml"``)."""
    import gymnasium

    path = Path(gymnasium.__file__).resolve().parent / "envs" / "mujoco" / "assets" / name
    if not path.exists():
        raise FileNotFoundError(f"gymnasium does not ship {name!r} (looked for {path})")
    return path


def load_model(xml_path: str | os.PathLike, integrator: str | None = None, timestep: float | None = None) -> mujoco.MjModel:
    """Compile an MJCF file, optionally overriding the integrator and the physics time step."""
    spec = mujoco.MjSpec.from_file(str(xml_path))
    if integrator is not None:
        if integrator.lower() not in _INTEGRATORS:
            raise ValueError(f"integrator must be one of {sorted(_INTEGRATORS)}, got {integrator!r}")
        spec.option.integrator = _INTEGRATORS[integrator.lower()]
    if timestep is not None:
        if not timestep > 0:
            raise ValueError(f"timestep must be > 0, got {timestep!r}")
        spec.option.timestep = float(timestep)
    return spec.compile()


class MujocoBatch:
    """``num_envs`` independent MuJoCo simulations of one model, stepped in a single call.

    Args:
        model: the nominal model; every env gets its own copy in :attr:`models`.
        num_envs: batch size.
        nthread: rollout threads (default: number of CPU cores). Results do not depend on it.

    Attributes:
        models: per-env ``MjModel`` copies (edit them to randomize physics per env).
        state: ``(num_envs, nstate)`` float64 FULLPHYSICS states.
        qpos, qvel: views ``(num_envs, nq)`` / ``(num_envs, nv)`` into ``state``.
        sensordata: ``(num_envs, nsensordata)`` sensor values after the last substep.
    """

    def __init__(self, model: mujoco.MjModel, num_envs: int, nthread: int | None = None) -> None:
        self.model = model
        self.num_envs = int(num_envs)
        self.nthread = max(1, int(nthread or os.cpu_count() or 1))
        self.models = [copy.copy(model) for _ in range(self.num_envs)]
        self._datas = [mujoco.MjData(model) for _ in range(self.nthread)]
        self._scratch = mujoco.MjData(model)
        self._pool = rollout.Rollout(nthread=self.nthread)
        self.nstate = mujoco.mj_stateSize(model, FULLPHYSICS)
        self.nq, self.nv, self.na, self.nu = model.nq, model.nv, model.na, model.nu
        self.state = np.zeros((self.num_envs, self.nstate))
        self.qpos = self.state[:, 1 : 1 + self.nq]
        self.qvel = self.state[:, 1 + self.nq : 1 + self.nq + self.nv]
        self.sensordata = np.zeros((self.num_envs, model.nsensordata))
        # mj_step evaluates sensors before it integrates, so sensor values belong to the start of
        # each substep; ``sensordata`` holds the last substep's (e.g. the torques applied during
        # it), except for these indices, which get their maximum over the control step's
        # substeps (a contact sensor must not miss a touch between control steps).
        self.sensor_max_over_substeps: np.ndarray | None = None
        self._out_state: np.ndarray | None = None
        self._out_sensor: np.ndarray | None = None
        self._ctrl: np.ndarray | None = None
        self._timestep = float(model.opt.timestep)   # model.opt builds a new wrapper on every access
        # The nominal initial state (qpos0, zero velocity) as a FULLPHYSICS row.
        mujoco.mj_resetData(model, self._scratch)
        self.default_state = np.empty(self.nstate)
        mujoco.mj_getState(model, self._scratch, self.default_state, FULLPHYSICS)

    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    def step(self, ctrl: np.ndarray, nstep: int) -> np.ndarray:
        """Advance every env ``nstep`` physics steps holding ``ctrl`` (``(N, nu)`` or ``(N, nstep, nu)``).

        Returns a bool mask of envs whose simulation diverged (MuJoCo reset them or
        produced non-finite numbers); the caller should terminate and reset those.
        """
        n = self.num_envs
        if self._out_state is None or self._out_state.shape[1] != nstep:
            self._out_state = np.empty((n, nstep, self.nstate))
            self._out_sensor = np.empty((n, nstep, self.model.nsensordata))
            self._ctrl = np.empty((n, nstep, self.nu))
        # One copy into a preallocated float64 buffer: it repeats a (N, nu) control over the
        # nstep substeps (skip_checks=True below means rollout will not tile it for us).
        self._ctrl[:] = ctrl[:, None, :] if ctrl.ndim == 2 else ctrl
        # rollout stops a diverged trajectory (time stops increasing); MuJoCo's own
        # instability check resets the data, which sends time back to 0.
        expected = self.state[:, 0] + 0.5 * nstep * self._timestep
        self._pool.rollout(
            self.models, self._datas, self.state, self._ctrl,
            nstep=nstep, state=self._out_state, sensordata=self._out_sensor, skip_checks=True,
        )
        self.state[:] = self._out_state[:, -1]
        if self.sensordata.shape[1]:
            self.sensordata[:] = self._out_sensor[:, -1]
            idx = self.sensor_max_over_substeps
            if idx is not None:
                self.sensordata[:, idx] = self._out_sensor[:, :, idx].max(axis=1)
        return (self.state[:, 0] < expected) | ~np.isfinite(self.state).all(axis=1)

    def set_state(self, env_ids: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Reset the given envs to ``qpos``/``qvel`` (time, actuator activations and the rest to defaults)."""
        self.state[env_ids] = self.default_state
        self.sensordata[env_ids] = 0.0
        self.state[env_ids, 1 : 1 + self.nq] = qpos
        self.state[env_ids, 1 + self.nq : 1 + self.nq + self.nv] = qvel

    def set_const(self, env_id: int) -> None:
        """Recompute derived constants of env ``env_id``'s model after changing masses/inertias."""
        mujoco.mj_setConst(self.models[env_id], self._scratch)

    def data_for(self, env_id: int) -> mujoco.MjData:
        """A scratch ``MjData`` holding env ``env_id``'s current state, forward kinematics done (for rendering)."""
        d = self._scratch
        mujoco.mj_setState(self.models[env_id], d, self.state[env_id], FULLPHYSICS)
        mujoco.mj_forward(self.models[env_id], d)
        return d

    def close(self) -> None:
        self._pool.close()
