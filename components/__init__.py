"""EntGAN's KFP components, built for a given component image.

The component functions are plain Python in `edge.py` and `cloud.py`; `build(image)` wraps
them as KFP lightweight components that run in `image` with no runtime pip install.
"""

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

    return Components(
        create_job=wrap(cloud.create_job),
        edge_gpus=wrap(cloud.edge_gpus),
        inspect_edge=wrap(edge.inspect_edge),
        plan=wrap(cloud.plan),
        train_edge=wrap(edge.train_edge),
        aggregate=wrap(cloud.aggregate),
        eval_edge=wrap(edge.eval_edge),
        prepare_eval=wrap(cloud.prepare_eval),
        evaluate=wrap(cloud.evaluate),
        deploy=wrap(cloud.deploy),
        finish=wrap(cloud.finish),
        generate=wrap(cloud.generate),
    )
