"""kfp.local's output during `entgan run`: a quiet view of it (progress lines kept, the executors'
JSON hidden but kept for a failure) and a work-around for its logging races between threads."""

from __future__ import annotations

import builtins
import collections
import contextlib
import io
import logging
import re
import sys
import threading

from entgan.job.user_input import CliError


class TaskFailed(CliError):
    """A pipeline task failed: its own error as one line; `log` keeps the tail of the run's
    output (with the task's traceback) for --debug."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


class QuietStdout(io.TextIOBase):
    """Shows EntGAN's progress lines and kfp.local's task status; hides the KFP executor's JSON
    dumps. The hidden tail is kept and shown if the run fails."""

    KEEP = ("[entgan ", "Executing task", "finished with status", "Running pipeline")
    # The last line of a Python traceback: `entgan.job.data.DataError: edge-1/box/x.png: cannot read image`.
    ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)): (.+)$")

    def __init__(self, target, progress=None) -> None:
        self.target, self.partial, self.progress = target, "", progress
        # kfp.local's parallel tasks are threads that print into this one object: `partial` and
        # the progress counts are shared, so one write at a time.
        self.lock = threading.Lock()
        self.hidden: collections.deque[str] = collections.deque(maxlen=80)
        self.error_lines: list[str] = []  # exception lines the tasks printed, in order

    def write(self, text: str) -> int:
        with self.lock:
            self._write(text)
        return len(text)

    def _write(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            keep = any(k in line for k in self.KEEP)
            if self.ERROR_LINE.match(line.strip()):
                self.error_lines.append(line.strip())
                keep = True
            if self.progress is not None:
                self.progress.line(line.strip(), show=keep)
            elif keep:
                self.target.write(line.strip() + "\n")
                self.target.flush()
            if not keep:
                self.hidden.append(line)

    def failure(self, err: Exception) -> TaskFailed:
        """One line for a failed run: the failed task and its own error (without the traceback)."""
        from entgan.local.progress import ANSI

        failed = re.findall(r"Inner task failed: (.+?)\.?$", ANSI.sub("", str(err)))
        where = f"task {failed[0].split(' inside ')[0]} failed" if failed else "the pipeline failed"
        cause = self.ERROR_LINE.match(self.error_lines[-1]).group(3) if self.error_lines else ANSI.sub("", str(err))
        return TaskFailed(f"{where}: {cause} (the task's log is above; rerun with -v for the full log "
                          "or --debug for the traceback)", "\n".join(self.hidden))

    def flush(self) -> None:
        self.target.flush()


@contextlib.contextmanager
def thread_safe_kfp_logging():
    """Work around a race in kfp.local (2.17): every task swaps the root logger's handlers in
    and out (`logging_utils.local_logger_context`), and two edge tasks run in threads. When one
    task restores the handlers (`clear()`, then `addHandler`) at the moment the other logs
    "Task ... finished", that line goes to no handler and is lost: the progress bar ends short
    and counts from the log are wrong. While a run is in progress, this swaps in a version that
    installs kfp's handler once, for as long as any task is inside it.

    The same race in `logging_utils.indented_print` (each task swaps `builtins.print` for a
    wrapper that indents and calls the print it found) is worse: when two tasks overlap, the
    later one restores the earlier one's wrapper, which stays installed, and the next tasks wrap
    it again. Each wrapper calls the one below it twice (the indent, then the text), so a print
    costs 2**depth writes: after enough overlaps a run spins on indentation (seen in CI: 14
    leaked wrappers, a test hung for 20 minutes). Here one print wrapper is installed for the run
    and the indent is per thread."""
    from kfp.local import logging_utils

    lock, depth, saved = threading.Lock(), [0], {}

    @contextlib.contextmanager
    def shared_context():
        root = logging.getLogger()
        with lock:
            if depth[0] == 0:
                saved.update(level=root.level, handlers=root.handlers[:])
                handler = logging.StreamHandler(sys.stdout)
                handler.setFormatter(logging_utils.MillisecondFormatter(
                    fmt="%(asctime)s - %(levelname)s - %(message)s", datefmt="%H:%M:%S.%f"))
                root.handlers = [handler]  # one assignment: a thread logging now sees old or new
                root.setLevel(logging.INFO)
            depth[0] += 1
        try:
            yield
        finally:
            with lock:
                depth[0] -= 1
                if depth[0] == 0:
                    root.handlers = saved["handlers"]
                    root.setLevel(saved["level"])

    this_thread, builtin_print = threading.local(), builtins.print

    def print_indented(*args, **kwargs):
        indent = getattr(this_thread, "indent", 0)
        if indent:  # in the same write as the text, so that parallel tasks' lines do not interleave
            args = (" " * indent + (str(args[0]) if args else ""), *args[1:])
        return builtin_print(*args, **kwargs)

    @contextlib.contextmanager
    def indented_print(num_spaces: int = 4):
        this_thread.indent = getattr(this_thread, "indent", 0) + num_spaces
        try:
            yield
        finally:
            this_thread.indent -= num_spaces

    originals = logging_utils.local_logger_context, logging_utils.indented_print
    logging_utils.local_logger_context, logging_utils.indented_print = shared_context, indented_print
    builtins.print = print_indented
    try:
        yield
    finally:
        builtins.print = builtin_print
        logging_utils.local_logger_context, logging_utils.indented_print = originals
