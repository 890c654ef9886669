"""Runs a command and records when it ran and what CPU it used, for bench/run.sh.

Usage: python3 bench/procio.py OUT CMD [ARG...]

Writes one line to OUT once CMD has exited:

    start_ns end_ns user_s sys_s

start_ns and end_ns are the wall clock (ns since the epoch, as `date +%s%N`) just before CMD is
started and as soon as it has exited, so processes that end in parallel each get their own end;
user_s and sys_s are the CPU seconds of CMD and of every descendant it waited for (as GNU time
%U %S report them). SIGTERM, SIGINT and SIGHUP are passed on to CMD. Exits with CMD's status
(128 + signal number when a signal ended it).

Peak RSS is not taken from here: a child forked by Python starts with Python's pages counted
(~14 MB), so bench/run.sh puts GNU time (a small C program) right above the measured program.
"""

import os
import signal
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out, cmd = sys.argv[1], sys.argv[2:]
    start = time.time_ns()
    child = subprocess.Popen(cmd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    while True:
        try:
            _, status, usage = os.wait4(child.pid, 0)
            break
        except InterruptedError:
            continue
    end = time.time_ns()
    child.returncode = 0  # reaped here, not by Popen
    with open(out, "w", encoding="ascii") as f:
        f.write(f"{start} {end} {usage.ru_utime:.3f} {usage.ru_stime:.3f}\n")
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
