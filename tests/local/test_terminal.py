"""The terminal: progress of `entgan run` (a bar on a TTY, plain lines elsewhere), complete
`--help` for every verb, and errors as one line with no traceback unless --debug."""

import io
from pathlib import Path

import pytest
import yaml

from entgan.cli.verbs import _parser, main
from entgan.job.spec import parse_job
from entgan.local.progress import ProgressOutput, RunProgress, count_tasks
from pipelines.entgan_pipeline import compile_job
from tests.conftest import tiny_job_dict, write_job

# What kfp.local and the tasks print during a run (colours as kfp.local writes them).
LOG = """\
18:34:18.613 - INFO - Executing task \x1b[96m'create-job'\x1b[0m
18:34:34.979 - INFO - Task \x1b[96m'create-job'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
18:35:00.967 - INFO - Executing task \x1b[96m'train-edge'\x1b[0m
18:35:00.975 - INFO - Executing task \x1b[96m'train-edge'\x1b[0m
[entgan 18:35:09] edge-1 round 1/2: training box (12 images)
[entgan 18:35:10] edge-1 round 1/2: box step 2/3 (D loss 1.31, G loss 0.70)
[entgan 18:35:10] edge-2 round 1/2: robot step 1/3 (D loss 1.40, G loss 0.69)
[entgan 18:35:18] edge-1 round 1: sent ['box/D', 'box/G', 'features'] in 9.0s
18:35:25.529 - INFO - Task \x1b[96m'train-edge'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
18:35:54.688 - INFO - Executing task \x1b[96m'aggregate'\x1b[0m
[entgan 18:36:18] round 1/2 aggregated from 2 edge(s) (entgan)
18:36:21.959 - INFO - Task \x1b[96m'aggregate'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
"""


def _feed(output: ProgressOutput) -> None:
    for line in LOG.splitlines():
        output.line(line, show=True)
    output.close()


def test_progress_counts_tasks_rounds_edges_and_steps():
    progress = RunProgress(total_tasks=16, rounds=2, edges=2)
    lines = LOG.splitlines()
    for line in lines[:7]:
        progress.feed(line)
    bar = progress.bar(width=200)
    assert bar.startswith("[#") and "1/16 tasks" in bar and "round 0/2 done" in bar
    assert "edge-1 box 2/3" in bar and "edge-2 robot 1/3" in bar
    for line in lines[7:]:
        progress.feed(line)
    bar = progress.bar(width=200)
    assert "3/16 tasks" in bar and "round 1/2 done" in bar and "edges 0/2 in round 2" in bar
    assert "edge-1 box" not in bar  # edge-1 sent its update: no longer training
    assert len(progress.bar(width=30)) <= 29  # never wider than the terminal (no wrapped redraws)


def test_on_a_terminal_one_bar_is_redrawn_under_the_log_lines():
    out = io.StringIO()
    _feed(ProgressOutput(out, RunProgress(16, 2, 2), tty=True))
    text = out.getvalue()
    assert text.count("\r\x1b[K[") >= len(LOG.splitlines())  # the bar, redrawn after every line
    assert "box step 2/3" not in text  # step lines only move the bar
    assert "round 1/2 aggregated" in text and text.endswith("\r\x1b[K")  # cleared at the end


def test_elsewhere_plain_lines_and_one_progress_line_per_round():
    out = io.StringIO()
    _feed(ProgressOutput(out, RunProgress(16, 2, 2), tty=False))
    text = out.getvalue()
    assert "\r" not in text and "\x1b[K" not in text
    assert "step 2/3" not in text and "training box" in text
    assert text.count("[progress]") == 1 and "[progress] round 1/2 done, 2/16 tasks" in text
    assert "\x1b[" not in text  # no colour codes in CI logs


def test_count_tasks_matches_the_compiled_pipeline(tmp_path):
    job = parse_job(tiny_job_dict(tmp_path, ["edge-1", "edge-2"]))  # 2 rounds
    doc = next(yaml.safe_load_all(compile_job(job, tmp_path / "p.yaml").read_text()))
    # create job, inspect x2, plan, (train x2, aggregate) x2, prepare eval, eval x2, evaluate, deploy, finish
    assert count_tasks(doc, num_edges=2) == 1 + 2 + 1 + 2 * (2 + 1) + 1 + 2 + 1 + 1 + 1
    assert count_tasks(doc, num_edges=3) - count_tasks(doc, num_edges=2) == 1 + job.train.rounds + 1


def _verbs():
    subparsers = _parser()._subparsers._group_actions[0]
    out = []
    for name, sub in subparsers.choices.items():
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        out += [(f"{name} {n}", s) for n, s in nested[0].choices.items()] if nested else [(name, sub)]
    return out


def test_help_lists_every_verb_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for verb, _ in _verbs():
        assert verb.split()[0] in out, verb
    assert "examples:" in out and "--debug" in out


@pytest.mark.parametrize("verb", [v for v, _ in _verbs()])
def test_every_verb_has_complete_help(verb, capsys):
    sub = dict(_verbs())[verb]
    assert sub.description, f"entgan {verb}: no description"
    for action in sub._actions:
        assert action.help, f"entgan {verb}: {action.option_strings or action.dest} has no help text"
    with pytest.raises(SystemExit) as exit_:
        main(verb.split() + ["--help"])
    assert exit_.value.code == 0
    assert f"usage: entgan {verb}" in capsys.readouterr().out


def test_errors_are_one_line_with_the_fix_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["status", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "nope.yaml" in err and "Traceback" not in err
    with pytest.raises(Exception):
        main(["status", str(missing), "--debug"])  # --debug after the verb works too
    with pytest.raises(Exception):
        main(["--debug", "status", str(missing)])


def test_figures_of_a_job_without_a_run_say_what_to_do(tmp_path, capsys):
    path = write_job(tmp_path / "job.yaml", tiny_job_dict(tmp_path, ["edge-1"]))
    assert main(["figures", str(path)]) == 2
    err = capsys.readouterr().err
    assert "has no champion" in err and "entgan run" in err and err.count("\n") == 1
    assert not (Path(tmp_path) / "state" / "figures").exists()



def _race(worker, threads: int) -> None:
    """Run worker(0..threads-1) in threads that switch as often as possible, to expose races."""
    import sys
    import threading

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(interval)


def test_no_task_log_line_is_lost_when_parallel_tasks_log_at_once():
    """kfp.local runs two edge tasks in threads, and each task swaps the root logger's handlers
    in and out; a 'finished' line logged while the other task restores them was lost (CI saw a
    benchmark count one task short). Inside `_thread_safe_kfp_logging` every line arrives."""
    import contextlib

    from kfp.local import logging_utils

    from entgan.cli.verbs import _thread_safe_kfp_logging

    threads, tasks = 4, 150
    out = io.StringIO()

    def worker(n: int) -> None:
        for i in range(tasks):  # as task_dispatcher does for every task
            with logging_utils.local_logger_context():
                logging_utils.logging.info(f"Task 'train-edge' finished with status SUCCESS {n}-{i}")

    with contextlib.redirect_stdout(out), _thread_safe_kfp_logging():
        with logging_utils.local_logger_context():  # the pipeline's own, around all tasks
            _race(worker, threads)
    lines = [line for line in out.getvalue().splitlines() if "finished with status" in line]
    assert len(lines) == threads * tasks
    assert logging_utils.local_logger_context.__module__ == "kfp.local.logging_utils"  # put back


def test_parallel_tasks_leave_no_print_wrapper_behind():
    """kfp.local's `indented_print` swaps `builtins.print` per task; two overlapping tasks left a
    wrapper installed, the next tasks wrapped it again, and each wrapper prints twice through the
    one below: a CI run spun on 2**14 indentation writes per line. Inside
    `_thread_safe_kfp_logging` every line is indented once, and print is put back."""
    import builtins
    import contextlib

    from kfp.local import logging_utils

    from entgan.cli.verbs import _thread_safe_kfp_logging

    threads, tasks = 4, 150
    out = io.StringIO()
    builtin_print = builtins.print

    def worker(n: int) -> None:
        for i in range(tasks):  # as task_dispatcher does around every task's subprocess output
            with logging_utils.indented_print():
                print(f"line {n}-{i}\n", end="")  # as run_local_subprocess prints each output line

    try:
        with contextlib.redirect_stdout(out), _thread_safe_kfp_logging():
            _race(worker, threads)
    finally:
        leaked, builtins.print = builtins.print, builtin_print  # never leave a test's wrapper behind
    lines = out.getvalue().splitlines()
    assert sorted(lines) == sorted(f"    line {n}-{i}" for n in range(threads) for i in range(tasks))
    assert leaked is builtin_print
    assert logging_utils.indented_print.__module__ == "kfp.local.logging_utils"  # put back
