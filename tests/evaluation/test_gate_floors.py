"""The gate on what a person sees (issue 15): C2ST and random-feature KID, computed the way the
pipeline computes them (each edge's C2ST counts, its random features; the cloud's merge and
scores), refuse a candidate that is the champion plus a blur; and a type's first version that
is noise gets no `champion` alias, which `entgan run`'s summary says plainly.
"""

import pytest
import torch

from entgan.cli.verbs import format_summary, generate
from entgan.evaluation import metrics, scoring
from entgan.evaluation.defects import gaussian_blur
from entgan.job.data import load_edge, materialize_demo
from entgan.job.spec import DeploySpec, parse_job
from entgan.library.generate import NoChampionError
from entgan.library.registry import library_for
from entgan.steps.evaluate import _scores
from tests.conftest import tiny_job_dict
from tests.steps_driver import drive


class Replay:
    """A champion as good as real: it 'samples' the real training images (drawn with the rng)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.images[torch.randint(len(self.images), (n,), generator=generator)]


class Blurred:
    """The champion plus a Gaussian blur of its outputs."""

    def __init__(self, inner, sigma: float) -> None:
        self.inner, self.sigma = inner, sigma

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return gaussian_blur(self.inner.sample(n, generator=generator), self.sigma)


class _Kit:  # an eval kit without tensors: the generators come from `generator()` below
    def groups(self):
        return {}


def _edge_scoring(job, generators):
    class Edge(scoring.EdgeScoring):
        def generator(self, data_type, which):
            return generators.get(which)

    return Edge(job, None, _Kit(), "edge-1")


def _cloud_scoring(job, generators, parts):
    class Cloud(scoring.Scoring):
        def generator(self, data_type, which):
            return generators[which]

    return Cloud(job, None, {}, {}, {}, parts)


def _report(job, held_out, generators):
    """The candidate's and the champion's ("baseline") C2ST and KID, as the eval step scores them."""
    edge = _edge_scoring(job, generators)
    parts = {"c2st": {"clutter": [scoring.c2st_part(edge, "clutter", held_out)]},
             "kid_random": {"clutter": [scoring.kid_random_part(edge, "clutter", held_out)]}}
    return _scores(_cloud_scoring(job, generators, parts), "clutter")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("blur")
    materialize_demo(root, {"edge-1": {"clutter": 1.0}}, per_type=200)
    job = parse_job({"name": "blur", "edges": [{"name": "edge-1", "data": str(root / "edge-1")}],
                     "train": {"image_size": 16}, "eval": {"c2st_steps": 150, "num_generated": 256}})
    train = load_edge(root / "edge-1", ["clutter"], 0.2, 16, holdout=False)["clutter"]
    held_out = load_edge(root / "edge-1", ["clutter"], 0.2, 16, holdout=True)["clutter"]
    return job, train, held_out


@pytest.fixture
def two_metrics(monkeypatch):
    """The gate over C2ST and KID (random) only: the other metrics need a trained run."""
    monkeypatch.setattr(metrics, "METRICS", [m for m in metrics.METRICS if m.name in ("c2st", "kid_random")])


def test_the_champion_plus_a_blur_is_refused_by_c2st_and_kid(setting, two_metrics):
    # Prepare: the champion replays real training images; the candidate blurs them (σ 1 px)
    job, train, held_out = setting
    champion = Replay(train)
    torch.set_num_threads(1)
    # Execute: both scored on the edge's held-out images, the gate with the default rules
    report = _report(job, held_out, {"candidate": Blurred(champion, 1.0), "baseline": champion})
    candidate, theirs = metrics.gate_inputs(report, has_champion=True)
    promote, reasons = metrics.gate_decision(candidate, theirs, DeploySpec())
    # Assert: refused, each reason naming its metric
    assert report["baseline_c2st_high"] < report["c2st"], report  # the blur is seen
    assert not promote
    assert any(r.startswith("C2ST") and "rises above the champion's" in r for r in reasons), reasons
    assert any(r.startswith("KID random") and "rises above the champion's" in r for r in reasons), reasons


def test_the_champion_against_itself_passes(setting, two_metrics):
    # The same gate lets the champion's own samples through: the refusal above is the blur's.
    job, train, held_out = setting
    champion = Replay(train)
    torch.set_num_threads(1)
    report = _report(job, held_out, {"candidate": champion, "baseline": champion})
    promote, reasons = metrics.gate_decision(*metrics.gate_inputs(report, has_champion=True), DeploySpec())
    assert promote, reasons
    assert report["c2st_high"] > 0.5 > report["c2st_low"] - 0.1  # about chance: real against real


def test_a_first_version_below_the_floors_gets_no_champion_and_the_summary_says_so(demo_edges, tmp_path):
    # Prepare: a tiny job (seconds of training: its generators are noise) with the default floors,
    # on edges holding enough held-out images per type for KID's floor
    root = tmp_path / "data"
    materialize_demo(root / "edges", {"edge-1": {"box": 0.5, "table": 1.0}, "edge-2": {"box": 0.5}}, per_type=40)
    data = tiny_job_dict(root, ["edge-1", "edge-2"])
    data["deploy"] = {}  # the defaults
    data["eval"].update(cas_steps=5, cas_seeds=1)
    job = parse_job(data)
    # Execute
    run = drive(job, tmp_path / "work")
    # Assert: every type registered with its reasons, none deployed
    assert run.error is None, run.error
    library = library_for(job)
    text = format_summary(run.summary)
    for t, info in run.summary["types"].items():
        assert info["version"] == "1" and not info["promoted"] and info["champion"] is None, info
        assert "KID random" in info["reason"] and "above the ceiling" in info["reason"], info["reason"]
        assert library.champion(t) is None
        assert library.latest_version(t).tags["entgan.gate"] == "rejected"
        assert f"NO CHAMPION for {t}: its first version v1 failed the gate" in text
    with pytest.raises(NoChampionError):
        generate(job, ["box"], 1, tmp_path / "out")


@pytest.mark.parametrize(("c2st", "passes", "reason"), [
    (0.95, False, "C2ST 0.95 rises above the champion's 0.90 [0.85, 0.94]"),
    (0.94, True, "C2ST 0.94 is within or below the champion's 0.90 [0.85, 0.94]"),
    (0.50, True, "C2ST 0.50 is within or below"),
])
def test_c2st_may_not_exceed_the_champions_interval(c2st, passes, reason, two_metrics):
    champion = {"c2st": 0.9, "c2st_low": 0.85, "c2st_high": 0.94}
    rules = DeploySpec(kid_must_not_rise=False, max_kid_random=None)
    promote, reasons = metrics.gate_decision({"c2st": c2st}, champion, rules)
    assert promote is passes, reasons
    assert len(reasons) == 1 and reasons[0].startswith(reason), reasons


def test_a_metric_too_few_images_could_measure_passes_and_says_so(two_metrics):
    promote, reasons = metrics.gate_decision({}, None, DeploySpec())
    assert promote
    assert reasons == ["C2ST not measured (too few held-out images at the edges)",
                       "KID random not measured (too few held-out images at the edges)"]
