"""The pipeline's steps as plain functions over files: what each KFP component calls.

    job      create job (cloud), inspect edge (each edge)
    plan     plan: the trigger, who trains what, where each type starts
    train    train (each edge) -> aggregate (cloud), once per round
    evaluate prepare eval (cloud) -> eval (each edge) -> evaluate (cloud)
    deploy   the gate, registration, promotion
    finish   the exit handler

Every step function takes a `TaskContext` (the job, the KFP run, the task library, the edge
and round) and one typed value naming its files (e.g. `EvaluateFiles`), whose fields are the
KFP component's artifact names. (The lifecycle's stages, `entgan.job.lifecycle.Stage`, are train,
eval and deploy; each step records its stage's states.) Every file that crosses a node is a path: weight bundles and
feature statistics are safetensors, reports and plans are JSON. `wiring.py` lists the tasks
once, for the KFP pipeline (pipelines/entgan_pipeline.py) and the in-process runner
(`local.py`) alike.
"""
