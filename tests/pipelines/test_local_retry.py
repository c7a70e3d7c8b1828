"""kfp.local honours the retries the pipeline sets: a task whose first try dies runs again.

Real parts: kfp.local's SubprocessRunner running a real (tiny) pipeline, with the retry setting
made by the pipeline's own `_retry`. (On the backend the same setting becomes Argo's
retryStrategy: tests/pipelines/test_compile.py checks it in the compiled IR.)
"""

from pathlib import Path

import pytest
from kfp import dsl

from entgan.steps.deadlines import Deadlines
from pipelines.entgan_pipeline import _retry


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fails_once(marker: str) -> str:
    """Dies on its first try (as a pod killed by OOM would), succeeds on the next."""
    import os

    if not os.path.exists(marker):
        open(marker, "w").close()
        raise SystemExit("first try: killed")
    return "second try"


def _pipeline(retried: bool):
    @dsl.pipeline(name="flaky")
    def flaky(marker: str) -> str:
        task = fails_once(marker=marker).set_caching_options(False)
        if retried:
            _retry(task, Deadlines(backoff_s=1, backoff_max_s=1))
        return task.output

    return flaky


def test_a_task_that_dies_once_is_retried_and_succeeds(local_runner):
    marker = local_runner / "tried"
    assert _pipeline(retried=True)(marker=str(marker)).output == "second try"
    assert marker.exists()


def test_without_the_retry_the_same_task_fails_the_run(local_runner):
    with pytest.raises(RuntimeError):
        _pipeline(retried=False)(marker=str(local_runner / "tried"))
    assert Path(local_runner / "tried").exists()
