"""`make bench-quick`: the benchmark harness on tiny settings, so that it cannot rot.

It runs `python -m benchmarks --quick` for real (the kfp.local pipeline of figure 4 included) and
checks that the results file holds every figure with values in their possible ranges. Values are
not compared with targets: tiny settings say nothing about speed or quality.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import FIGURES
from benchmarks.common import FULL, QUICK
from entgan.job.spec import load_job
from entgan.steps.plan import WARM_START_MAX_RELATIVE
from tests.conftest import hang_guard

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    guard = hang_guard(3600)  # bench-quick takes minutes on a loaded 2-core machine: this is a hang guard only
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp / "results"), "--workdir",
             str(tmp / "work")], cwd=ROOT, capture_output=True, text=True, timeout=guard,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"hang guard: `python -m benchmarks --quick` still running after {guard:.0f} s (a hang, not a "
                    f"slow machine; set ENTGAN_TEST_SLOWDOWN to scale the guard)\n{(err.stdout or b'')[-2000:]!r}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads((tmp / "results" / "latest.json").read_text()), tmp / "results", out.stdout


def test_every_figure_is_there_with_a_target_verdict(results):
    data, folder, stdout = results
    assert data["mode"] == "quick" and set(data["figures"]) == set(FIGURES)
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["torch_threads"] == 1
    for name, figure in data["figures"].items():
        assert isinstance(figure["target"]["met"], bool), name
        assert figure["what"] and figure["how"], name
    assert [row["figure"].split(".")[0] for row in data["summary"]] == [str(i) for i in range(1, 12)]
    assert "| figure | measured | target | met |" in stdout
    for png in ("speedup", "transfer", "cost", "orchestration", "throughput", "quality", "fidelity", "downstream",
                "ablation", "efficiency", "scale"):
        assert (folder / f"{png}.png").stat().st_size > 1000


def test_training_curves_are_timed_and_scored(results):
    speedup, transfer = results[0]["figures"]["speedup"], results[0]["figures"]["transfer"]
    assert set(speedup["contenders"]) == {"centralized", "entgan-2", "entgan-4", "entgan-8", "fedgan-4"}
    for name, c in {**speedup["contenders"], **transfer["contenders"]}.items():
        assert c["cpu_s"][0] == 0 and all(b > a for a, b in zip(c["cpu_s"], c["cpu_s"][1:])), name
        assert all(_positive(f) for f in c["fid"]), name
    assert speedup["contenders"]["centralized"]["speedup"] in (1.0, None)  # None: target met at round 0
    # figure 1's target is a KID (random features) above the real-vs-real floor
    floor, spread = speedup["kid_floor"], speedup["kid_floor_std"]
    assert math.isfinite(floor) and spread > 0 and speedup["target_kid"] >= floor + spread * 1.25 - 1e-9
    for name, c in speedup["contenders"].items():
        assert len(c["kid"]) == len(c["fid"]) and all(math.isfinite(k) for k in c["kid"]), name
        assert c["kid_floor"] == pytest.approx(floor) and c["target_metric"] == "kid", name
        at = c["reached_at_round"]
        assert at is None or (c["kid"][at] <= speedup["target_kid"] and all(k > speedup["target_kid"]
                                                                          for k in c["kid"][:at])), name
        final = c["final_c2st"]  # every contender's final generators read with the federated C2ST
        assert set(final["per_type"]) == {"box", "clutter", "robot", "table"}, name
        read = [v for v in final["per_type"].values() if v]
        assert read and all(0 <= v["c2st_low"] <= v["c2st"] <= v["c2st_high"] <= 1 for v in read), name
        assert final["mean"] == pytest.approx(sum(v["c2st"] for v in read) / len(read)), name
    assert speedup["final_kid_centralized"] == speedup["contenders"]["centralized"]["kid"][-1]
    assert transfer["parent"] in ("box", "clutter", "robot", "table")
    # figure 2's target is a KID above the floor too, set from scratch's final reading
    assert transfer["target_kid"] >= transfer["kid_floor"] + transfer["kid_floor_std"] * 1.25 - 1e-9
    for name, c in transfer["contenders"].items():
        assert c["target_metric"] == "kid" and all(math.isfinite(k) for k in c["kid"]), name
        at = c["reached_at_round"]
        assert at is None or (c["kid"][at] <= transfer["target_kid"] and all(k > transfer["target_kid"]
                                                                            for k in c["kid"][:at])), name
    near = transfer["relative_distance"] <= WARM_START_MAX_RELATIVE
    assert transfer["rule_chooses"] == ("warm" if near else "scratch")


def test_cost_orchestration_throughput_and_quality_are_in_range(results):
    f = results[0]["figures"]
    memory, network = f["cost"]["memory"], f["cost"]["network"]
    assert _positive(memory["aggregate"]["step_peak_kb"]) or memory["aggregate"]["step_peak_kb"] == 0
    assert _positive(memory["centralized"]["step_peak_kb"])
    assert all(_positive(e["update_bytes"]) and _positive(e["png_bytes"]) for e in network["per_edge"].values())
    o = f["orchestration"]
    assert _positive(o["pipeline"]["wall_s"]) and _positive(o["in_process"]["wall_s"])
    assert o["in_process"]["makespan_s"] <= o["in_process"]["wall_s"] + 1e-9
    assert o["pipeline"]["tasks"] == len(o["in_process"]["tasks"])  # the same steps on both sides
    assert _positive(f["throughput"]["disk"]["bare_images_per_s"]) and _positive(f["throughput"]["ratio"])
    q = f["quality"]
    assert set(q["types"]) == {"box", "clutter", "robot", "table", "pillar"}
    for t, v in q["types"].items():
        assert _positive(v["fid"]) and 0 <= v["precision"] <= 1 and 0 <= v["recall"] <= 1, t
        assert 0 <= v["cas_synthetic"] <= 1 and 0 <= v["cas_real"] <= 1, t
        assert 0 <= v["c2st_low"] <= v["c2st"] <= v["c2st_high"] <= 1, t  # C2ST with its interval
        if "random_kid" in v:  # KID beside its floor (a type with fewer than 4 held-out images has none)
            assert v["random_kid_floor_std"] > 0 and v["random_kid"] == v["random_kid"], t
    assert any("random_kid" in v for v in q["types"].values())
    # CAS is averaged over classifier seeds: the ratio of the averages lies within the seeds' ratios
    per_seed = [r for r in q["cas_ratio_per_seed"] if r is not None]
    assert len(q["cas_ratio_per_seed"]) == q["cas_seeds"] == results[0]["settings"]["cas_seeds"] >= 2
    if q["cas_real"] > 0 and len(per_seed) == q["cas_seeds"]:
        assert q["cas_ratio"] == pytest.approx(q["cas_synthetic"] / q["cas_real"])
        assert min(per_seed) - 1e-9 <= q["cas_ratio"] <= max(per_seed) + 1e-9


def test_scale_measures_every_quantity_on_every_axis(results):
    from benchmarks.scale import AXES_QUICK, QUANTITIES

    data = results[0]
    s = data["figures"]["scale"]
    assert s["axes"] == {a: list(v) for a, v in AXES_QUICK.items()}
    for axis, points in s["points"].items():
        assert [p["value"] for p in points] == list(AXES_QUICK[axis]), axis
        for p in points:
            for q in QUANTITIES:
                assert _positive(p[q]) or (q == "cloud_peak_mib" and p[q] == 0), (axis, q, p[q])
            assert p["workflow_bytes"] == p["workflow_spec_bytes"] + p["workflow_status_bytes"]
        for q in QUANTITIES:
            e = s["exponents"][axis][q]
            assert e is None or math.isfinite(e), (axis, q)
    # What the axes must change, they change: more edges, more nodes in the Workflow's status and
    # more MLflow calls; more rounds, a bigger IR; a bigger image, a bigger model to send.
    edges, rounds, size = s["points"]["edges"], s["points"]["rounds"], s["points"]["image_size"]
    assert edges[-1]["workflow_nodes"] > edges[0]["workflow_nodes"] and edges[-1]["mlflow_calls"] > edges[0]["mlflow_calls"]
    assert rounds[-1]["ir_bytes"] > rounds[0]["ir_bytes"] and size[-1]["edge_bytes"] > size[0]["edge_bytes"]
    assert data["machine"]["cpu_model"] and isinstance(data["machine"]["vector_extensions"], list)


def test_quality_scores_champions_trained_as_the_demo_job_trains():
    # `make bench` trains figure 6's champions with the demo job's own train section, so a change to
    # jobs/demo.yaml changes what figure 6 scores; the quick mode uses its tiny settings.
    demo = load_job(ROOT / "jobs/demo.yaml")
    assert FULL.champion_train() == demo.train and FULL.champion_cas_steps() == demo.eval.cas_steps
    assert QUICK.champion_job is None and QUICK.champion_train().batch_size == QUICK.batch_size // 2


def test_figure_10_measures_the_demo_recipe_against_the_candidate():
    # figure 10's "old" is jobs/demo.yaml's recipe: if the job drifts, the figure no longer measures the demo
    from benchmarks import efficiency

    demo = load_job(ROOT / "jobs/demo.yaml").train
    assert {k: getattr(demo, k) for k in efficiency.OLD} == efficiency.OLD
    assert {k for k, v in efficiency.NEW.items() if efficiency.OLD.get(k) != v} == {"architecture", "batch_size"}


def test_quality_records_how_its_champions_were_trained(results):
    q, settings = results[0]["figures"]["quality"], results[0]["settings"]
    champions = q["champions"]
    assert champions["pillar_parent"] in ("box", "clutter", "robot", "table")
    assert set(champions["fid_per_round"]) == set(q["types"])
    for t, fids in champions["fid_per_round"].items():
        assert len(fids) == settings["rounds"] + 1 and all(_positive(f) for f in fids), t
    assert q["cas_steps"] == settings["cas_steps"] and q["at_fewer_cas_steps"] is None  # quick: no job of its own


def test_fidelity_and_downstream_are_in_range(results):
    f = results[0]["figures"]
    fid = f["fidelity"]
    assert set(fid["calibration"]) == {"box", "clutter", "robot", "table"}
    for t, table in fid["calibration"].items():
        assert set(table) == {"none", "blur 0.6", "blur 1.0", "noise 0.1", "checkerboard", "colour shift 0.2",
                              "mode collapse"}, t
        for row in table.values():
            assert 0 <= row["c2st_low"] <= row["c2st"] <= row["c2st_high"] <= 1, t
            assert row["random_kid_floor_std"] >= 0 and math.isfinite(row["random_kid"]), t
    for t, c in fid["champions"].items():
        assert 0 <= c["c2st_low"] <= c["c2st"] <= c["c2st_high"] <= 1 and 0 <= c["central_c2st"] <= 1, t
        assert 0 <= c["central_low"] <= c["central_c2st"] <= c["central_high"] <= 1, t
        assert c["agree"] == (c["c2st_low"] <= c["central_high"] and c["central_low"] <= c["c2st_high"]), t
        assert c["central_inside"] == (c["c2st_low"] <= c["central_c2st"] <= c["c2st_high"]), t
    assert fid["target"]["met"] == all(c["agree"] for c in fid["champions"].values())
    cost = fid["edge_cost"]
    assert cost["c2st_cpu_s"] > 0 and cost["bytes"] == 16 + cost["held_out_images"] * (96 + 64) * 4
    down = f["downstream"]
    assert set(down["conditions"]) == {"real_10", "real_10_plus_synthetic", "all_real", "synthetic_only"}
    for name, c in down["conditions"].items():
        assert 0 <= c["min"] <= c["mean"] <= c["max"] <= 1 and len(c["per_seed"]) >= 2, name
    assert down["gain"] == pytest.approx(down["conditions"]["real_10_plus_synthetic"]["mean"]
                                         - down["conditions"]["real_10"]["mean"])


def test_ablation_summary_names_the_best_variant(results):
    data = results[0]
    ablation = data["figures"]["ablation"]
    row = next(r for r in data["summary"] if r["figure"].startswith("9."))
    best = min(ablation["variants"], key=lambda n: (ablation["variants"][n]["c2st_mean"], n))
    assert row["figure"].startswith("9.") and f"best {best} " in row["measured"]
    assert row["met"] == ablation["target"]["met"]
    for name, v in ablation["variants"].items():
        assert 0 <= v["c2st_mean"] <= 1 and all(0 <= r["c2st"] <= 1 for r in v["types"].values()), name


def test_efficiency_compares_the_two_recipes_back_to_back(results):
    data = results[0]
    e = data["figures"]["efficiency"]
    old, new = e["contenders"]["old"], e["contenders"]["new"]
    assert e["cpu_ratio"] == pytest.approx(new["train_cpu_s"] / old["train_cpu_s"])
    assert e["c2st_mean_new"] == pytest.approx(new["scores"]["c2st_mean"]) and 0 <= e["c2st_max_new"] <= 1
    assert e["gflops_ratio"] == pytest.approx(new["step"]["gflops"] / new["step"]["sgemm_gflops"])
    assert e["machine"]["cpu_model"] and e["machine"]["cores"] >= 1 and isinstance(e["machine"]["vector_extensions"], list)
    for c in (old, new):
        assert _positive(c["step"]["gflop"]) and _positive(c["step"]["ms"]) and _positive(c["step"]["sgemm_gflops"])
        cpus = [p["train_cpu_s"] for p in c["curve"]]
        assert len(cpus) == e["recipes"]["old"]["rounds"] and all(b > a for a, b in zip(cpus, cpus[1:]))
    assert new["step"]["gflop"] < old["step"]["gflop"]  # the candidate's batch is smaller
    row = next(r for r in data["summary"] if r["figure"].startswith("10."))
    assert row["met"] == e["target"]["met"] and f"{e['cpu_ratio']:.2f}x" in row["measured"]


def test_figure_1_target_is_a_distance_above_the_kid_floor():
    # KID is unbiased: a centralized run that ends at (or below) its floor must still leave a target
    # above the floor (slack x the floor's spread), never slack x a negative or near-zero number.
    from benchmarks.speedup import kid_target
    from benchmarks.training import Curve
    from entgan.evaluation.two_sample import KID

    def curve(final_kid: float) -> Curve:
        c = Curve("centralized")
        for cpu, kid in ((0.0, 500.0), (1.0, final_kid)):
            c.add(cpu, cpu, {"box": 1.0, "table": 1.0},
                  {"box": KID(kid, 0.1, -0.1, 0.2, 10), "table": KID(kid, 0.1, 0.1, 0.4, 10)})
        return c

    far = kid_target(curve(4.0), 1.25)
    assert far["kid_floor"] == pytest.approx(0.0) and far["kid_floor_std"] == pytest.approx(0.3)
    assert far["target_kid"] == pytest.approx(1.25 * 4.0) and not far["from_floor_spread"]
    at_floor = kid_target(curve(-0.05), 1.25)
    assert at_floor["target_kid"] == pytest.approx(1.25 * 0.3) and at_floor["from_floor_spread"]
    assert curve(-0.05).reached(at_floor["target_kid"], "kid") == 1 and curve(4.0).reached(0.5, "fid") is None
