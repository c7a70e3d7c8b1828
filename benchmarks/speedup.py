"""Figure 1 — speed-up to quality: federated edges vs centralized training of the same model.

Contenders, run one after the other in this invocation on the same demo images:
- `centralized`: one node, every type's images pooled, batch `batch_size` (the 1-edge point);
- `entgan` and `fedgan` on 4 edges (the demo's split), and `entgan` on 2 and 8 edges. Every type
  lives on two edges; each edge uses batch `batch_size // 2`, so a round's averaged update stands
  on the same number of images per step as one centralized step.
All contenders make the same number of steps per type (rounds x local_steps).

Quality is KID in the random multi-scale CNN feature space (`entgan.evaluation.two_sample.RandomFeatures`:
it sees blur, colour and texture, which the domain network's features ignore), 512 samples per
type against the real held-out images, read after every round and averaged over the types,
beside its real-vs-real floor (the same estimator between two halves of the real images: what
"as good as real" reads). KID is unbiased, so near the floor it can be negative; the target is
therefore set on the distance *above the floor*:

    target KID = floor + target_slack x max(centralized's final KID - floor, floor spread)

(floor spread: the mean over the types of the floor's spread over subsets; a centralized run that
ended within it leaves a target of "within slack x the noise of the floor"). Time to target is
the critical-path CPU time of the first round whose mean KID is at or below it; the speed-up is
centralized's time over the contender's. Target: >= 3x with 4 edges, and a final KID no worse
than centralized's beyond one standard error (the gate's `kid_must_not_rise` rule: centralized's
final KID + the mean over types of its spread over subsets).

Domain-FID is recorded beside KID at every point (continuity with earlier runs; not the target).
After the last round, every contender's generators are read with the federated C2ST per type, on
the demo's 4-edge layout for all of them (`common.federated_c2st`, figure 7's classifier steps):
how far from real they still are (0.5: indistinguishable).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import KNOWN_TYPES, Referee, Settings, demo_edges, edge_split, federated_c2st
from benchmarks.fidelity import C2ST_STEPS
from benchmarks.training import Curve, run_centralized, run_federated
from entgan.gan import strategies
from entgan.job.spec import TrainSpec

SPEEDUP_TARGET = 3.0


def kid_target(base: Curve, slack: float) -> dict:
    """The target mean KID, from the centralized curve (see the module docstring)."""
    floor, spread = base.kid_floor, base.kid_floor_std
    excess = base.kid[-1] - floor
    return {"target_kid": floor + slack * max(excess, spread), "kid_floor": floor, "kid_floor_std": spread,
            "centralized_final_excess": excess, "from_floor_spread": excess < spread}


def final_c2st(state: dict, train: TrainSpec, layout, steps: int) -> dict:
    """Per type, the federated C2ST of the contender's final generators on `layout`'s edges, and
    the mean over the types."""
    per_type = {t: federated_c2st(strategies.load_generator(state, t, train), layout, t, steps=steps)
                for t in KNOWN_TYPES}
    read = [v["c2st"] for v in per_type.values() if v]
    return {"per_type": per_type, "mean": sum(read) / len(read) if read else None}


def run(settings: Settings, workdir: Path, referee: Referee, pooled: dict) -> tuple[dict, dict]:
    """Returns the figure's JSON and the final global state of `entgan` on 4 edges (the
    champions that figure 2 warm-starts from)."""
    evaluation = settings.evaluation()
    curves: dict[str, Curve] = {}
    states: dict[str, tuple[dict, TrainSpec]] = {}
    central_train = settings.train()
    curves["centralized"], state = run_centralized(
        "centralized", {t: pooled[t] for t in KNOWN_TYPES}, central_train, referee)
    states["centralized"] = (state, central_train)
    layouts = {}
    plans = [("entgan", n) for n in settings.edge_counts if n > 1] + [("fedgan", 4)]
    for strategy, n in plans:
        if n not in layouts:
            layouts[n] = demo_edges(workdir / f"edges-{n}", edge_split(n), settings)
        train = settings.train(strategy, batch_size=max(1, settings.batch_size // 2))
        name = f"{strategy}-{n}"
        curves[name], state = run_federated(name, layouts[n].train, KNOWN_TYPES, train, evaluation, referee)
        states[name] = (state, train)

    base = curves["centralized"]
    target = kid_target(base, settings.target_slack)
    base_time = base.cpu[base.reached(target["target_kid"], "kid")]  # reached by construction (slack >= 1)
    no_worse_than = base.kid[-1] + _mean_kid_std(base)
    steps = C2ST_STEPS[settings.mode]
    contenders = {}
    for name, curve in curves.items():
        entry = curve.as_dict(target["target_kid"], "kid")
        t = entry["time_to_target_s"]
        entry["speedup"] = base_time / t if t and base_time else None  # None: not reached, or at round 0
        entry["final_kid_excess"] = curve.kid[-1] - target["kid_floor"]
        entry["final_kid_excess_vs_centralized"] = (entry["final_kid_excess"] / target["centralized_final_excess"]
                                                   if target["centralized_final_excess"] > 0 else None)
        entry["final_kid_no_worse_than_centralized"] = curve.kid[-1] <= no_worse_than
        entry["final_fid_vs_centralized"] = curve.fid[-1] / base.fid[-1]
        entry["final_c2st"] = final_c2st(*states[name], layouts[4], steps)
        contenders[name] = entry
    main = contenders["entgan-4"]
    met = bool(main["speedup"] and main["speedup"] >= SPEEDUP_TARGET and main["final_kid_no_worse_than_centralized"])
    by_edges = {"1": contenders["centralized"]["speedup"],
                **{str(n): contenders[f"entgan-{n}"]["speedup"] for n in settings.edge_counts if n > 1}}
    figure = {
        "what": "critical-path CPU time to reach the target mean KID in random multi-scale CNN features (4 demo "
                "types, beside its real-vs-real floor), federated edges vs centralized training of the same model; "
                "each contender's final federated C2ST per type",
        "how": "each edge's round is run for real, sequentially, in-process, on one torch thread; a round "
               "costs its slowest edge plus the cloud step; centralized costs the sum of its work; scoring "
               "is off the clock; edges use batch_size//2 (every type on two edges). KID: 512 samples per type "
               "vs the real held-out images (entgan.evaluation.two_sample.kid_scores, 100 subsets), mean over the types; "
               "domain-FID recorded beside it. Final C2ST: on the demo's 4-edge layout for every contender, "
               f"{steps} classifier steps per edge, trained on the edge's training images, tested on its held-out "
               "images, counts pooled (Wilson 95 %)",
        **target,
        "target_rule": f"floor + {settings.target_slack} x max(centralized's final mean KID - floor, floor spread)",
        "contenders": contenders,
        "speedup_by_edges": by_edges,
        "speedup_entgan_4": main["speedup"],
        "speedup_fedgan_4": contenders["fedgan-4"]["speedup"],
        "final_kid_entgan_4": main["final_kid"],
        "final_kid_centralized": base.kid[-1],
        "final_kid_no_worse_than": no_worse_than,
        "final_kid_excess_entgan_4_vs_centralized": main["final_kid_excess_vs_centralized"],
        "final_fid_entgan_4_vs_centralized": main["final_fid_vs_centralized"],
        "final_c2st_mean": {name: c["final_c2st"]["mean"] for name, c in contenders.items()},
        "target": {"speedup_at_least": SPEEDUP_TARGET,
                   "final_kid_at_most": "centralized's final KID + its standard error", "met": met},
    }
    return figure, states["entgan-4"][0]


def _mean_kid_std(curve: Curve) -> float:
    """Mean over the types of the last point's KID spread over subsets (one reading's standard error
    as the gate reads it)."""
    last = curve.kid_per_type[-1]
    return sum(k["kid_std"] for k in last.values()) / len(last)
