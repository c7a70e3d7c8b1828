"""Progress of a local run (`entgan run`) in the terminal.

kfp.local prints a line as each task starts and ends, and the tasks print EntGAN's own log lines
(`[entgan 12:00:00] edge-1 round 2/8: box step 75/150 ...`). `RunProgress` reads those lines and
keeps count of tasks, rounds, edges and local steps. `ProgressOutput` shows it: on a terminal, one
bar redrawn in place under the log lines; anywhere else (CI, a pipe, a file) plain lines, with
one progress line per finished round instead of the step lines.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status")
ROUND_DONE = re.compile(r"round (\d+)/(\d+) aggregated")
EDGE_SENT = re.compile(r"\] (\S+) round (\d+): sent")
STEP = re.compile(r"\] (\S+) round (\d+)/\d+: (\S+) step (\d+)/(\d+)")


def count_tasks(pipeline_doc: dict, num_edges: int) -> int:
    """How many tasks a run of the compiled pipeline executes when it trains: every task of every
    DAG, those inside a ParallelFor once per edge."""
    components = pipeline_doc["components"]

    def count(dag: dict, factor: int) -> int:
        total = 0
        for task in dag["tasks"].values():
            times = factor * (num_edges if "parameterIterator" in task or "artifactIterator" in task else 1)
            inner = components[task["componentRef"]["name"]].get("dag")
            total += count(inner, times) if inner else times
        return total

    return count(pipeline_doc["root"]["dag"], 1)


@dataclass
class RunProgress:
    """What a run has done so far, from its log lines (pure: no output)."""

    total_tasks: int
    rounds: int
    edges: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    running: list[str] = field(default_factory=list)
    rounds_done: int = 0
    edges_done: dict[int, int] = field(default_factory=dict)  # round -> edges that sent their update
    steps: dict[str, str] = field(default_factory=dict)  # edge -> "box 75/150" while it trains

    def feed(self, line: str) -> str | None:
        """Update from one log line; returns what happened if it ends a round ('round'), else None."""
        line = ANSI.sub("", line)
        if m := STARTED.search(line):
            self.running.append(m.group(1))
        elif m := FINISHED.search(line):
            self.done += 1
            if m.group(1) in self.running:
                self.running.remove(m.group(1))
        elif m := STEP.search(line):
            edge, _, data_type, step, steps = m.groups()
            self.steps[edge] = f"{data_type} {step}/{steps}"
        elif m := EDGE_SENT.search(line):
            self.edges_done[int(m.group(2))] = self.edges_done.get(int(m.group(2)), 0) + 1
            self.steps.pop(m.group(1), None)
        elif m := ROUND_DONE.search(line):
            self.rounds_done = int(m.group(1))
            return "round"
        return None

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def bar(self, width: int = 100) -> str:
        """One line: `[#####-----] 23/54 tasks | round 3/8 | edges 2/4 | edge-1 box 75/150 | 1:12`."""
        total = max(self.total_tasks, self.done, 1)
        filled = round(20 * self.done / total)
        parts = [f"[{'#' * filled}{'-' * (20 - filled)}] {self.done}/{total} tasks"]
        if self.rounds:
            current = min(self.rounds_done + 1, self.rounds)
            parts.append(f"round {self.rounds_done}/{self.rounds} done")
            if self.rounds_done < self.rounds:
                parts.append(f"edges {self.edges_done.get(current, 0)}/{self.edges} in round {current}")
        parts += [f"{edge} {where}" for edge, where in sorted(self.steps.items())]
        parts.append(self.elapsed())
        return " | ".join(parts)[: max(10, width - 1)]

    def summary_line(self) -> str:
        return (f"[progress] round {self.rounds_done}/{self.rounds} done, {self.done}/{self.total_tasks} tasks, "
                f"{self.elapsed()} elapsed")


def is_progress_only(line: str) -> bool:
    """Lines that only move the bar (local steps): not shown as log lines."""
    return bool(STEP.search(ANSI.sub("", line)))


class ProgressOutput:
    """Shows log lines and the progress of a run on `out`: a bar on a terminal, plain lines elsewhere."""

    def __init__(self, out, progress: RunProgress, tty: bool | None = None) -> None:
        self.out, self.progress = out, progress
        self.tty = out.isatty() if tty is None else tty

    def line(self, text: str, show: bool) -> None:
        """A log line from the run: update the counts; print it if `show` (and not a step line)."""
        event = self.progress.feed(text)
        shown = show and not is_progress_only(text)
        if self.tty:
            if shown:
                self.out.write("\r\x1b[K" + text.rstrip() + "\n")
            self.out.write("\r\x1b[K" + self.progress.bar(shutil.get_terminal_size().columns))
        else:
            if shown:
                self.out.write(ANSI.sub("", text).rstrip() + "\n")
            if event == "round":
                self.out.write(self.progress.summary_line() + "\n")
        self.out.flush()

    def close(self) -> None:
        """Clear the bar (on a terminal) so that what follows starts on a clean line."""
        if self.tty:
            self.out.write("\r\x1b[K")
            self.out.flush()
