"""Figure 7 — fidelity metrics: calibration on known defects, the champions' C2ST and KID, and
federated against centralized C2ST.

- Calibration: per type, the real held-out images (on the two demo edges that hold the type)
  are compared with the type's *training* images, unchanged (the real split: must score at the
  floor) and with each defect of `entgan.evaluation.defects.CORRUPTIONS` applied (must score clearly
  worse). Metrics: federated C2ST (`c2st_edge_part` at each edge, `merge_c2st`), KID in the
  random and the domain feature space beside its floor (`kid_scores`), and domain-FID
  (`fid_from_stats`, which has no floor).
- Champions: the same metrics for the generators figure 6 trains (the demo job's champions),
  and a centralized C2ST (one classifier over all of a type's images in one place) beside the
  federated one. Target: the two agree, i.e. their 95 % intervals overlap, for every type; also
  recorded is whether the centralized reading lies inside the federated interval (a stricter
  reading: the centralized classifier trains on every edge's images, so it is a little stronger).
- Cost: CPU seconds per type per edge of the edge's part (C2ST + KID features), and the bytes
  that leave an edge per type (two C2ST counts, float32 features of its held-out images).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from entgan.evaluation.defects import CORRUPTIONS
from entgan.evaluation.features import feature_stats, fid_from_stats
from entgan.evaluation.two_sample import (
    c2st_edge_part,
    feature_spaces,
    kid_edge_part,
    kid_scores,
    merge_c2st,
    merge_kid_parts,
)
from entgan.job.data import DEMO_SPLIT, load_edge, materialize_demo

CLASSIFIER_SHARE = 0.6  # share of an edge's training images its C2ST classifier trains on (the rest: candidates)
C2ST_STEPS = {"full": 500, "quick": 10}  # classifier steps per C2ST
MIN_PER_TYPE = 80
DEMO_PER_TYPE = 300  # wave 1 of `make run` (entgan.job.data.DEMO_WAVES)


def edge_sets(train: list[torch.Tensor], seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per edge: (real images its classifier trains on, source of candidate images).

    An edge's classifier trains on the first CLASSIFIER_SHARE of its training images; the
    candidates at that edge are made from every other training image of the type (its own rest
    and the other edges'), shuffled, so that no image is both "real" and "candidate" to one
    classifier."""
    rng = torch.Generator().manual_seed(seed)
    cut = [int(CLASSIFIER_SHARE * len(x)) for x in train]
    out = []
    for i, images in enumerate(train):
        source = torch.cat([images[cut[i]:]] + [x for j, x in enumerate(train) if j != i])
        out.append((images[: cut[i]], source[torch.randperm(len(source), generator=rng)]))
    return out


def calibrate_type(held: list[torch.Tensor], train: list[torch.Tensor], domain_net, *, steps: int,
                   seed: int = 0, corruptions: dict = CORRUPTIONS) -> dict[str, dict]:
    """Every metric for every corruption of one type; `held` and `train` hold one tensor per edge."""
    spaces = feature_spaces(domain_net)
    real_features = merge_kid_parts([kid_edge_part(x, spaces) for x in held])
    real_stats = feature_stats(domain_net, torch.cat(held))
    sets = edge_sets(train, seed)
    candidates_everywhere = torch.cat(train)
    table = {}
    for name, corrupt in corruptions.items():
        parts = [c2st_edge_part(h, corrupt(source), seed, steps=steps, train_images=real)
                 for h, (real, source) in zip(held, sets)]
        fakes = corrupt(candidates_everywhere)
        kid = kid_scores(real_features, fakes, spaces, seed=seed)
        table[name] = {"c2st": merge_c2st(parts), "c2st_counts": [p.as_dict() for p in parts],
                       "kid_random": kid["random"], "kid_domain": kid["domain"],
                       "domain_fid": fid_from_stats(domain_net, real_stats, fakes)}
    return table


def centralized_c2st(held: list[torch.Tensor], train: list[torch.Tensor], fakes: torch.Tensor, *, steps: int,
                     seed: int = 0) -> tuple[float, float, float]:
    """One classifier for the type in one place: all training images against fakes, tested on
    all held-out images (what the federated reading must agree with)."""
    counts = c2st_edge_part(torch.cat(held), fakes, seed, steps=steps, train_images=torch.cat(train))
    return merge_c2st([counts])


def edge_cost(held: torch.Tensor, train: torch.Tensor, fakes: torch.Tensor, domain_net, *, steps: int) -> dict:
    """CPU seconds and bytes leaving the edge for one type's fidelity part at one edge."""
    start = time.process_time()
    counts = c2st_edge_part(held, fakes, 0, steps=steps, train_images=train)
    c2st_s = time.process_time() - start
    features = kid_edge_part(held, feature_spaces(domain_net))
    kid_s = time.process_time() - start - c2st_s
    return {"c2st_cpu_s": c2st_s, "kid_cpu_s": kid_s, "held_out_images": len(held), "train_images": len(train),
            "bytes": 2 * 8 + sum(f.numel() * f.element_size() for f in features.values()),
            "c2st_counts": counts.as_dict()}


def readings(table: dict[str, dict]) -> dict[str, dict]:
    """A calibration table as plain numbers (JSON)."""
    out = {}
    for name, row in table.items():
        acc, low, high = row["c2st"]
        out[name] = {"c2st": acc, "c2st_low": low, "c2st_high": high, "domain_fid": row["domain_fid"],
                     **row["kid_random"].as_dict("random_"), **row["kid_domain"].as_dict("domain_")}
    return out


def champion_readings(generators: dict, held: dict[str, list[torch.Tensor]], train: dict[str, list[torch.Tensor]],
                      domain_net, *, steps: int, num_generated: int) -> dict[str, dict]:
    """Per champion: federated C2ST (each edge trains on its own training images), centralized
    C2ST, and KID with its floor in both feature spaces."""
    spaces = feature_spaces(domain_net)
    out = {}
    for t, generator in generators.items():
        rng = torch.Generator().manual_seed(0)
        parts = []
        for h, x in zip(held[t], train[t]):
            parts.append(c2st_edge_part(h, generator.sample(len(h) + len(x), generator=rng), 0, steps=steps,
                                        train_images=x))
        every = sum(len(h) + len(x) for h, x in zip(held[t], train[t]))
        central = centralized_c2st(held[t], train[t], generator.sample(every, generator=rng), steps=steps)
        real = merge_kid_parts([kid_edge_part(h, spaces) for h in held[t]])
        kid = kid_scores(real, generator.sample(num_generated, generator=rng), spaces)
        fed = merge_c2st(parts)
        out[t] = {"c2st": fed[0], "c2st_low": fed[1], "c2st_high": fed[2], "central_c2st": central[0],
                  "central_low": central[1], "central_high": central[2],
                  "agree": fed[1] <= central[2] and central[1] <= fed[2],  # the 95 % intervals overlap
                  "central_inside": fed[1] <= central[0] <= fed[2],
                  "c2st_counts": [p.as_dict() for p in parts],
                  **kid["random"].as_dict("random_"), **kid["domain"].as_dict("domain_")}
    return out


def demo_per_edge(root: Path, settings, holdout_fraction: float = 0.2) -> tuple[dict, dict]:
    """The demo's four edges written and read back as an edge does: type -> one tensor per edge
    holding it, of held-out and of training images. Full mode uses the demo job's 300 images per
    type (22 to 41 held-out images on each of a type's two edges); quick mode keeps at least
    MIN_PER_TYPE, so that every edge has a few held-out images."""
    per_type = DEMO_PER_TYPE if settings.per_type is None else max(settings.per_type, MIN_PER_TYPE)
    materialize_demo(root, DEMO_SPLIT, per_type=per_type)
    held: dict[str, list] = {}
    train: dict[str, list] = {}
    for edge, shares in DEMO_SPLIT.items():
        types = sorted(shares)
        for t, x in load_edge(root / edge, types, holdout_fraction, settings.image_size, holdout=True).items():
            held.setdefault(t, []).append(x)
        for t, x in load_edge(root / edge, types, holdout_fraction, settings.image_size, holdout=False).items():
            train.setdefault(t, []).append(x)
    return held, train


def run(settings, workdir: Path, referee, generators: dict | None = None) -> dict:
    """Figure 7 on the demo's four edges (calibration), plus the champions if given."""
    held, train = demo_per_edge(workdir / "fidelity", settings)
    types = sorted(held)
    steps = C2ST_STEPS[settings.mode]
    calibration = {t: readings(calibrate_type(held[t], train[t], referee.net, steps=steps)) for t in types}
    champions = None
    if generators:
        champions = champion_readings({t: generators[t] for t in types}, held, train, referee.net,
                                      steps=steps, num_generated=settings.num_generated)
    first = types[0]
    need = len(held[first][0]) + len(train[first][0])
    if generators:
        fakes = generators[first].sample(need, generator=torch.Generator().manual_seed(1))
    else:  # blurred real images stand in for samples: the cost does not depend on what they show
        blurred = CORRUPTIONS["blur 1.0"](torch.cat(train[first]))
        fakes = blurred.repeat((need + len(blurred) - 1) // len(blurred), 1, 1, 1)[:need]
    cost = edge_cost(held[first][0], train[first][0], fakes, referee.net, steps=steps)
    met = champions is not None and all(c["agree"] for c in champions.values())
    return {
        "what": "fidelity metrics: calibration on known defects (C2ST, KID random/domain with floor, domain-FID), "
                "the champions' federated and centralized C2ST and KID",
        "how": f"C2ST: per edge a classifier trains {steps} steps on {CLASSIFIER_SHARE:.0%} of the edge's training "
               "images vs as many candidates, tested on all held-out images vs as many other candidates; counts "
               "pooled, Wilson 95 % interval. KID: unbiased poly-kernel MMD^2 on z-scored features, half the real "
               "images vs as many samples, 100 subsets; floor: real half vs the other half",
        "calibration": calibration,
        "champions": champions,
        "edge_cost": cost,
        "target": {"federated_and_centralized_c2st_intervals_overlap": "every type", "met": met},
    }
