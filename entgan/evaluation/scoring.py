"""How each quality metric is computed: at the edge (its part, from real held-out images that
never leave) and in the cloud (merging the parts, scoring each set of generators).

The sets of generators a run scores: "candidate" (the trained ones), "baseline" (the ones the
run started from: the "before" of the report) and, when a run trains known and new types
together, "champion" (`champion_set`), which the gate compares the candidates with.
`entgan.evaluation.metrics` names which function computes which metric.
"""

from __future__ import annotations

import torch

from entgan.evaluation.features import FeatureStats, embed, fid_from_stats
from entgan.evaluation.precision_recall_cas import cas_counts, cas_from_counts, precision_recall, train_cas_classifier
from entgan.evaluation.two_sample import (
    C2STCounts,
    DomainFeatures,
    RandomFeatures,
    c2st_edge_part,
    extract,
    kid_scores,
    merge_c2st,
)
from entgan.gan import strategies
from entgan.job.data import load_edge


class Scoring:
    """The cloud's evidence for one run: merged real statistics and feature vectors per type,
    the global states of the generator sets, and the parts the edges sent ({metric: {type:
    [part per edge]}}). Samples and embeddings are drawn once per type and set (seeded)."""

    def __init__(self, job, net, real: dict[str, FeatureStats], real_features: dict[str, torch.Tensor],
                 states: dict[str, dict], parts: dict[str, dict[str, list]]) -> None:
        self.job, self.net, self.real, self.real_features = job, net, real, real_features
        self.states, self.parts = states, parts
        self._fakes: dict = {}
        self._pr: dict = {}

    def fakes(self, data_type: str, which: str) -> torch.Tensor:
        """`eval.num_generated` images of one type from one set, from the job's seed."""
        if (data_type, which) not in self._fakes:
            rng = torch.Generator().manual_seed(self.job.train.seed)
            generator = self.generator(data_type, which)
            self._fakes[data_type, which] = generator.sample(self.job.eval.num_generated, generator=rng)
        return self._fakes[data_type, which]

    def generator(self, data_type: str, which: str):
        """One type's generator of a set (anything with `sample(n, generator=rng)`)."""
        return strategies.load_generator(self.states[which], data_type, self.job.train)

    def precision_recall(self, data_type: str, which: str) -> tuple[float, float]:
        if (data_type, which) not in self._pr:
            real = self.real_features[data_type]
            k = min(self.job.eval.pr_k, len(real) - 1)
            self._pr[data_type, which] = precision_recall(real, embed(self.net, self.fakes(data_type, which)), k=k)
        return self._pr[data_type, which]


def fid(s: Scoring, data_type: str, which: str) -> float:
    return fid_from_stats(s.net, s.real[data_type], s.fakes(data_type, which))


def precision(s: Scoring, data_type: str, which: str) -> float:
    return s.precision_recall(data_type, which)[0]


def recall(s: Scoring, data_type: str, which: str) -> float:
    return s.precision_recall(data_type, which)[1]


# ---------------------------------------------------------------- CAS: the cloud's classifiers, the edges' counts


def champion_set(plan) -> bool:
    """Does the gate need its own CAS classifier? A type's CAS depends on every type the classifier
    is trained on. When a run trains new types beside known ones, the starting generators ("baseline")
    hold each new type's warm start, a copy of its parent's generator, which halves the parent's
    CAS (the classifier cannot tell the two apart). The gate's "champion" set is the library as
    it stands if no known type's candidate is promoted: champions, plus the new types' candidates."""
    known = [t for t in plan.types if plan.start.get(t)]
    return bool(known) and len(known) < len(plan.types)


def cas_classifiers(job, plan, sets: dict[str, dict], log) -> dict:
    """The eval kit's part for CAS: `eval.cas_seeds` classifiers per set of generators, trained
    on synthetic images only, as groups `cas/<set>/<seed>`."""
    groups = {}
    for name, generators in sets.items():
        for i in range(job.eval.cas_seeds):
            classifier = train_cas_classifier(
                generators, plan.types, image_size=job.train.image_size, steps=job.eval.cas_steps,
                batch_size=job.eval.batch_size, seed=job.train.seed + i, feature_dim=job.eval.feature_dim,
                channels=job.train.image_channels,
            )
            groups[f"cas/{name}/{i}"] = classifier.state_dict()
        log(f"CAS classifiers of the {name} generators trained on synthetic images "
            f"({job.eval.cas_seeds} seeds x {job.eval.cas_steps} steps)")
    return groups


class EdgeScoring:
    """What an edge scores with: the job, the plan, the eval kit (unpacked once per edge) and
    the edge's name (for metrics that also read its training images)."""

    def __init__(self, job, plan, kit, edge: str | None = None) -> None:
        self.job, self.plan, self.kit, self.edge = job, plan, kit, edge
        self.groups = kit.groups()
        self._cache: dict = {}

    def once(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def generator(self, data_type: str, which: str):
        """One type's generator of a set from the kit's `c2st/<set>/<type>` (None: not in the kit)."""
        weights = self.groups.get(f"c2st/{which}/{data_type}")
        if weights is None:
            return None
        return strategies.load_generator({f"{data_type}/G": weights}, data_type, self.job.train)

    def training_images(self, data_type: str) -> torch.Tensor:
        """The edge's real training images of a type (they stay at the edge)."""
        job = self.job
        return self.once(f"train/{data_type}", lambda: load_edge(
            job.edge(self.edge).data, [data_type], job.eval.holdout_fraction, job.train.image_size,
            holdout=False, channels=job.train.image_channels)[data_type])


def _load_classifiers(ev: EdgeScoring) -> dict[str, list]:
    out = {}
    for name in ev.kit.header.extra["sets"]:
        nets = []
        for i in range(ev.job.eval.cas_seeds):
            net = strategies.new_feature_net(len(ev.plan.types), ev.job.train, ev.job.eval)
            net.load_state_dict(ev.groups[f"cas/{name}/{i}"])
            nets.append(net)
        out[name] = nets
    return out


def cas_part(ev: EdgeScoring, data_type: str, images: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Per set: (correct, total) of the real images, summed over the set's classifiers (their
    CAS is the mean of theirs). Only these counts leave the edge."""
    classifiers = ev.once("cas", lambda: _load_classifiers(ev))
    label = ev.plan.types.index(data_type)
    out = {}
    for name, nets in classifiers.items():
        counts = [cas_counts(c, images, label) for c in nets]
        out[name] = (sum(c for c, _ in counts), sum(n for _, n in counts))
    return out


def cas(s: Scoring, data_type: str, which: str) -> float:
    """CAS over the edges' counts; a set the kit lacks (champion) falls back to the baseline."""
    return cas_from_counts([tuple(p.get(which, p["baseline"])) for p in s.parts["cas"][data_type]])


# ---------------------------------------------------------------- C2ST: each edge's classifier, its counts


def c2st_generators(job, plan, sets: dict[str, dict], log) -> dict:
    """The eval kit's part for C2ST: the generators the edges test, as groups `c2st/<set>/<type>`:
    every candidate, and the starting generator of each type that has a champion (the gate
    compares with it). New types need no "before" C2ST."""
    groups = {f"c2st/candidate/{t}": g.state_dict() for t, g in sets["candidate"].items()}
    groups.update({f"c2st/baseline/{t}": sets["baseline"][t].state_dict() for t in plan.types if plan.start.get(t)})
    return groups


def c2st_part(ev: EdgeScoring, data_type: str, images: torch.Tensor) -> dict[str, list[int]]:
    """Per generator set: [correct, total] of a real-vs-synthetic classifier trained on this
    edge's *training* images of the type against samples and tested on its held-out `images`
    against other samples (`entgan.evaluation.two_sample.c2st_edge_part`). Only the two counts leave the edge.
    Without training images it cross-fits on the held-out ones (at least 4, else no counts)."""
    job, train = ev.job, ev.training_images(data_type)
    if len(train) == 0 and len(images) < 4:
        return {}
    out = {}
    for which in ("candidate", "baseline"):
        generator = ev.generator(data_type, which)
        if generator is None:
            continue
        fakes = generator.sample(len(train) + len(images), generator=torch.Generator().manual_seed(job.train.seed))
        counts = c2st_edge_part(images, fakes, job.train.seed, steps=job.eval.c2st_steps,
                                train_images=train if len(train) else None)
        out[which] = [counts.correct, counts.total]
    return out


def c2st(s: Scoring, data_type: str, which: str) -> dict[str, float] | None:
    """Accuracy over the edges' pooled counts with its Wilson 95 % interval (None: not tested)."""
    counts = [C2STCounts(*p[which]) for p in s.parts["c2st"][data_type] if which in p]
    if not counts:
        return None
    accuracy, low, high = merge_c2st(counts)
    return {"": accuracy, "_low": low, "_high": high}


# ---------------------------------------------------------------- KID beside its real-vs-real floor

RANDOM_FEATURES_SEED = 0  # the same fixed random network at every edge and in the cloud


def kid_random_part(ev: EdgeScoring, data_type: str, images: torch.Tensor) -> torch.Tensor:
    """The held-out images' random features (N x 96 float32: channel statistics, not pixels)."""
    space = ev.once("random_features", lambda: RandomFeatures(RANDOM_FEATURES_SEED, channels=images.shape[1]))
    return extract(space, images)


def _kid(real: torch.Tensor, fakes: torch.Tensor, space) -> dict[str, float] | None:
    if len(real) < 4:  # the floor needs two halves of at least 2: not measured
        return None
    k = kid_scores({"space": real}, fakes, {"space": space})["space"]
    return {"": k.kid, "_se": k.kid_std, "_floor": k.floor, "_floor_std": k.floor_std}


def kid_random(s: Scoring, data_type: str, which: str) -> dict[str, float] | None:
    """KID in the random-feature space against the edges' features, beside the real-vs-real
    floor; `_se` is the spread of one reading over the random subsets."""
    real = torch.cat([torch.as_tensor(p) for p in s.parts["kid_random"][data_type]])
    fakes = s.fakes(data_type, which)
    return _kid(real, fakes, RandomFeatures(RANDOM_FEATURES_SEED, channels=fakes.shape[1]))


def kid_domain(s: Scoring, data_type: str, which: str) -> dict[str, float] | None:
    """KID in the domain feature network's space (the embeddings the edges send for FID)."""
    return _kid(s.real_features[data_type], s.fakes(data_type, which), DomainFeatures(s.net))
