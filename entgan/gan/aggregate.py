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
        _check_pair(reference, state, i)


class FedAvgSum:
    """FedAvg one update at a time: a running sample-weighted mean in the parameters' own dtype.

    `add(state, n)` folds one update in (it may be dropped right after); `result()` is the
    average. The cloud holds the running mean and one update, never every update at once nor
    float64 copies. Each floating-point tensor keeps `mean += (x - mean) * n / seen`, which is
    `fedavg` to float32 rounding; integer counters keep the maximum.
    """

    def __init__(self) -> None:
        self._mean: StateDict | None = None
        self._seen = 0
        self._count = 0

    def add(self, state: StateDict, num_examples: int) -> None:
        if num_examples <= 0:
            raise AggregationError(f"update {self._count} reports {num_examples} examples; it must be > 0")
        if self._mean is None:
            _check_compatible([(state, num_examples)])
            self._mean = {key: tensor.detach().clone() for key, tensor in state.items()}
        else:
            _check_pair(self._mean, state, self._count)
            weight = num_examples / (self._seen + num_examples)
            with torch.no_grad():
                for key, acc in self._mean.items():
                    if acc.is_floating_point():
                        acc.lerp_(state[key], weight)
                    else:
                        torch.maximum(acc, state[key], out=acc)
        self._seen += num_examples
        self._count += 1

    def result(self) -> StateDict:
        if self._mean is None:
            raise AggregationError("nothing to aggregate: no updates arrived")
        return self._mean


def _check_pair(reference: StateDict, state: StateDict, i: int) -> None:
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
    maximum is kept. Streams through `FedAvgSum` (one update at a time, in the tensors' dtype).
    """
    _check_compatible(results)
    total = FedAvgSum()
    for state, n in results:
        total.add(state, n)
    return total.result()


def _floating_keys(reference: StateDict) -> list[str]:
    return [k for k, t in reference.items() if t.is_floating_point()]


def is_finite(state: StateDict) -> bool:
    """True when every floating-point tensor of `state` holds only finite values."""
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def update_norm(state: StateDict, reference: StateDict) -> float:
    """L2 norm of an update: how far `state` moved the floating-point weights of `reference`."""
    total = sum(float((state[k].double() - reference[k].double()).pow(2).sum()) for k in _floating_keys(reference))
    return total**0.5


def clip_updates(
    results: list[tuple[StateDict, int]], reference: StateDict, max_norm: float | str
) -> tuple[list[tuple[StateDict, int]], list[float]]:
    """Norm clipping: scale each update (its change to `reference`) down to at most `max_norm`.

    `max_norm="median"` uses the median of this round's update norms, so one edge that scales
    its weights up cannot outweigh the others, whatever the scale. Returns the clipped results
    and each update's norm before clipping.
    """
    if not results:
        raise AggregationError("nothing to aggregate: no updates arrived")
    _check_compatible([(reference, 1), *results])
    norms = [update_norm(state, reference) for state, _ in results]
    bound = float(torch.tensor(norms).median()) if max_norm == "median" else float(max_norm)
    clipped = []
    for (state, n), norm in zip(results, norms):
        scale = 1.0 if norm <= bound or norm == 0 else bound / norm
        out = dict(state)
        for key in _floating_keys(reference):
            delta = state[key].double() - reference[key].double()
            out[key] = (reference[key].double() + delta * scale).to(reference[key].dtype)
        clipped.append((out, n))
    return clipped, norms


def trimmed_mean(results: list[tuple[StateDict, int]], trim_fraction: float) -> StateDict:
    """Coordinate-wise trimmed mean: per weight, drop the `trim_fraction` largest and smallest
    values across the updates and average the rest (unweighted: a sample count is only a claim).

    With 4 updates and trim_fraction 0.25, each weight is the mean of its 2 middle values.
    """
    if not 0 <= trim_fraction < 0.5:
        raise AggregationError(f"trim_fraction is {trim_fraction}; it must be in [0, 0.5)")
    _check_compatible(results)
    k = int(len(results) * trim_fraction)
    out: StateDict = {}
    for key, ref in results[0][0].items():
        stacked = torch.stack([state[key] for state, _ in results])
        if ref.is_floating_point():
            ordered = stacked.to(torch.float64).sort(dim=0).values
            out[key] = ordered[k : len(results) - k].mean(dim=0).to(ref.dtype)
        else:
            out[key] = stacked.amax(dim=0)
    return out


def median(results: list[tuple[StateDict, int]]) -> StateDict:
    """Coordinate-wise median across the updates (the mean of the two middle values when the
    count is even), unweighted. Integer counters keep the maximum."""
    _check_compatible(results)
    out: StateDict = {}
    n = len(results)
    for key, ref in results[0][0].items():
        stacked = torch.stack([state[key] for state, _ in results])
        if ref.is_floating_point():
            ordered = stacked.to(torch.float64).sort(dim=0).values
            middle = ordered[(n - 1) // 2 : n // 2 + 1]
            out[key] = middle.mean(dim=0).to(ref.dtype)
        else:
            out[key] = stacked.amax(dim=0)
    return out


def check_update(groups: dict[str, StateDict], reference: dict[str, StateDict]) -> str | None:
    """Why an edge's update cannot be aggregated with `reference` (the global state it started
    from), or None: every group must be known, with the same parameters, shapes and dtypes, and
    hold finite values."""
    for group, state in sorted(groups.items()):
        if group not in reference:
            return f"unknown network {group!r}"
        ref = reference[group]
        if state.keys() != ref.keys():
            missing, extra = sorted(ref.keys() - state.keys())[:3], sorted(state.keys() - ref.keys())[:3]
            return f"{group}: different parameters (missing {missing}, extra {extra})"
        for key, tensor in state.items():
            if tensor.shape != ref[key].shape or tensor.dtype != ref[key].dtype:
                return (f"{group}/{key} is {tuple(tensor.shape)} {tensor.dtype}, "
                        f"expected {tuple(ref[key].shape)} {ref[key].dtype}")
        if not is_finite(state):
            return f"{group}: NaN or infinite values"
    return None


AGGREGATIONS = ("fedavg", "median", "trimmed_mean")


def aggregate(
    results: list[tuple[StateDict, int]],
    reference: StateDict,
    *,
    method: str = "fedavg",
    clip_norm: float | str | None = None,
    trim_fraction: float = 0.25,
) -> StateDict:
    """One network's aggregation: optional norm clipping around `reference` (the global
    weights the edges started from), then `fedavg`, coordinate-wise `median` or `trimmed_mean`.

    The robust methods first drop updates that hold NaN or infinite values (they carry no
    information); FedAvg is plain arithmetic and lets them through, as the benchmark shows.
    """
    if method not in AGGREGATIONS:
        raise AggregationError(f"unknown aggregation {method!r}; use one of {list(AGGREGATIONS)}")
    if method != "fedavg":
        results = [(state, n) for state, n in results if is_finite(state)]
    if clip_norm is not None:
        results, _ = clip_updates(results, reference, clip_norm)
    if method == "median":
        return median(results)
    if method == "trimmed_mean":
        return trimmed_mean(results, trim_fraction)
    return fedavg(results)


def proximal_term(model: torch.nn.Module, anchor: StateDict) -> torch.Tensor:
    """(1/2) * ||theta - theta_anchor||^2 over the model's trainable parameters (FedProx)."""
    total = torch.zeros(())
    for name, param in model.named_parameters():
        total = total + (param - anchor[name].detach()).pow(2).sum()
    return 0.5 * total
