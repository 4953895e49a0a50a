"""golf's steps as child processes (torchrun when nproc > 1): launched, their output relayed with a
progress line, their error said in one line (docs/working.md)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from golf.paths import child_env, project_root
from golf.runtime import GolfError

# --- child processes ---------------------------------------------------------------------------

# A tqdm bar of golf's: "eval ttt:  40%|...", training's "train:  50% of budget|...".
PROGRESS_BAR = re.compile(r"\d+%( of budget)?\|")
# A child's error as it says it: golf's own line, argparse's ("golf train: error: ..."), or a traceback's
# last line (torch._C._LinAlgError: ...); the last such line wins.
_ERROR_LINE = re.compile(r"^(golf( [\w-]+)?: (error|interrupted): .*|[\w.]*(Error|Exception|Interrupt)\b.*)$")


class _Progress:
    """Shows a child's output: in a kernel, its log lines in one block and its tqdm bar as one line below
    it, both updated in place (no frozen bar lines); on a console, lines as they come and the bar on one
    line redrawn with \\r."""

    def __init__(self, echo: bool):
        self.echo, self.last = echo, 0.0
        self.error: str | None = None  # the child's last error line
        self.lines: list[str] = []
        self.log_handle = self.bar_handle = None
        try:
            from IPython import get_ipython
            self.in_kernel = get_ipython() is not None
        except ImportError:
            self.in_kernel = False

    def _show(self, bar: str | None = None) -> None:
        """In a kernel: the log block and the bar line, each one display updated in place."""
        from IPython.display import display

        logs = {"text/plain": "\n".join(self.lines)}
        if self.log_handle is None:  # the log block first, the bar always below it
            self.log_handle = display(logs, raw=True, display_id=True)
            self.bar_handle = display({"text/plain": bar or ""}, raw=True, display_id=True)
        elif bar is None:
            self.log_handle.update(logs, raw=True)
        else:
            self.bar_handle.update({"text/plain": bar}, raw=True)

    def bar(self, text: str, final: bool = False) -> None:
        if not self.echo:
            return
        if not text.strip():  # tqdm clearing a finished bar (leave=False): no stale bar line stays
            if self.in_kernel and self.bar_handle is not None:
                self.bar_handle.update({"text/plain": ""}, raw=True)
            return
        now = time.monotonic()
        if not final and now - self.last < 1.0:
            return
        self.last = now
        if self.in_kernel:
            self._show(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).strip())
        else:
            print("\r" + text.strip(), end="", file=sys.stderr, flush=True)

    def line(self, text: str) -> None:
        if not self.echo:
            return
        if self.in_kernel:
            self.lines.append(text.rstrip())
            self._show()
            return
        if self.last:
            print(file=sys.stderr)
        print(text, flush=True)
        self.last = 0.0  # the next bar starts below this line


# torchrun, made to die with its parent first (its ranks, golf processes, die with torchrun)
_TORCHRUN = "from golf.launch import torchrun_main; torchrun_main()"


def torchrun_main() -> None:
    """torchrun for golf's steps. A rank that fails has said why in its own error line; torchrun's
    traceback, failure table and notices would bury it (and its ``ChildFailedError`` line would be
    taken for the error), so they stay out: it exits with the first failed rank's code, naming the
    rank only when a signal ended it (a kill leaves no line of its own)."""
    import logging
    import signal

    from golf.runtime import die_with_parent

    die_with_parent()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its notice
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(sys.argv[1:]))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            print(f"golf: error: rank {rank} was ended by {name}", file=sys.stderr, flush=True)
        sys.exit(code if code > 0 else 1)


def golf_command(args: list[str], nproc: int = 1) -> list[str]:
    if nproc > 1:
        return [sys.executable, "-c", _TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "-m", "golf", *args]
    return [sys.executable, "-m", "golf", *args]


def _stop(proc: subprocess.Popen, first: int) -> None:
    """Signal the child's process group (torchrun and its ranks too), then kill what is left after 30 s."""
    import signal

    for sig, wait in ((first, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _relay(proc: subprocess.Popen, log_fh, progress: "_Progress") -> None:
    """Copy the child's output to its log and the console (bars on one line) until it ends; the last
    error line it printed is kept in ``progress.error``."""
    pending = ""
    while data := proc.stdout.read1(4096):  # bytes: text mode would turn tqdm's \r into \n
        chunk = data.decode(errors="replace")
        if log_fh:
            log_fh.write(chunk)
            log_fh.flush()
        # tqdm ends each update with \r; a log line ends with \n
        parts = re.split(r"(\r|\n)", pending + chunk)
        pending = parts[-1]
        for text, sep in zip(parts[0:-1:2], parts[1::2]):
            if sep == "\r":
                progress.bar(text)
            elif "\x1b" in text or PROGRESS_BAR.search(text):
                progress.bar(text, final=True)
            elif text.strip():
                progress.line(text)
                if _ERROR_LINE.match(text.strip()):
                    progress.error = text.strip()
    if pending.strip():
        progress.line(pending)
        if _ERROR_LINE.match(pending.strip()):
            progress.error = pending.strip()
    proc.wait()


def launch_golf(args: list[str], nproc: int = 1, log_path: str | Path | None = None, echo: bool = True) -> None:
    """Run ``golf ARGS`` (torchrun when nproc > 1) from the project root; its console goes to ``log_path``.

    Log lines are shown as they come and the progress bar as one updating line; on failure the
    error is one line naming the log, not the child's traceback.
    """
    import signal

    from golf.runtime import PARENT_PID_ENV

    cmd = golf_command(args, nproc)
    progress = _Progress(echo)
    log_fh = open(log_path, "a") if log_path else None
    env = {**child_env(), PARENT_PID_ENV: str(os.getpid())}  # the child dies with this process (die_with_parent)
    try:
        # its own process group: an interrupt or a kill reaches every process of the step, torchrun's ranks too
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                              cwd=project_root(), start_new_session=True) as proc:
            try:
                _relay(proc, log_fh, progress)
            except KeyboardInterrupt:  # Ctrl-C or the kernel's interrupt: the step stops and says what it kept
                _stop(proc, signal.SIGINT)
                _relay(proc, log_fh, progress)
                said = re.sub(r"^golf( [\w-]+)?: interrupted: ", "", progress.error or "")
                raise GolfError(f"golf {args[0]} interrupted{': ' + said if said else ''}") from None
            except BaseException:  # anything else that ends this process ends the step too
                _stop(proc, signal.SIGTERM)
                raise
            error = progress.error
    finally:
        if log_fh:
            log_fh.close()
    if proc.returncode != 0:
        where = f"; full output in {log_path}" if log_path else ""
        raise GolfError(f"golf {args[0]} failed (exit code {proc.returncode}): {error or 'see its output'}{where}")


