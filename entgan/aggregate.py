"""Aggregation arithmetic: pure functions over state dicts. No I/O, no state."""

from __future__ import annotations

import torch

StateDict = dict[str, torch.Tensor]


class AggregationError(ValueError):
    """Updates that cannot be combined (no updates, mismatched keys, shapes or dtypes)."""


def _check_compatible(results: list[tuple[StateDict, int]]) -> None:
    if not results:
        raise AggregationError("nothing to aggregate: no updates arrived")
    reference, _ = results[0]
    for i, (state, num_examples) in enumerate(results):
        if num_examples <= 0:
            raise AggregationError(f"update {i} reports {num_examples} examples; it must be > 0")
        if state.keys() != reference.keys():
            missing = sorted(reference.keys() - state.keys())[:3]
            extra = sorted(state.keys() - reference.keys())[:3]
            raise AggregationError(f"update {i} has different parameters: missing {missing}, extra {extra}")
        for key, tensor in state.items():
            ref = reference[key]
            if tensor.shape != ref.shape or tensor.dtype != ref.dtype:
                raise AggregationError(
                    f"update {i}: {key} is {tuple(tensor.shape)} {tensor.dtype}, "
                    f"expected {tuple(ref.shape)} {ref.dtype}"
                )


def fedavg(results: list[tuple[StateDict, int]]) -> StateDict:
    """Compute the sample-weighted average of state dicts (FedAvg).

    Floating-point tensors are averaged with weights proportional to `num_examples`.
    Integer buffers (batch-norm's `num_batches_tracked`) are counters, not parameters: the
    maximum is kept.
    """
    _check_compatible(results)
    total = sum(n for _, n in results)
    averaged: StateDict = {}
    for key, ref in results[0][0].items():
        if ref.is_floating_point():
            acc = torch.zeros_like(ref, dtype=torch.float64)
            for state, n in results:
                acc += state[key].to(torch.float64) * (n / total)
            averaged[key] = acc.to(ref.dtype)
        else:
            averaged[key] = torch.stack([state[key] for state, _ in results]).amax(dim=0)
    return averaged


def proximal_term(model: torch.nn.Module, anchor: StateDict) -> torch.Tensor:
    """(1/2) * ||theta - theta_anchor||^2 over the model's trainable parameters (FedProx)."""
    total = torch.zeros(())
    for name, param in model.named_parameters():
        total = total + (param - anchor[name].detach()).pow(2).sum()
    return 0.5 * total
