"""EntGAN's KFP components, built for a given component image.

The component functions are plain Python in `edge.py` and `cloud.py`; `build(image)` wraps
them as KFP lightweight components that run in `image` with no runtime pip install.
"""

import dataclasses
from dataclasses import dataclass

from kfp import dsl

from components import cloud, edge


@dataclass(frozen=True)
class Components:
    create_job: object
    edge_gpus: object
    inspect_edge: object
    plan: object
    train_edge: object
    aggregate: object
    eval_edge: object
    prepare_eval: object
    evaluate: object
    deploy: object
    finish: object
    generate: object


def build(image: str) -> Components:
    def wrap(func):
        return dsl.component(func, base_image=image, install_kfp_package=False)

    # Every field of Components is the function of that name in edge.py or cloud.py.
    return Components(**{
        f.name: wrap(getattr(edge, f.name, None) or getattr(cloud, f.name)) for f in dataclasses.fields(Components)
    })
