"""The summary table (README) and the PNG plots of a results dict (results/latest.json)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import efficiency


def _fmt(value, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def summary_rows(results: dict) -> list[dict]:
    """One row per figure: the figure, what was measured, the target and whether it was met."""
    f = results["figures"]
    rows = []
    if "speedup" in f:
        rows.append(_speedup_row(f["speedup"]))
    if "transfer" in f:
        rows.append(_transfer_row(f["transfer"]))
    if "cost" in f:
        c = f["cost"]
        rows.append({"figure": "3. cloud memory (aggregation vs centralized)",
                     "measured": f"{_fmt(c['memory']['ratio'])}x ({c['memory']['aggregate']['step_peak_kb'] / 1024:.0f} MiB"
                                 f" vs {c['memory']['centralized']['step_peak_kb'] / 1024:.0f} MiB); an edge sends "
                                 f"{c['network']['mean_update_bytes'] / 1024:.0f} KiB/round vs "
                                 f"{c['network']['mean_png_bytes'] / 1024:.0f} KiB of raw PNGs",
                     "target": "<= 0.5x", "met": c["target"]["met"]})
    if "orchestration" in f:
        o = f["orchestration"]
        rows.append({"figure": "4. orchestration overhead (kfp.local vs in-process)",
                     "measured": f"{_fmt(o['ratio_wall_vs_sum'])}x wall vs in-process sum; "
                                 f"{_fmt(o['ratio_wall_vs_makespan'])}x vs same schedule; "
                                 f"{_fmt(o['ratio_cpu'])}x CPU ({_fmt(o['overhead_per_task_cpu_s'], '.1f')} s/task)"
                                 + (f"; {_fmt(o['fresh_processes']['ratio_wall_vs_sum'])}x with a fresh Python per "
                                    "task (plain kfp.local)" if "fresh_processes" in o else ""),
                     "target": "<= 1.15x", "met": o["target"]["met"]})
    if "throughput" in f:
        g = f["throughput"]
        rows.append({"figure": "5. generation throughput (generate vs bare loop)",
                     "measured": (f"{_fmt(g['tmpfs']['ratio'])}x to tmpfs ({g['tmpfs']['generate_images_per_s']:.0f} vs "
                                  f"{g['tmpfs']['bare_images_per_s']:.0f} img/s); " if "tmpfs" in g else "")
                                 + f"{_fmt(g['disk']['ratio'])}x to this VM's disk",
                     "target": ">= 0.8x", "met": g["target"]["met"]})
    if "quality" in f:
        q = f["quality"]
        per = ", ".join(f"{t} {v['fid']:.1f}" for t, v in q["types"].items())
        fewer, steps = q.get("at_fewer_cas_steps"), q.get("cas_steps", results["settings"]["cas_steps"])
        rows.append({"figure": "6. quality (CAS synthetic / real)",
                     "measured": f"{_fmt(q['cas_ratio'])} ({q['cas_synthetic']:.2f} / {q['cas_real']:.2f}) at "
                                 f"{steps} classifier steps"
                                 + _seed_spread(q)
                                 + (f", {_fmt(fewer['cas_ratio'])} at {fewer['steps']}" if fewer else "")
                                 + f"; FID {per}" + _c2st_kid(q["types"]),
                     "target": ">= 0.85", "met": q["target"]["met"]})
    if "fidelity" in f:
        d = f["fidelity"]
        champions = d.get("champions") or {}
        measured = (_c2st_kid(champions).lstrip("; ") + "; centralized C2ST "
                    + ", ".join(f"{t} {_interval(v, 'central_c2st', 'central_low', 'central_high')}"
                                for t, v in champions.items())
                    + "; 95 % intervals overlap: " + _yes_no(champions, "agree")
                    + "; centralized inside the federated interval: " + _yes_no(champions, "central_inside")
                    if champions else "calibration only (no champions)")
        rows.append({"figure": "7. fidelity (champions' C2ST, KID random with floor)", "measured": measured,
                     "target": "federated C2ST agrees with centralized (95 % intervals overlap) for every type",
                     "met": d["target"]["met"]})
    if "downstream" in f:
        d = f["downstream"]
        c = d["conditions"]
        rows.append({"figure": "8. downstream gain (10 % real + synthetic vs 10 % real)",
                     "measured": f"{_fmt(d['gain'], '+.3f')} ({c['real_10']['mean']:.3f} -> "
                                 f"{c['real_10_plus_synthetic']['mean']:.3f}, {len(c['real_10']['per_seed'])} seeds, "
                                 f"seed spread {max(c['real_10']['std'], c['real_10_plus_synthetic']['std']):.3f}); "
                                 f"all real {c['all_real']['mean']:.3f}, "
                                 f"synthetic only {c['synthetic_only']['mean']:.3f}",
                     "target": "gain above the seed spread", "met": d["target"]["met"]})
    if "ablation" in f:
        rows.append(_ablation_row(f["ablation"]))
    if "efficiency" in f:
        rows.append(efficiency.summary_row(f["efficiency"]))
    if "scale" in f:
        from benchmarks.scale import summary_row

        rows.append(summary_row(f["scale"]))
    return rows


def _speedup_row(s: dict) -> dict:
    """Figure 1: speed-up to the KID target, final KID against centralized's, final C2ST (a result
    from before the KID target reads its domain-FID target)."""
    by = ", ".join(f"{n}: {_fmt(v, '.2f')}x" for n, v in s["speedup_by_edges"].items())
    speed = f"{_fmt(s['speedup_entgan_4'])}x (fedgan {_fmt(s['speedup_fedgan_4'])}x)"
    if "target_kid" not in s:
        return {"figure": "1. speed-up to quality (4 edges, entgan)",
                "measured": f"{speed}; final FID {_fmt(s['final_fid_entgan_4_vs_centralized'])}x centralized's; "
                            f"by edges {by}",
                "target": ">= 3x, final FID <= centralized's", "met": s["target"]["met"]}
    c2st = s["final_c2st_mean"]
    return {"figure": "1. speed-up to quality (4 edges, entgan; KID random)",
            "measured": f"{speed} to mean KID {s['target_kid']:.2f} (floor {s['kid_floor']:.2f}±"
                        f"{s['kid_floor_std']:.2f}); final KID {_fmt(s['final_kid_entgan_4'])} vs centralized's "
                        f"{_fmt(s['final_kid_centralized'])}; by edges {by}; final C2ST mean entgan-4 "
                        f"{_fmt(c2st.get('entgan-4'))}, centralized {_fmt(c2st.get('centralized'))}",
            "target": ">= 3x, final KID <= centralized's + 1 SE", "met": s["target"]["met"]}


def _transfer_row(t: dict) -> dict:
    """Figure 2's row: warm's time to the target over scratch's, and what the warm-start rule chooses."""
    warm = t["contenders"]["warm"]
    if "target_kid" not in t:  # runs before figure 2 read KID: an FID target
        measured = (f"{_fmt(t['time_ratio'])}x of scratch's time ({_fmt(t['rounds_ratio'])}x rounds)"
                    if t["time_ratio"] is not None else
                    f"warm start did not reach the target FID {t['target_fid']:.1f} in "
                    f"{len(warm['fid']) - 1} rounds (best {min(warm['fid']):.1f})")
        return {"figure": f"2. lifelong transfer ({t['new_type']} from {t['parent']})", "measured": measured,
                "target": "<= 0.5x", "met": t["target"]["met"]}
    scratch = t["contenders"]["scratch"]
    floor = f"floor {t['kid_floor']:.2f}±{t['kid_floor_std']:.2f}"
    if t["time_ratio"] is not None:
        measured = (f"{_fmt(t['time_ratio'])}x of scratch's time ({_fmt(t['rounds_ratio'])}x rounds) to mean KID "
                    f"{t['target_kid']:.2f} ({floor})")
    elif warm["reached_at_round"] is None:
        measured = (f"warm start did not reach the target KID {t['target_kid']:.2f} ({floor}) in "
                    f"{len(warm['kid']) - 1} rounds (best {min(warm['kid']):.2f})")
    else:  # both read at or below the target before training: no time to compare
        measured = f"both at the target KID {t['target_kid']:.2f} ({floor}) from round 0"
    measured += (f"; final KID warm {warm['final_kid']:.2f}, scratch {scratch['final_kid']:.2f}; the plan's rule "
                 f"chooses {t['rule_chooses']} (relative distance {_fmt(t['relative_distance'])}, warm needs "
                 f"<= {t['warm_start_max_relative']})")
    return {"figure": f"2. lifelong transfer ({t['new_type']} from {t['parent']}; KID random)", "measured": measured,
            "target": "<= 0.5x", "met": t["target"]["met"]}


def _ablation_row(a: dict) -> dict:
    """Figure 9: the variant with the lowest C2ST mean against issue 16's target."""
    rows = a["variants"]
    best = min(rows, key=lambda n: (rows[n]["c2st_mean"], n))  # ties: the first name alphabetically
    b, target = rows[best], a["target"]
    others = ", ".join(f"{n} {r['c2st_mean']:.2f}" for n, r in rows.items() if n != best)
    return {"figure": f"9. recipe ablation (federated C2ST mean over {', '.join(a['types'])})",
            "measured": f"best {best} {b['c2st_mean']:.3f} (CAS ratio {_fmt(b['cas_ratio'])}, downstream gain "
                        f"{b['downstream_gain']:+.3f}); {others}",
            "target": f"C2ST mean <= {target['c2st_mean_max']:.2f}, every type < {target['c2st_type_max']:.2f}, "
                      f"CAS ratio >= {target['cas_ratio_min']:.2f}, gain > 0",
            "met": target["met"]}


def _c2st_kid(types: dict) -> str:
    """'; C2ST box 0.93 [0.86, 0.96], ...; KID random box 0.24 (floor -0.09±0.24), ...' where measured."""
    with_c2st = {t: v for t, v in types.items() if "c2st" in v}
    if not with_c2st:
        return ""
    c2st = ", ".join(f"{t} {_interval(v, 'c2st', 'c2st_low', 'c2st_high')}" for t, v in with_c2st.items())
    kid = ", ".join(f"{t} {v['random_kid']:.2f} (floor {v['random_kid_floor']:.2f}±{v['random_kid_floor_std']:.2f})"
                    for t, v in with_c2st.items() if "random_kid" in v)
    return f"; C2ST {c2st}" + (f"; KID random {kid}" if kid else "")


def _interval(v: dict, value: str, low: str, high: str) -> str:
    """'0.93 [0.86, 0.96]' from a reading's value and 95 % interval keys."""
    return f"{v[value]:.2f} [{v[low]:.2f}, {v[high]:.2f}]"


def _yes_no(types: dict, key: str) -> str:
    """'box yes, clutter no, ...' for a boolean key of each type's reading."""
    return ", ".join(f"{t} {'yes' if v[key] else 'no'}" for t, v in types.items())


def _seed_spread(q: dict) -> str:
    """The table's note on figure 6's classifier seeds, e.g. ", mean of 5 classifier seeds (0.83-0.92)";
    empty when its classifiers were trained once."""
    per_seed = [r for r in q.get("cas_ratio_per_seed", []) if r is not None]
    if len(per_seed) < 2:
        return ""
    return f", mean of {len(per_seed)} classifier seeds ({min(per_seed):.2f}-{max(per_seed):.2f})"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| figure | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {r['figure']} | {r['measured']} | {r['target']} | {'yes' if r['met'] else 'no'} |" for r in rows]
    return "\n".join(lines)


def draw_all(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, written = results["figures"], []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(out / name)

    if "speedup" in f and "target_kid" in f["speedup"]:
        save(_speedup_plot(plt, f["speedup"]), "speedup.png")
    if "transfer" in f:
        save(_transfer_plot(plt, f["transfer"]), "transfer.png")
    if "cost" in f:
        c = f["cost"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        mem = c["memory"]
        left.bar(["aggregate", "centralized"], [mem["aggregate"]["step_peak_kb"] / 1024,
                                                mem["centralized"]["step_peak_kb"] / 1024])
        left.set(ylabel="MiB above post-import RSS", title="peak memory of the step")
        edges = list(c["network"]["per_edge"])
        width = 0.4
        xs = range(len(edges))
        right.bar([x - width / 2 for x in xs], [c["network"]["per_edge"][e]["update_bytes"] / 1024 for e in edges],
                  width, label="update per round")
        right.bar([x + width / 2 for x in xs], [c["network"]["per_edge"][e]["png_bytes"] / 1024 for e in edges],
                  width, label="raw PNGs")
        right.set(xticks=list(xs), xticklabels=edges, ylabel="KiB", title="what an edge sends")
        right.legend(fontsize=8)
        save(fig, "cost.png")
    if "orchestration" in f:
        o = f["orchestration"]
        fig, ax = plt.subplots(figsize=(7, 3.6))
        bars = {"in-process sum": o["in_process"]["wall_s"], "in-process,\n2 edges at once": o["in_process"]["makespan_s"]}
        if "fresh_processes" in o:
            bars["kfp.local,\nfresh Python per task"] = o["fresh_processes"]["wall_s"]
        bars["kfp.local,\nforked tasks (entgan run)"] = o["pipeline"]["wall_s"]
        ax.bar(list(bars), list(bars.values()))
        ax.tick_params(axis="x", labelsize=8)
        ax.set(ylabel="wall seconds", title="the same job: pipeline vs in-process")
        save(fig, "orchestration.png")
    if "throughput" in f:
        g = f["throughput"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        groups = [(where, g[where]) for where in ("disk", "tmpfs") if where in g]
        xs = range(len(groups))
        ax.bar([x - 0.2 for x in xs], [v["bare_images_per_s"] for _, v in groups], 0.4, label="bare forward loop")
        ax.bar([x + 0.2 for x in xs], [v["generate_images_per_s"] for _, v in groups], 0.4, label="entgan generate")
        ax.set(xticks=list(xs), xticklabels=[n for n, _ in groups], ylabel="images / s", title="generation throughput")
        ax.legend(fontsize=8)
        save(fig, "throughput.png")
    if "quality" in f:
        q = f["quality"]
        types = list(q["types"])
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
        for ax, key in zip(axes, ("fid", "precision", "recall", "cas_ratio")):
            ax.bar(types, [q["types"][t][key] or 0 for t in types])
            ax.set(title=key)
            ax.tick_params(axis="x", labelrotation=45)
        axes[3].axhline(0.85, color="grey", ls="--")
        axes[3].set_title(f"cas_ratio (all {_fmt(q['cas_ratio'])}; --- target)")
        save(fig, "quality.png")
    if (f.get("fidelity") or {}).get("champions"):
        champions = f["fidelity"]["champions"]
        types = list(champions)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        xs = range(len(types))
        for offset, key, label in ((-0.2, "c2st", "federated"), (0.2, "central_c2st", "centralized")):
            low = "c2st_low" if key == "c2st" else "central_low"
            high = "c2st_high" if key == "c2st" else "central_high"
            values = [champions[t][key] for t in types]
            errors = [[v - champions[t][low] for v, t in zip(values, types)],
                      [champions[t][high] - v for v, t in zip(values, types)]]
            left.errorbar([x + offset for x in xs], values, yerr=errors, fmt="o", capsize=3, label=label)
        left.axhline(0.5, color="grey", ls=":", label="chance (as real)")
        left.set(xticks=list(xs), xticklabels=types, ylim=(0.4, 1.02), ylabel="C2ST accuracy [95 %]",
                 title="champions vs real: C2ST")
        left.legend(fontsize=8)
        right.bar([x - 0.2 for x in xs], [champions[t]["random_kid"] for t in types], 0.4, label="KID random")
        right.bar([x + 0.2 for x in xs], [champions[t]["random_kid_floor"] for t in types], 0.4,
                  yerr=[champions[t]["random_kid_floor_std"] for t in types], label="floor (real vs real) ± spread")
        right.set(xticks=list(xs), xticklabels=types, ylabel="KID (random features)", title="KID beside its floor")
        right.legend(fontsize=8)
        save(fig, "fidelity.png")
    if "downstream" in f:
        c = f["downstream"]["conditions"]
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        names = list(c)
        means = [c[n]["mean"] for n in names]
        ax.bar(names, means, yerr=[[m - c[n]["min"] for m, n in zip(means, names)],
                                   [c[n]["max"] - m for m, n in zip(means, names)]], capsize=4)
        ax.tick_params(axis="x", labelsize=8)
        ax.set(ylabel="held-out type accuracy (mean, min-max)", title="downstream: does synthetic data help?")
        save(fig, "downstream.png")
    if "ablation" in f:
        save(_ablation_plot(plt, f["ablation"]), "ablation.png")
    if "efficiency" in f:
        save(efficiency.plot(plt, f["efficiency"]), "efficiency.png")
    if "scale" in f:
        from benchmarks.scale import plot

        save(plot(plt, f["scale"]), "scale.png")
    return written


def _transfer_plot(plt, t: dict):
    """Figure 2: the new type's quality per round, warm vs scratch (KID beside its floor, or FID in
    runs before figure 2 read KID)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    metric = "kid" if "target_kid" in t else "fid"
    for name, c in t["contenders"].items():
        ax.plot(range(len(c[metric])), c[metric], marker="o", ms=3, label=name)
    title = f"new type {t['new_type']} (parent {t['parent']}; rule: {t.get('rule_chooses', '?')})"
    if metric == "kid":
        ax.axhline(t["target_kid"], color="grey", ls="--", label="target")
        ax.axhspan(t["kid_floor"] - t["kid_floor_std"], t["kid_floor"] + t["kid_floor_std"], color="grey", alpha=0.2,
                   label="floor ± spread")
        ax.set(xlabel="round", ylabel="mean KID (random features)", yscale="symlog", title=title)
    else:
        ax.axhline(t["target_fid"], color="grey", ls="--", label="target")
        ax.set(xlabel="round", ylabel="domain-FID", yscale="log", title=title)
    ax.legend(fontsize=8)
    return fig


def _speedup_plot(plt, s: dict):
    """Figure 1: mean KID (random) vs critical-path CPU time beside floor and target; speed-up vs
    edges; each contender's final C2ST per type."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.2))
    for name, c in s["contenders"].items():
        left.plot(c["cpu_s"], c["kid"], marker="o", ms=3, label=name)
    left.axhline(s["target_kid"], color="grey", ls="--", label="target")
    left.axhspan(s["kid_floor"] - s["kid_floor_std"], s["kid_floor"] + s["kid_floor_std"], color="green", alpha=0.15,
                 label="floor (real vs real) ± spread")
    left.set_yscale("symlog", linthresh=1.0)
    left.set(xlabel="critical-path CPU seconds", ylabel="mean KID, random features",
             title="KID vs time (critical path)")
    left.legend(fontsize=7)
    edges = [int(n) for n in s["speedup_by_edges"]]
    middle.plot(edges, [v or 0 for v in s["speedup_by_edges"].values()], marker="o", label="entgan (1 = centralized)")
    middle.axhline(3.0, color="grey", ls="--", label="target at 4 edges")
    middle.set(xlabel="edges", ylabel="speed-up to target KID", xticks=edges, title="speed-up vs edges")
    middle.legend(fontsize=8)
    names = list(s["contenders"])
    types = sorted({t for c in s["contenders"].values() for t, v in c["final_c2st"]["per_type"].items() if v})
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        per = s["contenders"][name]["final_c2st"]["per_type"]
        xs = [j + (i - (len(names) - 1) / 2) * width for j, t in enumerate(types) if per.get(t)]
        values = [per[t]["c2st"] for t in types if per.get(t)]
        errors = [[per[t]["c2st"] - per[t]["c2st_low"] for t in types if per.get(t)],
                  [per[t]["c2st_high"] - per[t]["c2st"] for t in types if per.get(t)]]
        right.errorbar(xs, values, yerr=errors, fmt="o", ms=4, capsize=2, label=name)
    right.axhline(0.5, color="grey", ls=":", label="chance (as real)")
    right.set(xticks=list(range(len(types))), xticklabels=types, ylim=(0.4, 1.02), ylabel="C2ST accuracy [95 %]",
              title="final generators vs real: federated C2ST")
    right.legend(fontsize=7)
    return fig


def _ablation_plot(plt, a: dict):
    """Figure 9: per variant, the C2ST mean (and each type's C2ST) and the CAS ratio, as bars."""
    names = list(a["variants"])
    rows = [a["variants"][n] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    xs = range(len(names))
    left.bar(xs, [r["c2st_mean"] for r in rows], color="tab:blue", alpha=0.7, label="mean over types")
    for t in a["types"]:
        left.plot(xs, [r["types"][t]["c2st"] for r in rows], ls="", marker="o", ms=4, label=t)
    left.axhline(a["target"]["c2st_mean_max"], color="grey", ls="--", label="target (mean)")
    left.axhline(0.5, color="grey", ls=":", label="chance (as real)")
    left.set(xticks=list(xs), ylim=(0.4, 1.02), ylabel="federated C2ST", title="closer to real: lower")
    left.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    left.legend(fontsize=7)
    right.bar(xs, [r["cas_ratio"] or 0 for r in rows], color="tab:orange", alpha=0.8)
    right.axhline(a["target"]["cas_ratio_min"], color="grey", ls="--", label="target")
    right.set(xticks=list(xs), ylabel="CAS synthetic / real", title="classification accuracy score ratio")
    right.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    right.legend(fontsize=7)
    return fig
