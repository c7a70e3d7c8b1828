"""Where versions registered before the package layout (entgan 0.1) find their model class.

MLflow runs the code file it copied into each version on load. Versions registered by entgan
0.1 carry a code file that says `from entgan.mlflow_model import GeneratorModel`; newer ones
name `entgan.library.pyfunc`. This module keeps the old path working (tests/library/
test_pyfunc.py loads a version registered by the 0.1 code).
"""

from entgan.library.pyfunc import GeneratorModel

__all__ = ["GeneratorModel"]
