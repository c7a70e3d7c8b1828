"""Figure 1 — speed-up to quality: federated edges vs centralized training of the same model.

Contenders, run one after the other in this invocation on the same demo images:
- `centralized`: one node, every type's images pooled, batch `batch_size` (the 1-edge point);
- `entgan` and `fedgan` on 4 edges (the demo's split), and `entgan` on 2 and 8 edges. Every type
  lives on two edges; each edge uses batch `batch_size // 2`, so a round's averaged update stands
  on the same number of images per step as one centralized step.
All contenders make the same number of steps per type (rounds x local_steps).

Target FID = `target_slack` x centralized's final mean FID. Time to target is the critical-path
CPU time of the first round whose mean FID is at or below it; the speed-up is centralized's time
over the contender's. Target: >= 3x with 4 edges, and a final FID no worse than centralized's.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import KNOWN_TYPES, Referee, Settings, demo_edges, edge_split
from benchmarks.training import Curve, run_centralized, run_federated

SPEEDUP_TARGET = 3.0


def run(settings: Settings, workdir: Path, referee: Referee, pooled: dict) -> tuple[dict, dict]:
    """Returns the figure's JSON and the final global state of `entgan` on 4 edges (the
    champions that figure 2 warm-starts from)."""
    evaluation = settings.evaluation()
    curves: dict[str, Curve] = {}
    curves["centralized"], _ = run_centralized(
        "centralized", {t: pooled[t] for t in KNOWN_TYPES}, settings.train(), referee)
    champions = None
    plans = [("entgan", n) for n in settings.edge_counts if n > 1] + [("fedgan", 4)]
    for strategy, n in plans:
        data = demo_edges(workdir / f"edges-{n}", edge_split(n), settings)
        train = settings.train(strategy, batch_size=max(1, settings.batch_size // 2))
        name = f"{strategy}-{n}"
        curves[name], state = run_federated(name, data.train, KNOWN_TYPES, train, evaluation, referee)
        if name == "entgan-4":
            champions = state

    base = curves["centralized"]
    target = settings.target_slack * base.fid[-1]
    base_time = base.cpu[base.reached(target)]  # reached by construction (slack >= 1)
    contenders = {}
    for name, curve in curves.items():
        entry = curve.as_dict(target)
        t = entry["time_to_target_s"]
        entry["speedup"] = base_time / t if t and base_time else None  # None: not reached, or at round 0
        entry["final_fid_vs_centralized"] = curve.fid[-1] / base.fid[-1]
        contenders[name] = entry
    main = contenders["entgan-4"]
    met = bool(main["speedup"] and main["speedup"] >= SPEEDUP_TARGET and main["final_fid_vs_centralized"] <= 1.0)
    by_edges = {"1": contenders["centralized"]["speedup"],
                **{str(n): contenders[f"entgan-{n}"]["speedup"] for n in settings.edge_counts if n > 1}}
    figure = {
        "what": "critical-path CPU time to reach the target mean domain-FID (4 demo types), "
                "federated edges vs centralized training of the same model",
        "how": "each edge's round is run for real, sequentially, in-process, on one torch thread; a round "
               "costs its slowest edge plus the cloud step; centralized costs the sum of its work; scoring "
               "is off the clock; edges use batch_size//2 (every type on two edges)",
        "target_fid": target,
        "target_rule": f"{settings.target_slack} x centralized's final mean FID",
        "contenders": contenders,
        "speedup_by_edges": by_edges,
        "speedup_entgan_4": main["speedup"],
        "speedup_fedgan_4": contenders["fedgan-4"]["speedup"],
        "final_fid_entgan_4_vs_centralized": main["final_fid_vs_centralized"],
        "target": {"speedup_at_least": SPEEDUP_TARGET, "final_fid_vs_centralized_at_most": 1.0, "met": met},
    }
    return figure, champions
