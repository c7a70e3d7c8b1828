"""How each quality metric is computed: at the edge (its part, from real held-out images that
never leave) and in the cloud (merging the parts, scoring each set of generators).

The sets of generators a run scores: "candidate" (the trained ones), "baseline" (the ones the
run started from: the "before" of the report) and, when a run trains known and new types
together, "champion" (`champion_set`), which the gate compares the candidates with.
`entgan.metrics` names which function computes which metric.
"""

from __future__ import annotations

import torch

from entgan import strategies
from entgan.evaluate import FeatureStats, embed, fid_from_stats
from entgan.quality import cas_counts, cas_from_counts, precision_recall, train_cas_classifier


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
            generator = strategies.load_generator(self.states[which], data_type, self.job.train)
            self._fakes[data_type, which] = generator.sample(self.job.eval.num_generated, generator=rng)
        return self._fakes[data_type, which]

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
                batch_size=job.train.batch_size, seed=job.train.seed + i, feature_dim=job.eval.feature_dim,
            )
            groups[f"cas/{name}/{i}"] = classifier.state_dict()
        log(f"CAS classifiers of the {name} generators trained on synthetic images "
            f"({job.eval.cas_seeds} seeds x {job.eval.cas_steps} steps)")
    return groups


class EdgeScoring:
    """What an edge scores with: the job, the plan and the eval kit (unpacked once per edge)."""

    def __init__(self, job, plan, kit) -> None:
        self.job, self.plan, self.kit = job, plan, kit
        self.groups = kit.groups()
        self._cache: dict = {}

    def once(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


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
