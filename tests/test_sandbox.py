"""The bubblewrap sandbox (rlcourse.grading.sandbox): what a submission cannot do inside it.

Every test runs a small hostile program with :func:`run_sandboxed` and checks, from outside,
that it was stopped or saw nothing: no network, read-only environment and course package,
hidden solutions and pins, capped memory / CPU / processes / file size / output / wall time,
nothing left running afterwards; and that what grading needs works: the scratch directory,
torch, and a notebook executed by nbclient with its kernel.

bubblewrap comes from ``apt-get install bubblewrap`` (the Makefile's ``sysdeps``). These tests
skip only where it cannot be installed (no apt-get, outside CI); under CI, or wherever apt-get
could install it, a missing or unusable bubblewrap fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlcourse.grading import sandbox
from rlcourse.grading.sandbox import SandboxLimits, SandboxUnavailable, run_sandboxed

from browser_helpers import processes_mentioning

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SMALL = SandboxLimits(memory_mb=1024, cpu_s=30, nproc=64, fsize_mb=64, output_bytes=1 << 20, wall_s=60)


@pytest.fixture(scope="module", autouse=True)
def bwrap_works() -> None:
    """Fail (CI, or apt-get could install it) or skip (nowhere to install it) without a sandbox."""
    try:
        sandbox.check_available()
    except SandboxUnavailable as e:
        if os.environ.get("CI") or (shutil.which("apt-get") and shutil.which("bwrap") is None):
            pytest.fail(f"the sandbox cannot run: {e}")
        pytest.skip(f"the sandbox cannot run here: {e}")


def run_py(code: str, scratch: Path, limits: SandboxLimits = SMALL, **kw) -> sandbox.SandboxResult:
    return run_sandboxed([PY, "-c", textwrap.dedent(code)], scratch, limits, **kw)


# --------------------------------------------------------------------------- who and where
def test_unprivileged_uid_no_capabilities(tmp_path: Path) -> None:
    r = run_py("""
        import os
        status = dict(l.split(":", 1) for l in open("/proc/self/status"))
        print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups(),
              status["CapEff"].strip(), status["CapBnd"].strip(), status["NoNewPrivs"].strip(), os.getsid(0) == os.getpid())
    """, tmp_path)
    assert r.ok, r.stderr
    uid, euid, gid, groups, cap_eff, cap_bnd, nnp, _ = r.stdout.split(maxsplit=7)
    assert int(uid) != 0 and int(euid) != 0 and int(gid) != 0 and int(uid) == r.uid
    assert int(cap_eff, 16) == 0
    assert nnp == "1"
    if os.geteuid() == 0:  # the bounding set too: setpriv dropped it
        assert int(cap_bnd, 16) == 0


def test_pid_namespace_shows_only_the_sandbox(tmp_path: Path) -> None:
    r = run_py("import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))", tmp_path)
    assert r.ok, r.stderr
    assert len(json.loads(r.stdout)) <= 4  # bubblewrap's init, prlimit/python (same pid after exec)


def test_environment_is_minimal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLCOURSE_TEST_SECRET", "hunter2")
    r = run_py("import json, os; print(json.dumps(dict(os.environ)))", tmp_path, env={"EXTRA": "1"})
    assert r.ok, r.stderr
    env = json.loads(r.stdout)
    assert "RLCOURSE_TEST_SECRET" not in env and "hunter2" not in r.stdout
    assert env["HOME"] == sandbox.SCRATCH and env["MPLBACKEND"] == "Agg" and env["OMP_NUM_THREADS"] == "1"
    assert env["EXTRA"] == "1"
    assert env["PATH"].split(":")[0] == str(Path(PY).absolute().parent)


# --------------------------------------------------------------------------- network
def test_no_network_not_even_the_hosts_loopback(tmp_path: Path) -> None:
    """Only an isolated ``lo``: a server on the host's 127.0.0.1 is unreachable, no routes, no DNS.

    (No connection to an outside address is attempted: if the sandbox were broken, that would
    send traffic off this machine.)
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        r = run_py(f"""
            import socket
            print(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
            print(len(open("/proc/net/route").readlines()) - 1)
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5)
                print("connected")
            except OSError as e:
                print("refused", e.errno)
            try:
                socket.getaddrinfo("pypi.org", 443)
                print("resolved")
            except OSError:
                print("no dns")
        """, tmp_path)
    finally:
        server.close()
    assert r.ok, r.stderr
    ifaces, routes, connect, dns = r.stdout.splitlines()
    assert json.loads(ifaces.replace("'", '"')) == ["lo"]
    assert routes == "0"
    assert connect.startswith("refused")
    assert dns == "no dns"


# --------------------------------------------------------------------------- files
def test_environment_and_course_are_read_only(tmp_path: Path) -> None:
    site = next(p for p in sys.path if p.endswith("site-packages"))
    package = Path(sandbox.__file__).resolve().parents[1]
    targets = [f"{site}/evil.pth", f"{package}/evil.py", f"{package}/grading/evil.py", f"{REPO}/evil.txt",
               f"{Path(sys.base_prefix)}/evil.txt", "/usr/evil.txt", "/evil.txt", "/etc/evil.txt"]
    r = run_py(f"""
        import errno, json
        out = {{}}
        for path in {targets!r}:
            try:
                open(path, "w").write("x")
                out[path] = "written"
            except OSError as e:
                out[path] = errno.errorcode[e.errno]
        try:
            open({str(package / "__init__.py")!r}, "a").write("x")
            out["append"] = "written"
        except OSError as e:
            out["append"] = errno.errorcode[e.errno]
        print(json.dumps(out))
    """, tmp_path)
    assert r.ok, r.stderr
    out = json.loads(r.stdout)
    assert all(v in ("EROFS", "EACCES") for v in out.values()), out
    assert not any(Path(t).exists() for t in targets)


def test_solutions_autograder_and_git_are_hidden(tmp_path: Path) -> None:
    secrets = [REPO / "solutions", REPO / "autograder" / "pinned_metrics.json", REPO / "autograder", REPO / ".git",
               REPO / "tests", REPO / "labs", REPO / "pyproject.toml"]
    present = [p for p in secrets if p.exists()]
    assert REPO / "solutions" in present and REPO / "autograder" / "pinned_metrics.json" in present
    r = run_py(f"""
        import json, os
        out = {{}}
        for path in {[str(p) for p in present]!r}:
            try:
                out[path] = os.listdir(path) if os.path.isdir(path) else open(path).read()[:20]
            except OSError as e:
                out[path] = type(e).__name__
        print(json.dumps({{"found": out, "repo": sorted(os.listdir({str(REPO)!r}))}}))
    """, tmp_path)
    assert r.ok, r.stderr
    out = json.loads(r.stdout)
    assert all(v == "FileNotFoundError" for v in out["found"].values()), out
    assert set(out["repo"]) <= {"rlcourse", Path(sys.prefix).name}, out["repo"]
    # and the listing says so
    dests = {m.dest for m in sandbox.mount_table()}
    assert not any(str(p) in dests for p in present)


def test_scratch_is_writable_and_seen_outside(tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("given")
    marker = uuid.uuid4().hex
    r = run_py(f"""
        import os
        assert os.getcwd() == {sandbox.SCRATCH!r} and os.environ["HOME"] == os.getcwd()
        os.makedirs("sub", exist_ok=True)
        open("sub/result.json", "w").write(open("input.txt").read() + " back")
        open("/tmp/{marker}", "w").write("private tmp")
        open("/dev/shm/{marker}", "w").write("private shm")
        open("setuid", "w").write("#!/bin/sh\\nid\\n")
        os.chmod("setuid", 0o6755)
        print("ok")
    """, tmp_path)
    assert r.ok, r.stderr
    assert (tmp_path / "sub" / "result.json").read_text() == "given back"
    # owned by the caller again, so a later step (or the next run's different uid) has no surprise
    assert {p.stat().st_uid for p in [tmp_path, *tmp_path.rglob("*")]} == {os.geteuid()}
    assert not Path(f"/tmp/{marker}").exists() and not Path(f"/dev/shm/{marker}").exists()
    assert (tmp_path / "setuid").stat().st_mode & 0o7777 == 0o755  # never a set-uid file of the caller


def test_extra_ro_paths_are_visible_read_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "inputs.json").write_text("[1, 2]")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    r = run_py(f"""
        import errno
        print(open({str(data / "inputs.json")!r}).read())
        try:
            open({str(data / "new")!r}, "w")
        except OSError as e:
            print(errno.errorcode[e.errno])
    """, scratch, extra_ro=[data])
    assert r.ok, r.stderr
    assert r.stdout.split() == ["[1,", "2]", "EROFS"]


# --------------------------------------------------------------------------- limits
def test_memory_bomb_is_stopped(tmp_path: Path) -> None:
    r = run_py("""
        chunks = []
        while True:
            chunks.append(bytearray(64 << 20))
    """, tmp_path, SandboxLimits(memory_mb=512, cpu_s=30, wall_s=60))
    assert r.returncode != 0 and r.reason == "memory" and r.killed_by_limit, r
    assert "MemoryError" in r.stderr


def test_infinite_loop_is_stopped_by_the_cpu_limit(tmp_path: Path) -> None:
    r = run_py("while True: pass", tmp_path, SandboxLimits(cpu_s=1, wall_s=60))
    assert r.reason == "cpu" and r.returncode == 128 + signal.SIGXCPU and not r.timed_out, r


def test_wall_clock_timeout(tmp_path: Path) -> None:
    r = run_sandboxed(["sleep", "60"], tmp_path, SandboxLimits(wall_s=1))
    assert r.timed_out and r.reason == "wall" and r.returncode is None and r.killed_by_limit
    assert r.seconds < 15
    assert not sandbox._pids_of_uid(r.uid) or os.geteuid() != 0


def test_fork_bomb_is_stopped_and_the_machine_stays_usable(tmp_path: Path) -> None:
    marker = f"forkbomb-{uuid.uuid4().hex}"
    nproc = 24
    r = run_py(f"""
        import os, sys, time
        refused = 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            try:
                if os.fork() == 0:      # every child forks on, forever
                    while True:
                        try:
                            os.fork()
                        except OSError:
                            time.sleep(0.01)
            except OSError:
                refused += 1
                time.sleep(0.001)
        alive = sum(1 for p in os.listdir("/proc") if p.isdigit())
        print(refused, alive)
    """, tmp_path, SandboxLimits(nproc=nproc, cpu_s=30, wall_s=60), env={"MARKER": marker})
    assert r.ok, r.stderr
    refused, alive = map(int, r.stdout.split())
    assert refused > 0
    assert alive <= nproc + 2  # the limit's tasks + bubblewrap's init (root: not the run's uid)
    if os.geteuid() == 0:
        assert sandbox._pids_of_uid(r.uid) == [] and r.leftover_killed == 0
    t = time.monotonic()
    subprocess.run(["true"], check=True)
    assert time.monotonic() - t < 5


SLEEPER = "import sys, time; time.sleep(1000)  # argv[1] is the marker the test looks for\n"


def test_nothing_started_inside_survives_the_run(tmp_path: Path) -> None:
    """Background jobs, nohup, a double fork, setsid and a daemonized Python all die with the run."""
    marker = f"survivor{uuid.uuid4().hex}"
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    (tmp_path / "daemon.py").write_text(textwrap.dedent("""
        import os, sys, time
        if os.fork():
            sys.exit(0)
        os.setsid()
        if os.fork():
            sys.exit(0)
        os.closerange(0, 3)
        time.sleep(1000)
    """))
    (tmp_path / "start.sh").write_text(textwrap.dedent(f"""
        nohup {PY} sleeper.py {marker}-nohup >/dev/null 2>&1 &
        ( setsid {PY} sleeper.py {marker}-setsid >/dev/null 2>&1 & ) &
        ( ( {PY} sleeper.py {marker}-double & ) & ) >/dev/null 2>&1
        {PY} daemon.py {marker}-daemon
        sleep 1
        grep -l '{marker}-[a-z]' /proc/[0-9]*/cmdline 2>/dev/null | wc -l  # not grep itself
    """))
    # run by path, so that no process of the test's own has the marker on its command line
    r = run_sandboxed(["sh", "start.sh"], tmp_path, SMALL)
    assert r.ok, r
    assert int(r.stdout) == 4, "the background processes were not all running inside"
    assert r.seconds < 30  # the run ended with its main process, not when the sleeps would
    assert processes_mentioning(marker) == []


def test_caller_killed_takes_the_sandbox_with_it(tmp_path: Path) -> None:
    """A grader that dies (SIGKILL) takes its sandbox along: bubblewrap's parent-death signal."""
    marker = f"orphan{uuid.uuid4().hex}"
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    (tmp_path / "start.sh").write_text(f"{PY} sleeper.py {marker}-bg &\n{PY} sleeper.py {marker}-fg\n")
    caller = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from rlcourse.grading.sandbox import run_sandboxed, SandboxLimits
        run_sandboxed(["sh", "start.sh"], Path({str(tmp_path)!r}), SandboxLimits(wall_s=300))
    """)])
    try:
        deadline = time.monotonic() + 60
        while len(processes_mentioning(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(processes_mentioning(marker)) == 2, "the sandboxed sleepers never started"
        caller.kill()
        caller.wait()
        deadline = time.monotonic() + 20
        while processes_mentioning(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_mentioning(marker) == []
    finally:
        caller.kill()
        for pid in processes_mentioning(marker):
            os.kill(pid, signal.SIGKILL)


def test_gigabytes_of_output_are_capped(tmp_path: Path) -> None:
    t = time.monotonic()
    r = run_py("""
        import sys
        line = "x" * 1023 + "\\n"
        for _ in range(4 << 20):  # 4 GiB
            sys.stdout.write(line)
            sys.stderr.write(line)
    """, tmp_path, SandboxLimits(output_bytes=1 << 20, wall_s=60))
    assert r.output_truncated and r.reason == "output" and r.killed_by_limit, r.reason
    assert r.output_bytes <= (1 << 20) + 3 * 65536
    assert len(r.stdout) <= 65536 and len(r.stderr) <= 65536
    assert time.monotonic() - t < 30


@pytest.mark.parametrize("writer", ["python", "shell"])
def test_huge_file_is_stopped_by_fsize(tmp_path: Path, writer: str) -> None:
    limits = SandboxLimits(fsize_mb=8, wall_s=60)
    if writer == "python":  # Python ignores SIGXFSZ: the write raises EFBIG
        r = run_py("""
            with open("big", "wb") as f:
                for _ in range(1024):
                    f.write(bytes(1 << 20))
        """, tmp_path, limits)
    else:  # head is killed by SIGXFSZ
        r = run_sandboxed(["sh", "-c", "head -c 1G /dev/zero > big"], tmp_path, limits)
    assert r.reason == "fsize" and r.killed_by_limit, r
    assert (tmp_path / "big").stat().st_size <= 8 << 20


def test_filling_the_scratch_directory_is_stopped(tmp_path: Path) -> None:
    # Many files, each under the per-file limit: only the total cap can stop this.
    limits = SandboxLimits(fsize_mb=8, scratch_mb=32, wall_s=60)
    t = time.monotonic()
    r = run_py("""
        for i in range(10_000):
            with open(f"part{i}", "wb") as f:
                f.write(bytes(4 << 20))
    """, tmp_path, limits)
    assert r.reason == "disk" and r.killed_by_limit, r
    written = sum(p.stat().st_size for p in tmp_path.glob("part*"))
    assert 32 << 20 < written < 4 << 30, written  # stopped within a check interval, far from the 40 GB
    assert time.monotonic() - t < 30


def test_scratch_file_count_and_a_hidden_folder_are_stopped(tmp_path: Path) -> None:
    (tmp_path / "many").mkdir()
    (tmp_path / "hidden").mkdir()
    many = run_py("""
        import os
        os.mkdir("d")
        for i in range(100_000):
            open(f"d/{i}", "w").close()
    """, tmp_path / "many", SandboxLimits(scratch_files=1000, wall_s=60))
    assert many.reason == "disk", many
    assert 1000 < len(os.listdir(tmp_path / "many" / "d")) < 100_000
    # A folder the check cannot read ends the run, except for a root grader, who reads it anyway.
    hidden = run_py("""
        import os, time
        os.mkdir("hide")
        os.chmod("hide", 0)
        time.sleep(3)
    """, tmp_path / "hidden", SandboxLimits(wall_s=60))
    assert hidden.ok if os.geteuid() == 0 else hidden.reason == "disk", hidden


def test_a_run_within_the_scratch_caps_is_untouched(tmp_path: Path) -> None:
    r = run_py("""
        for i in range(20):
            with open(f"part{i}", "wb") as f:
                f.write(bytes(1 << 20))
    """, tmp_path, SandboxLimits(scratch_mb=32, wall_s=60))
    assert r.ok, r


# --------------------------------------------------------------------------- what grading needs
def test_concurrent_runs_get_their_own_uid(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a uid per run needs root; a user's sandboxes share uid 65534 in their user namespaces")
    dirs = [tmp_path / str(i) for i in range(3)]
    for d in dirs:
        d.mkdir()
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda d: run_sandboxed(["sh", "-c", "sleep 0.5; id -u"], d, SMALL), dirs))
    assert all(r.ok for r in results)
    uids = {int(r.stdout) for r in results}
    assert len(uids) == 3 and uids == {r.uid for r in results}


def test_torch_works_inside(tmp_path: Path) -> None:
    r = run_py("""
        import torch
        x = torch.arange(6.0).reshape(2, 3)
        torch.save({"y": x @ x.T}, "y.pt")
        print(torch.get_num_threads())
    """, tmp_path, SandboxLimits(wall_s=300))
    assert r.ok, r.stderr
    assert r.stdout.strip() == "1"
    import torch

    y = torch.load(tmp_path / "y.pt", weights_only=True)["y"]
    assert torch.equal(y, torch.tensor([[5.0, 14.0], [14.0, 50.0]]))


@pytest.mark.slow
def test_nbclient_executes_a_notebook_inside(tmp_path: Path) -> None:
    """The next step's proof: a notebook runs inside, its kernel over the sandbox's loopback."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import json, os, torch\n"
                                  "x = float(torch.arange(4.0).sum())\n"
                                  "json.dump({'x': x, 'uid': os.getuid()}, open('outputs.json', 'w'))\n"
                                  "print(x)"),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([0, 1]); plt.savefig('fig.png')"),
    ]
    nbformat.write(nb, tmp_path / "submission.ipynb")
    runner = """
        import nbformat
        from nbclient import NotebookClient
        nb = nbformat.read("submission.ipynb", as_version=4)
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
        nbformat.write(nb, "executed.ipynb")
    """
    r = run_py(runner, tmp_path, SandboxLimits(wall_s=300))
    assert r.ok, r.stderr
    out = json.loads((tmp_path / "outputs.json").read_text())
    assert out["x"] == 6.0 and out["uid"] == r.uid != 0
    executed = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "6.0\n"
    assert (tmp_path / "fig.png").stat().st_size > 0
    assert sandbox._pids_of_uid(r.uid) == [] or os.geteuid() != 0  # the kernel is gone too


def test_overhead_per_run_is_small(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    direct = statistics.median(timed(lambda: subprocess.run([PY, "-c", "pass"], check=True)) for _ in range(3))
    boxed = statistics.median(timed(lambda: run_sandboxed([PY, "-c", "pass"], tmp_path, SMALL)) for _ in range(3))
    with capsys.disabled():
        print(f"\n[sandbox] python -c pass: direct {direct * 1000:.0f} ms, sandboxed {boxed * 1000:.0f} ms, "
              f"overhead {(boxed - direct) * 1000:.0f} ms")
    assert boxed - direct < 1.0


# --------------------------------------------------------------------------- clear errors
def test_missing_bwrap_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed-here")
    monkeypatch.setattr(sandbox, "_AVAILABLE", False)
    with pytest.raises(SandboxUnavailable, match=r"bubblewrap.*apt-get install -y bubblewrap"):
        sandbox.check_available()


def test_disabled_user_namespaces_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely because the "
                    "kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox, "BWRAP", str(fake))
    monkeypatch.setattr(sandbox, "_AVAILABLE", False)
    with pytest.raises(SandboxUnavailable, match=r"cannot run here.*No permissions to creating new namespace.*"
                                                 r"(user namespaces|new namespaces)"):
        sandbox.check_available()
