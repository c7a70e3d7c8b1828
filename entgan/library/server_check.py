"""Check once, quickly, that a job's MLflow tracking server answers, before anything waits on it.

MLflow's own client retries an unreachable server for about four minutes per call, silently.
The CLI calls `check_tracking_server` before a pipeline starts (and before `status`, `generate`
and `figures`): a bounded number of short tries, each announced with what it is waiting for,
then one error naming the server and the fix. Only http(s) servers are checked; a local
SQLite or file store needs no server.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from typing import Callable

WAIT_ENV = "ENTGAN_MLFLOW_WAIT"  # seconds to keep trying (default 6); a cluster task may set more
DEFAULT_WAIT_S = 6.0
TRY_TIMEOUT_S = 2.0
# MLflow's client, once the server answered: a few retries, not the default ~4 minutes.
SERVER_ERRORS = (500, 502, 503, 504)  # a server that is there but failing (or a proxy before one that is down)
CLIENT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class TrackingServerUnreachable(RuntimeError):
    """The job's MLflow server did not answer; the message names it and the fix."""


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class TrackingServerFailing(TrackingServerUnreachable):
    """The job's MLflow server answers, but with a server error (5xx); the message says what it said."""


def _said(err: urllib.error.HTTPError) -> str:
    """The first line of a server error's body (what the server said), shortened."""
    try:
        body = err.read(2000).decode("utf-8", "replace").strip()
    except OSError:
        body = ""
    first = body.splitlines()[0].strip() if body else (err.reason or "no message")
    return first[:200]


def _try_once(uri: str, timeout: float) -> tuple[int, str] | None:
    """None if the server answered anything but a server error (even 401/404); else (HTTP
    status, what it said), status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except urllib.error.HTTPError as err:
        return (err.code, _said(err)) if err.code in SERVER_ERRORS else None  # an answer: something is listening
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return 0, str(getattr(reason, "strerror", None) or reason)


def check_tracking_server(
    uri: str, *, wait_s: float | None = None, say: Callable[[str], None] = _say, sleep=time.sleep
) -> None:
    """Raise TrackingServerUnreachable unless the http(s) server at `uri` answers (anything but a
    server error: TrackingServerFailing, with what it said) within
    `wait_s` seconds (default $ENTGAN_MLFLOW_WAIT or 6); every retry says what it waits for."""
    if not uri.lower().startswith(("http://", "https://")):
        return
    if wait_s is None:
        wait_s = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S))
    started, attempt = time.monotonic(), 0
    while True:
        attempt += 1
        answer = _try_once(uri, TRY_TIMEOUT_S)
        if answer is None:
            return
        status, why = answer
        waited = time.monotonic() - started
        if waited + 1.0 > wait_s:
            if status:
                raise TrackingServerFailing(
                    f"MLflow at {uri} answered {status}: {why} ({attempt} tries in {waited:.0f} s); the server is "
                    "up but failing: look at its log (its database or artifact store), fix it and try again")
            raise TrackingServerUnreachable(
                f"MLflow at {uri} is unreachable ({why}; {attempt} tries in {waited:.0f} s); start the server or "
                f"fix mlflow_tracking_uri in the job file (set {WAIT_ENV}=SECONDS to wait longer)")
        what = f"it answered {status}: {why}" if status else why
        say(f"waiting for the MLflow server at {uri} ({what}); try {attempt}, {waited:.0f} of {wait_s:.0f} s")
        sleep(1.0)


def bound_client_retries() -> None:
    """Make MLflow's HTTP client give up after a few retries unless the user chose otherwise."""
    for name, value in CLIENT_RETRIES.items():
        os.environ.setdefault(name, value)
