"""The code of every registered EntGAN generator version (MLflow "models from code").

MLflow copies this file into each version's artifacts and runs it on load: it names the model
class, nothing is unpickled. The weights are the version's `model.safetensors` artifact.
"""

from mlflow.models import set_model

from entgan.library.pyfunc import GeneratorModel

set_model(GeneratorModel())
