"""Child processes that cannot outlive the process that started them, and daemon command lines.

**Bound to the parent (Linux).** :func:`bound_to_parent` prefixes a command line with
``python -P -m eddl.childproc PID --``: that small launcher sets ``PR_SET_PDEATHSIG`` (SIGKILL)
with ``prctl``, checks that ``getppid()`` is still ``PID`` (the parent may have died between the
fork and the ``prctl``; then it exits without starting anything), unblocks every signal and
``exec``s the real command, which keeps the death signal: the kernel kills it when its parent
dies, even by SIGKILL, where no cleanup code of the parent can run. An exec launcher rather than
``subprocess``'s ``preexec_fn``, because ``preexec_fn`` runs Python in a forked copy of a process
that may hold gRPC threads, which the subprocess documentation calls unsafe. SIGKILL rather than
SIGTERM: nobody is left to wait for a graceful stop, and the leader's store survives a kill
(one SQLite transaction per call).

Caution: for the kernel, the parent is the *thread* that forked the child; the signal is sent
when that thread ends, even if the process lives on. Start bound children from a thread that
lives as long as they should: the main thread, or a dedicated one
(:class:`eddl.cluster.local.LocalCluster` keeps one for the cluster's lifetime). On other systems
there is no such call and the command runs unchanged.

**Daemons that the working directory cannot shadow.** :func:`python_module` runs a module with
this interpreter as ``python -P -m MODULE``: ``-P`` (Python 3.11) keeps the current folder off
``sys.path``, so started inside a source checkout, the installed ``eddl`` is imported and not the
checkout's ``eddl/`` folder (which lacks the ``package-dir`` mapped ``eddl.leader``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["PARENT_GONE", "PDEATHSIG_SUPPORTED", "bound_to_parent", "main", "python_module"]

PDEATHSIG_SUPPORTED = sys.platform.startswith("linux")
_PR_SET_PDEATHSIG = 1
# Exit status of the launcher when its parent died before the death signal was armed.
PARENT_GONE = 125


def python_module(module: str, *args: str, python: str = "") -> list[str]:
    """``python -P -m module args...`` with ``python``, by default this interpreter (no console
    script on PATH needed)."""
    return [python or sys.executable, "-P", "-m", module, *args]


def bound_to_parent(argv: Sequence[str], parent_pid: int | None = None) -> list[str]:
    """``argv`` run so that it is killed when this process (``parent_pid``) dies; unchanged
    where the system has no parent-death signal."""
    if not argv:
        raise ValueError("an empty command line")
    if not PDEATHSIG_SUPPORTED:
        return list(argv)
    pid = os.getpid() if parent_pid is None else parent_pid
    return python_module("eddl.childproc", str(pid), "--", *argv)


def _arm_death_signal() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -P -m eddl.childproc PARENT_PID -- COMMAND...``: arm, check, exec."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        print("usage: python -m eddl.childproc PARENT_PID -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent, command = int(args[0]), args[2:]
    _arm_death_signal()
    if os.getppid() != parent:
        return PARENT_GONE  # the parent died before the signal was armed: start nothing
    # A mask blocked in the parent's thread would be inherited by the command through exec.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # Python ignores these at start-up, and an ignored signal stays ignored through exec.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"eddl.childproc: cannot run {command[0]}: {exc}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main())
