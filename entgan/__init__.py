"""EntGAN: edge-cloud collaborative GAN training with a lifelong library of generators."""

import os as _os

__version__ = "0.1.0"

# MLflow sends usage telemetry unless told not to, and decides when `mlflow` is first imported.
# EntGAN runs inside robot fleets and private clusters and contacts no one unasked: telemetry is
# off in every process that imports entgan first (the CLI, kfp.local tasks, the components), unless
# the user chose (MLFLOW_DISABLE_TELEMETRY=false turns it on; docs/use-a-generator.md).
TELEMETRY_ENV = "MLFLOW_DISABLE_TELEMETRY"
_os.environ.setdefault(TELEMETRY_ENV, "true")
