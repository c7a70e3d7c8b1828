"""Keep credentials out of what EntGAN writes: recorded errors, logs, printed messages.

Credentials reach EntGAN only through environment variables (in the cluster: Kubernetes
Secrets). EntGAN's own messages never include them, but an error raised by a library (an S3 or
HTTP client) might quote a request; `redact` replaces the value of every credential variable
that is set with `***` before such text is recorded in MLflow or printed.
"""

from __future__ import annotations

import os

# The variables that may hold a credential (S3 key and secret, MLflow and KFP tokens).
SECRET_ENVS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "KFP_TOKEN",
)
MASK = "***"


def redact(text: str) -> str:
    """`text` with the value of every credential variable that is set replaced by `***`."""
    for name in SECRET_ENVS:
        value = os.environ.get(name, "")
        if len(value) >= 4:  # a one-letter "secret" would mask ordinary words
            text = text.replace(value, MASK)
    return text
