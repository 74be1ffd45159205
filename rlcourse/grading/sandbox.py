"""Run an untrusted command (a student's notebook, later) inside a bubblewrap sandbox.

:func:`run_sandboxed` runs ``argv`` with `bubblewrap <https://github.com/containers/bubblewrap>`_
(``bwrap``, Debian package ``bubblewrap``; ``make sysdeps`` installs it) and returns a
:class:`SandboxResult`. :func:`check_available` runs a trivial sandboxed ``true`` and raises
:class:`SandboxUnavailable`, naming the cause, when that cannot work here.

What the command sees (:func:`mount_table` returns exactly this list; nothing else exists):

* ``/usr`` read-only, and ``/bin``, ``/sbin``, ``/lib``, ``/lib64``... as the host has them
  (symlinks into ``/usr`` on a merged-/usr system);
* a few named entries of ``/etc``, read-only (:data:`ETC_ENTRIES`: the dynamic loader's cache,
  ``alternatives``, certificates, fonts, time zone, ``nsswitch.conf``...), plus a generated
  ``/etc/passwd``, ``/etc/group``, ``/etc/hosts`` (``localhost`` only) and ``/etc/hostname``;
  never the host's ``/etc`` as a whole;
* the Python environment of the calling interpreter, read-only and at the same paths:
  ``sys.prefix`` (the venv) and ``sys.base_prefix`` (the interpreter it was made from), so
  ``sys.executable`` runs inside as outside;
* of the course repository, only the package source ``rlcourse/`` (read-only, same path: the
  editable install resolves to it). ``solutions/``, ``autograder/`` (pins, gradebook, other
  students' submissions), ``labs/``, ``tests/``, ``.git`` (which holds every version of the
  solutions) and everything else in the repository are absent. ``rlcourse/grading/`` is part of
  the package and so visible: it holds the checks' code, never the pinned numbers;
* the caller's ``extra_ro`` paths, read-only;
* the scratch directory at :data:`SCRATCH` (``/scratch``), writable: the working directory and
  ``$HOME``, and the only writable place besides a private, size-capped tmpfs on ``/tmp`` and
  ``/dev/shm``; files written there are in ``scratch`` outside afterwards;
* a new ``/proc`` (the sandbox's own processes only) and a minimal ``/dev`` (null, zero,
  random, urandom, tty, pts); no ``/sys``, no ``/run``, no ``/home``, no ``/root``
  (except the parts of it that hold the Python environment).

Isolation: every namespace is new (mount, pid, network, ipc, uts, cgroup; user when not run
as root), so there is no network but a loopback interface (a Jupyter kernel talks to its
client over it); the root of the file system is read-only (``--remount-ro /``); the command
gets no capabilities, ``no_new_privs``, a new session (no terminal to inject input into),
and an unprivileged uid/gid:

* run as root (the grading machines, CI): bubblewrap sets up the namespaces as root and
  ``setpriv`` drops to a uid/gid of its own for this run, taken from a pool
  (:data:`UID_POOL_BASE`, one flock'd slot per concurrent run), not in the host's
  ``/etc/passwd``. One uid per run makes RLIMIT_NPROC a per-run limit (it counts every
  task of a uid, machine-wide) and lets the cleanup kill every process of that uid;
* run as an ordinary user (a laptop): bubblewrap's user namespace maps uid 65534 inside to
  the caller outside (``--disable-userns``: no nested user namespaces). The limits are applied
  inside that namespace, where the kernel counts RLIMIT_NPROC per namespace, so the user's
  other processes do not count against it.

Limits (:class:`SandboxLimits`), per process, set with ``prlimit`` right before the command:
RLIMIT_AS (memory), RLIMIT_CPU (SIGXCPU, then SIGKILL a second later), RLIMIT_NPROC
(tasks, threads included, of the run's uid), RLIMIT_FSIZE (SIGXFSZ), RLIMIT_NOFILE,
RLIMIT_CORE = 0; and from outside: a wall-clock timeout, a cap on the bytes read from
stdout + stderr (reading stops and the sandbox is killed when it is exceeded) and a cap on the
scratch directory's total size and number of files (measured every half second; over it, the
sandbox is killed).

Nothing the command starts outlives the run: the sandbox's pid namespace is killed at the end
(its init, bubblewrap's pid 1, is SIGKILLed through a pidfd, and the kernel kills every process
in the namespace with it), also on timeout, on too much output, or when the caller dies
(``--die-with-parent`` inside, a parent-death signal on bubblewrap outside). Run as root, every
process still owned by the run's uid is killed as well.

Overhead: ``run_sandboxed([sys.executable, "-c", "pass"])`` takes ~20 ms more than running it
directly (~40 ms against ~23 ms on a 2-core course machine; ``check_available`` ~20 ms).

Limitations, known and measured:

* the per-process limits are per process: RLIMIT_AS does not bound the sum over processes, and
  the tmpfs ``/tmp`` and ``/dev/shm`` use RAM up to ``tmp_mb`` each. A cgroup (memory.max,
  pids.max) would bound the total, but needs a writable cgroup tree, which machines differ on;
* ``reason`` is read from the main process: a Jupyter kernel killed by a limit shows as the
  runner's own failure (nbclient's DeadKernelError), and ``"memory"`` is a guess from stderr;
* run as root, there is no user namespace, so ``--disable-userns`` is not available: the run's
  uid may make user namespaces of its own (the kernel allows it unprivileged), which gives it no
  access beyond what it sees, but is kernel attack surface. A seccomp filter could forbid it;
* ``/proc/1/cmdline`` (bubblewrap's init) shows the bubblewrap command line, which names the
  host paths of the scratch directory and of the visible folders;
* without root the uid is 65534 in every sandbox, but each has its own user namespace, where
  the kernel counts RLIMIT_NPROC separately (measured: 30 other processes of the user outside
  did not reduce a sandbox's 20). Run as root, one shared uid would not do: the count is per uid
  machine-wide, and root is exempt altogether, hence the uid pool.

What a sandbox does not do: it does not stop a submission from tampering with a grader that
runs in the same process (``np.allclose = lambda *a, **k: True`` passes an in-kernel test
sandboxed or not). The sandbox is for a split design: the submission writes plain outputs
(JSON, tensors) into the scratch directory, and a trusted process outside checks them
(never unpickling them: ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Sequence

__all__ = [
    "ETC_ENTRIES",
    "Mount",
    "SCRATCH",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "UID_POOL_BASE",
    "check_available",
    "mount_table",
    "run_sandboxed",
]

SCRATCH = "/scratch"
"""Where the scratch directory appears inside (the working directory and ``$HOME``)."""

ETC_ENTRIES = (
    "alternatives", "ca-certificates", "fonts", "gai.conf", "glvnd", "host.conf", "ld.so.cache",
    "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types", "nsswitch.conf", "os-release",
    "protocols", "services", "ssl", "timezone",
)
"""The host's ``/etc`` entries visible inside (read-only), where they exist."""

UID_POOL_BASE = 1_900_000_000
"""First uid/gid of the per-run pool used when running as root. The range lies in a gap of
systemd's uid allocation table (above the container ranges, below 2^31): no account has it."""
UID_POOL_SIZE = 1024

ROOT_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Top-level directories reproduced inside as the host has them (symlinks or read-only binds)."""

BWRAP = "bwrap"
"""The bubblewrap executable (a name looked up on ``$PATH``, or a path)."""

USERNS_UID = 65534  # the uid inside when bubblewrap makes a user namespace (not run as root)
_TAIL_BYTES = 64 * 1024
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # rlcourse/


class SandboxError(RuntimeError):
    """The sandbox could not be set up (not: the command failed inside it)."""


class SandboxUnavailable(SandboxError):
    """bubblewrap cannot run on this machine; the message names the cause and the fix."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run. Per-process limits hold for each process inside."""

    memory_mb: int = 8192
    """RLIMIT_AS, address space per process (torch reserves a lot of virtual memory: ~1.5 GiB
    for ``import torch``, more for a Jupyter kernel that imports it)."""
    cpu_s: int = 900
    """RLIMIT_CPU per process: SIGXCPU at this many CPU seconds, SIGKILL one second later."""
    nproc: int = 256
    """RLIMIT_NPROC: tasks (processes and threads) of the run's uid at once."""
    fsize_mb: int = 512
    """RLIMIT_FSIZE: the largest file a process may write (SIGXFSZ beyond it)."""
    nofile: int = 1024
    """RLIMIT_NOFILE: open file descriptors per process."""
    output_bytes: int = 8 * 1024 * 1024
    """stdout + stderr read by the caller; beyond it the sandbox is killed (``output_truncated``)."""
    wall_s: float = 1800.0
    """Wall-clock seconds before the sandbox is killed (``timed_out``)."""
    tmp_mb: int = 1024
    """Size of each private tmpfs (``/tmp`` and ``/dev/shm``); it lives in RAM."""
    scratch_mb: int = 2048
    """Total size of the scratch directory (on the host's disk). Measured from outside every
    :data:`SCRATCH_CHECK_S`; over it, the sandbox is killed (``"disk"``). A run can overshoot
    by what it writes between two checks."""
    scratch_files: int = 20_000
    """Files and folders the scratch directory may hold (each costs the size check a ``stat``)."""


@dataclass
class SandboxResult:
    """What a sandboxed run did. ``stdout``/``stderr`` are the last 64 KiB of each."""

    returncode: int | None
    """The command's exit status; 128 + N when a signal N ended it; None when the sandbox was
    killed (timeout, output cap) before it exited."""
    stdout: str
    stderr: str
    timed_out: bool
    output_truncated: bool
    reason: str | None
    """Why the run ended abnormally, when it is known: ``"wall"`` (timeout), ``"output"`` (output
    cap), ``"disk"`` (the scratch directory grew past ``scratch_mb`` or ``scratch_files``, or
    hid part of itself from the check), ``"cpu"`` (SIGXCPU), ``"fsize"`` (SIGXFSZ), ``"memory"`` (an allocation failed: a
    MemoryError or similar in stderr), ``"signal SIGxxx"`` (another signal); None otherwise."""
    seconds: float
    uid: int
    """The uid the command ran as (in the host's numbering when run as root)."""
    output_bytes: int = 0
    """stdout + stderr bytes read (at most a chunk over the cap)."""
    leftover_killed: int = 0
    """Processes of the run's uid still alive after the namespace was killed (always 0 so far)."""

    @property
    def killed_by_limit(self) -> bool:
        """The run was ended by one of the limits."""
        return self.reason in {"wall", "output", "disk", "cpu", "fsize", "memory"}

    @property
    def ok(self) -> bool:
        """The command exited with status 0 and no limit was hit."""
        return self.returncode == 0 and self.reason is None


SCRATCH_CHECK_S = 0.5


def scratch_usage(scratch: Path, max_entries: int) -> tuple[int, int] | None:
    """``(bytes on disk, entries)`` under ``scratch``, counting at most ``max_entries + 1`` entries;
    ``None`` when part of it cannot be read (a sandbox that hides a folder from the check)."""
    total, entries, stack = 0, 0, [os.fspath(scratch)]
    try:
        while stack:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    if entries > max_entries:
                        return total, entries
                    st = entry.stat(follow_symlinks=False)
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
    except FileNotFoundError:
        pass  # removed while being counted
    except OSError:
        return None
    return total, entries


class Mount(NamedTuple):
    """One entry of what exists inside the sandbox (see :func:`mount_table`)."""

    kind: str  # "ro" (read-only bind), "rw" (writable bind), "symlink", "tmpfs", "proc", "dev", "file"
    dest: str
    source: str = ""  # the host path (bind), the link target (symlink), or "" (generated)


# --------------------------------------------------------------------------- the mounts
def _python_roots() -> list[Path]:
    """The interpreter's prefixes (venv and base), as given and resolved, outside ``/usr``."""
    roots: list[Path] = []
    for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        for q in (Path(p).absolute(), Path(p).resolve()):
            if not _under(q, Path("/usr")) and q not in roots and q.exists():
                roots.append(q)
    return roots


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def mount_table(extra_ro: Sequence[Path | str] = (), package_view: Path | str | None = None) -> list[Mount]:
    """Everything that exists inside the sandbox, in mount order (see the module docstring).
    ``package_view``: a folder shown instead of the package ``rlcourse/``, at its path (the
    grading view, :mod:`rlcourse.grading.view`)."""
    table: list[Mount] = [Mount("ro", "/usr", "/usr")]
    for name in ROOT_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            table.append(Mount("symlink", str(host), os.readlink(host)))
        elif host.is_dir():
            table.append(Mount("ro", str(host), str(host)))
    table += [Mount("proc", "/proc"), Mount("dev", "/dev"), Mount("tmpfs", "/tmp"), Mount("tmpfs", "/dev/shm")]
    for name in ETC_ENTRIES:
        host = Path("/etc") / name
        if host.exists():
            table.append(Mount("ro", str(host), str(host)))
    table += [Mount("file", f"/etc/{name}") for name in ("passwd", "group", "hosts", "hostname")]
    binds = [*_python_roots(), _PACKAGE_DIR, *(Path(p).absolute() for p in extra_ro)]
    seen: set[Path] = set()
    for path in sorted(binds, key=lambda p: len(p.parts)):  # parents before what lies in them
        if path in seen or any(_under(path, Path(m.dest)) and m.kind == "ro" for m in table):
            continue
        if not path.exists():
            raise SandboxError(f"cannot make {path} visible in the sandbox: it does not exist")
        seen.add(path)
        source = Path(package_view).absolute() if package_view is not None and path == _PACKAGE_DIR else path
        table.append(Mount("ro", str(path), str(source)))
    table.append(Mount("rw", SCRATCH, "scratch"))
    return table


def _mkdir_parents(dest: str, made: set[str], table_dests: set[str]) -> list[str]:
    """``--dir`` arguments (mode 0755) for the parents of ``dest`` that nothing else creates."""
    args: list[str] = []
    for parent in reversed(Path(dest).parents):
        p = str(parent)
        if p == "/" or p in made:
            continue
        if any(_under(parent, Path(d)) for d in table_dests):  # inside a mount: exists already
            made.add(p)
            continue
        made.add(p)
        args += ["--perms", "0755", "--dir", p]
    return args


def _bwrap_mount_args(table: list[Mount], scratch: Path, files: Mapping[str, Path], tmp_mb: int) -> list[str]:
    args: list[str] = []
    made: set[str] = set()
    # Parents inside a bind exist already; parents elsewhere (the root, /tmp's tmpfs) are made here,
    # mode 0755 (bubblewrap would make them 0700, closed to the run's uid).
    bound = {m.dest for m in table if m.kind in ("ro", "rw", "proc", "dev")}
    tmp_bytes = str(tmp_mb * 1024 * 1024)
    for m in table:
        if m.kind == "ro":
            args += _mkdir_parents(m.dest, made, bound - {m.dest}) + ["--ro-bind", m.source, m.dest]
        elif m.kind == "rw":
            args += ["--bind", str(scratch), m.dest]
        elif m.kind == "symlink":
            args += ["--symlink", m.source, m.dest]
        elif m.kind == "proc":
            args += ["--proc", m.dest]
        elif m.kind == "dev":
            args += ["--dev", m.dest]
        elif m.kind == "tmpfs":
            args += ["--perms", "1777", "--size", tmp_bytes, "--tmpfs", m.dest]
        elif m.kind == "file":
            args += _mkdir_parents(m.dest, made, bound) + ["--ro-bind", str(files[m.dest]), m.dest]
    return args + ["--remount-ro", "/"]


# --------------------------------------------------------------------------- environment
def _default_env(uid: int) -> dict[str, str]:
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))  # abspath: no "..", no symlink resolved
    return {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": SCRATCH,
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",
        "VIRTUAL_ENV": sys.prefix,
        "PYTHONDONTWRITEBYTECODE": "1",  # the package and the venv are read-only anyway
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "XDG_CACHE_HOME": "/tmp/cache",
        "IPYTHONDIR": "/tmp/ipython",
        "JUPYTER_CONFIG_DIR": "/tmp/jupyter/config",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter/runtime",
        "JUPYTER_PLATFORM_DIRS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "TORCH_NUM_THREADS": "1",
    }


def _generated_files(folder: Path, uid: int) -> dict[str, Path]:
    contents = {
        "/etc/passwd": f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
                       f"sandbox:x:{uid}:{uid}:sandbox:{SCRATCH}:/bin/sh\n"
                       f"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "/etc/group": f"root:x:0:\nsandbox:x:{uid}:\nnogroup:x:65534:\n",
        "/etc/hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "/etc/hostname": "sandbox\n",
    }
    files = {}
    for dest, text in contents.items():
        path = folder / Path(dest).name
        path.write_text(text)
        path.chmod(0o644)
        files[dest] = path
    return files


# --------------------------------------------------------------------------- tools, uids
def _tool(name: str, package: str) -> str:
    """The absolute path of ``name`` (searched on ``$PATH``, then ``/usr/bin``), or raise."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/bin:/bin")
    if not found:
        raise SandboxUnavailable(
            f"`{name}` is not installed: the sandbox needs it (Debian package `{package}`; "
            f"`make sysdeps` or `apt-get install -y {package}` installs it)")
    return found


class _UidSlot:
    """A uid/gid from the pool, held (flock) for one run so that concurrent runs never share one."""

    def __init__(self) -> None:
        folder = Path(tempfile.gettempdir()) / "rlcourse-sandbox-uids"
        folder.mkdir(mode=0o700, exist_ok=True)
        start = random.randrange(UID_POOL_SIZE)
        for i in range(UID_POOL_SIZE):
            slot = (start + i) % UID_POOL_SIZE
            fd = os.open(folder / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd = fd
            self.uid = UID_POOL_BASE + slot
            return
        raise SandboxError(f"all {UID_POOL_SIZE} sandbox uids are in use")

    def release(self) -> None:
        os.close(self.fd)


def _pids_of_uid(uid: int) -> list[int]:
    """Live processes whose real uid is ``uid`` (read from /proc)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue
    return pids


def _kill_uid(uid: int) -> int:
    """SIGKILL every process of ``uid`` (a pool uid: nothing else runs as it); how many there were."""
    killed = 0
    for _ in range(20):
        pids = _pids_of_uid(uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return killed


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """``chown -R`` without following symlinks, dropping set-uid/set-gid bits from files.

    Only called while nothing runs in the tree. Linux already clears those bits on chown; doing
    it here too means a file made inside can never become a set-uid program of the caller.
    """
    def fix(path: str) -> None:
        try:
            os.lchown(path, uid, gid)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
        except FileNotFoundError:
            pass

    fix(str(root))
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            fix(os.path.join(folder, name))


# --------------------------------------------------------------------------- running
def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory",
                   "failed to map segment")


def _reason(returncode: int | None, stderr: str, timed_out: bool, truncated: bool) -> str | None:
    if timed_out:
        return "wall"
    if truncated:
        return "output"
    if returncode is None or returncode == 0:
        return None
    if returncode == 128 + signal.SIGXCPU:
        return "cpu"
    if returncode == 128 + signal.SIGXFSZ or "File too large" in stderr[-4000:]:
        return "fsize"  # Python ignores SIGXFSZ: its write raises OSError(EFBIG) instead
    if any(m in stderr[-4000:] for m in _MEMORY_MARKERS):
        return "memory"
    if returncode > 128:
        return f"signal {_signal_name(returncode - 128)}"
    return None


class _Tail:
    """The last ``size`` bytes written to a stream."""

    def __init__(self, size: int = _TAIL_BYTES) -> None:
        self.size = size
        self.buf = bytearray()

    def add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 2 * self.size:
            del self.buf[: len(self.buf) - self.size]

    def text(self) -> str:
        return bytes(self.buf[-self.size:]).decode("utf-8", errors="replace")


def _json_docs(buf: bytes) -> Iterator[dict]:
    """The JSON documents in bubblewrap's ``--json-status-fd`` output (one or more, concatenated)."""
    decoder = json.JSONDecoder()
    text, i = buf.decode(errors="replace"), 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return
        try:
            doc, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return
        yield doc


def run_sandboxed(
    argv: Sequence[str | os.PathLike],
    scratch: Path,
    limits: SandboxLimits | None = None,
    env: Mapping[str, str] | None = None,
    extra_ro: Sequence[Path | str] = (),
    package_view: Path | str | None = None,
) -> SandboxResult:
    """Run ``argv`` in the sandbox, with ``scratch`` (an existing directory) as :data:`SCRATCH`.

    ``argv[0]`` is looked up on the sandbox's ``PATH`` (the venv's ``bin``, then ``/usr/bin``);
    ``sys.executable`` works as it is. ``env`` is added to a minimal environment (nothing is
    inherited from the caller's: ``PATH``, ``HOME=/scratch``, ``MPLBACKEND=Agg``, one thread for
    OpenMP/MKL/OpenBLAS...). ``extra_ro`` paths are made visible read-only at the same path;
    ``package_view`` replaces what the sandbox sees at the package's path (see :func:`mount_table`).

    Raises :class:`SandboxUnavailable` when a tool is missing and :class:`SandboxError` when
    bubblewrap fails to set the sandbox up; whatever the command does is in the result.
    """
    limits = limits or SandboxLimits()
    scratch = Path(scratch).resolve()
    if not scratch.is_dir():
        raise SandboxError(f"the scratch directory {scratch} does not exist")
    bwrap = _tool(BWRAP, "bubblewrap")
    setpriv = _tool("setpriv", "util-linux")
    prlimit = _tool("prlimit", "util-linux")
    table = mount_table(extra_ro, package_view)
    as_root = os.geteuid() == 0

    slot = _UidSlot() if as_root else None
    uid = slot.uid if slot else USERNS_UID
    gen_dir = Path(tempfile.mkdtemp(prefix="rlcourse-sandbox-"))
    owner = scratch.stat()
    try:
        if slot:
            _kill_uid(uid)  # a previous holder's leftovers, should a grader have been SIGKILLed
            _chown_tree(scratch, uid, uid)
        gen_dir.chmod(0o755)
        files = _generated_files(gen_dir, uid)

        cmd = [setpriv, "--pdeathsig", "KILL", "--", bwrap,
               "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
               "--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv"]
        if as_root:
            # Namespaces set up as root (a user namespace would map the sandbox's uid to root,
            # which RLIMIT_NPROC exempts); setpriv below drops to the run's uid.
            # CAP_DAC_READ_SEARCH: bubblewrap's chdir into the scratch dir (owned by the run's uid).
            cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                    "--cap-add", "CAP_SETPCAP", "--cap-add", "CAP_DAC_READ_SEARCH"]
        else:
            cmd += ["--unshare-user", "--uid", str(uid), "--gid", str(uid), "--disable-userns",
                    "--cap-drop", "ALL"]
        cmd += _bwrap_mount_args(table, scratch, files, limits.tmp_mb)
        cmd += ["--chdir", SCRATCH]
        for key, value in {**_default_env(uid), **(env or {})}.items():
            cmd += ["--setenv", key, str(value)]
        status_r, status_w = os.pipe()
        cmd += ["--json-status-fd", str(status_w), "--"]
        if as_root:
            cmd += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                    "--bounding-set=-all", "--no-new-privs", "--"]
        mb = 1024 * 1024
        cmd += [prlimit, f"--as={limits.memory_mb * mb}", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}",
                f"--nproc={limits.nproc}", f"--fsize={limits.fsize_mb * mb}", f"--nofile={limits.nofile}",
                "--core=0", "--", *map(os.fspath, argv)]
        return _supervise(cmd, status_r, status_w, limits, uid, as_root, scratch)
    finally:
        try:
            if slot:
                _chown_tree(scratch, owner.st_uid, owner.st_gid)
        finally:
            shutil.rmtree(gen_dir, ignore_errors=True)
            if slot:
                slot.release()


def _supervise(cmd: list[str], status_r: int, status_w: int, limits: SandboxLimits, uid: int,
               as_root: bool, scratch: Path) -> SandboxResult:
    """Start bubblewrap, read its output under the caps, watch the scratch directory's size, and
    kill the whole sandbox at the end."""
    start = time.monotonic()
    deadline = start + limits.wall_s
    next_check = start + SCRATCH_CHECK_S
    disk_full = False
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(status_w,), start_new_session=True, env={})
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    out_tail, err_tail = _Tail(), _Tail()
    tails = {proc.stdout.fileno(): out_tail, proc.stderr.fileno(): err_tail}
    open_fds = set(tails) | {status_r}
    status_buf = b""
    pidfd: int | None = None
    exit_code: int | None = None
    total = 0
    timed_out = truncated = False
    poller = select.poll()
    for fd in open_fds:
        poller.register(fd, select.POLLIN)
    killed = False
    try:
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if time.monotonic() >= next_check:
                usage = scratch_usage(scratch, limits.scratch_files)
                if (usage is None or usage[0] > limits.scratch_mb * 1024 * 1024
                        or usage[1] > limits.scratch_files):
                    disk_full = True
                    break
                next_check = time.monotonic() + SCRATCH_CHECK_S
            for fd, _ in poller.poll(min(remaining, SCRATCH_CHECK_S) * 1000):
                data = _read(fd)
                if not data:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                if fd == status_r:
                    status_buf += data
                    for doc in _json_docs(status_buf):
                        if "child-pid" in doc and pidfd is None:
                            try:
                                pidfd = os.pidfd_open(int(doc["child-pid"]))
                            except ProcessLookupError:
                                pass
                        if "exit-code" in doc:
                            exit_code = int(doc["exit-code"])
                    continue
                total += len(data)
                tails[fd].add(data)
                if total > limits.output_bytes:
                    truncated = True
                    break
            if truncated:
                break
            if exit_code is not None and not killed:
                # The command has exited: whatever it left running dies with the namespace now,
                # and the pipes reach their end once those processes are gone.
                _kill_namespace(pidfd)
                killed = True
    finally:
        _kill_namespace(pidfd)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # What is still buffered in the pipes (the writers are dead by now).
        while not truncated and open_fds - {status_r}:
            ready = poller.poll(1000)
            if not ready:
                break
            for fd, _ in ready:
                data = _read(fd)
                if not data:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                elif fd != status_r:
                    total += len(data)
                    tails[fd].add(data)
                    truncated = total > limits.output_bytes
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        os.close(status_r)
        if pidfd is not None:
            os.close(pidfd)
    leftover = _kill_uid(uid) if as_root else 0
    seconds = time.monotonic() - start
    stdout, stderr = out_tail.text(), err_tail.text()
    if exit_code is None and not (timed_out or truncated or disk_full):
        if proc.returncode == 0:
            exit_code = 0
        else:
            raise SandboxError(f"bubblewrap could not set up the sandbox (exit status {proc.returncode}): "
                               f"{stderr.strip() or '(no message)'}")
    returncode = exit_code
    return SandboxResult(returncode=returncode, stdout=stdout, stderr=stderr, timed_out=timed_out,
                         output_truncated=truncated,
                         reason="disk" if disk_full else _reason(returncode, stderr, timed_out, truncated),
                         seconds=seconds, uid=uid, output_bytes=total, leftover_killed=leftover)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def _kill_namespace(pidfd: int | None, wait_s: float = 10.0) -> None:
    """SIGKILL the sandbox's init (the kernel then kills its whole pid namespace) and wait for it."""
    if pidfd is None:
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        return
    except OSError as e:  # pragma: no cover - ESRCH variants
        if e.errno != errno.ESRCH:
            raise
        return
    select.select([pidfd], [], [], wait_s)  # readable once the namespace's init has exited


# --------------------------------------------------------------------------- availability
_AVAILABLE = False

_USERNS_HINT = (
    "user namespaces look disabled: check `sysctl kernel.unprivileged_userns_clone` (Debian: 1), "
    "`sysctl user.max_user_namespaces` (> 0) and, on Ubuntu 24.04+, "
    "`sysctl kernel.apparmor_restrict_unprivileged_userns` (0, or an AppArmor profile for bwrap); "
    "in a container, run it with --privileged or a seccomp profile that allows unshare/clone")


def check_available() -> None:
    """Raise :class:`SandboxUnavailable` naming the cause unless a sandboxed ``true`` runs here."""
    global _AVAILABLE
    if _AVAILABLE:
        return
    with tempfile.TemporaryDirectory(prefix="rlcourse-sandbox-check-") as scratch:
        try:
            result = run_sandboxed(["true"], Path(scratch), SandboxLimits(wall_s=60))
        except SandboxUnavailable:
            raise
        except SandboxError as e:
            msg = str(e)
            hint = ""
            if any(s in msg for s in ("namespace", "uid map", "uid_map", "unshare", "Operation not permitted")):
                hint = "; " + (_USERNS_HINT if os.geteuid() != 0 else
                               "running as root, so the kernel or the container forbids new namespaces "
                               "(a container needs CAP_SYS_ADMIN, e.g. --privileged)")
            raise SandboxUnavailable(f"bubblewrap is installed but cannot run here: {msg}{hint}") from e
    if not result.ok:
        raise SandboxUnavailable(f"a sandboxed `true` failed (exit {result.returncode}, "
                                 f"reason {result.reason}): {result.stderr.strip()}")
    _AVAILABLE = True
