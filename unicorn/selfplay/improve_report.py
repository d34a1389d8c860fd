"""The reports of ``unicorn improve``: per round and overall, as JSON (nothing that changes between identical runs: no
times, no host names, so a resumed run's reports equal an uninterrupted one's byte for byte), markdown tables, and
a plot of every metric over the rounds (skipped with a message when matplotlib is missing).

Comparisons are prompt-paired (evaluation.compare): the delta of a metric between two models over the units both were
scored on, with a bootstrap standard error over those units, and z = delta / se.
"""
from __future__ import annotations

from pathlib import Path

from unicorn.selfplay.evaluation import compare
from unicorn.selfplay.store import atomic_write_bytes, atomic_write_json


def _unit_se(result: dict, metric: str) -> float | None:
    values = list((result.get("units") or {}).get(metric, {}).values())
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5


def _figures(result: dict | None) -> dict | None:
    if result is None:
        return None
    return {"metrics": result["metrics"], "se": {m: _unit_se(result, m) for m in result["metrics"]},
            "per_category": result.get("per_category", {})}


def round_report(index: int, model: str, selfplay: dict, results: dict, base: dict | None,
                 previous: dict | None) -> dict:
    judge = results["judge"]
    report = {"round": index, "model": str(model), "export": judge["export"]["model"],
              "weights": judge["export"]["weights"], "selfplay": selfplay, "cpr": judge["cpr"],
              "train": judge["train"], "eval": _figures(judge["eval"])}
    if judge["eval"] is not None:
        report["vs_base"] = compare(base, judge["eval"]) if base else None
        report["vs_previous"] = compare(previous, judge["eval"]) if previous else None
    if "control" in results:
        control = results["control"]
        report["control"] = {"cpr": control["cpr"], "train": control["train"], "export": control["export"]["model"],
                             "eval": _figures(control["eval"])}
        if control["eval"] is not None and judge["eval"] is not None:
            report["control"]["judge_vs_control"] = compare(control["eval"], judge["eval"])
            report["control"]["vs_base"] = compare(base, control["eval"]) if base else None
            gain = (base or {}).get("metrics", {}).get("selection_gain")
            if gain is not None and "accuracy" in judge["eval"]["metrics"] and gain > 0:
                # the share of the judge's pick-over-mean gain (measured on the base model's drawings) that one
                # round's fine-tuning turned into the mean drawing, over the control
                delta = judge["eval"]["metrics"]["accuracy"] - control["eval"]["metrics"]["accuracy"]
                report["control"]["share_of_selection_gain"] = delta / gain
    return report


def _fmt(v, digits=3) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _delta_cell(d: dict | None) -> str:
    if not d:
        return ""
    z = f", z {d['z']:.1f}" if d.get("z") is not None else ""
    return f"{d['delta']:+.3f} ± {d['se']:.3f}{z}"


def _comparison_table(title: str, comparison: dict | None) -> list[str]:
    if not comparison:
        return []
    lines = [f"### {title}", "", "| metric | delta ± paired bootstrap s.e. | units |", "|---|---|---|"]
    for metric, entry in comparison.items():
        o = entry["overall"]
        lines.append(f"| {metric} | {_delta_cell(o)} | {o['n'] if o else 0} |")
    per_cat = {m: e["per_category"] for m, e in comparison.items() if e.get("per_category")}
    if per_cat:
        metrics = list(per_cat)
        categories = sorted({c for e in per_cat.values() for c in e})
        lines += ["", "| category | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for c in categories:
            lines.append(f"| {c} | " + " | ".join(_delta_cell(per_cat[m].get(c)) for m in metrics) + " |")
    return lines + [""]


def round_markdown(r: dict) -> str:
    sp = r["selfplay"]
    lines = [f"# unicorn improve: round {r['round']}", "",
             f"- model in: `{r['model']}`; exported ({r['weights']} weights): `{r['export']}`",
             f"- self-play: {sp['num_prompts']} of {sp['num_slots']} prompts drawn, {sp['num_kept']} kept "
             f"(acceptance {sp['acceptance_rate']:.1%}), {sp['parse_failures']} unparsed judge replies",
             "- CPR records: " + ", ".join(f"{k} {v}" for k, v in r["cpr"]["cpr_counts"].items() if v),
             f"- training: {r['train']['steps']} steps, final loss {_fmt(r['train']['final_loss'], 4)}", ""]
    if r.get("eval"):
        lines += ["| metric | value ± s.e. over units |", "|---|---|"]
        for m, v in r["eval"]["metrics"].items():
            se = r["eval"]["se"].get(m)
            lines.append(f"| {m} | {v:.4f}" + (f" ± {se:.4f}" if se is not None else "") + " |")
        lines.append("")
        lines += _comparison_table("against the starting model (round 0)", r.get("vs_base"))
        lines += _comparison_table("against the previous round", r.get("vs_previous"))
    if "control" in r:
        c = r["control"]
        lines += ["## control: random rollouts in place of the judge's picks (same prompts, same record counts)", ""]
        if c.get("eval"):
            lines += ["| metric | judge arm | control arm |", "|---|---|---|"]
            for m, v in r["eval"]["metrics"].items():
                lines.append(f"| {m} | {v:.4f} | {_fmt(c['eval']['metrics'].get(m), 4)} |")
            lines.append("")
        lines += _comparison_table("judge arm minus control arm", c.get("judge_vs_control"))
        if c.get("share_of_selection_gain") is not None:
            lines.append(f"Share of the judge's selection gain kept (judge arm minus control, over the base model's "
                         f"pick-over-mean gain): {c['share_of_selection_gain']:.2f}")
            lines.append("")
    return "\n".join(lines)


def write_round(round_dir: Path, report: dict) -> None:
    atomic_write_json(round_dir / "report.json", report)
    atomic_write_bytes(round_dir / "report.md", round_markdown(report).encode())


def overall_report(identity: dict, base: dict | None, rounds: list[dict]) -> dict:
    return {"config": identity, "base": _figures(base), "rounds": rounds}


def overall_markdown(report: dict) -> str:
    rounds = report["rounds"]
    metrics = list((report["base"] or {}).get("metrics", {})) or list((rounds[0].get("eval") or {}).get("metrics", {}))
    lines = ["# unicorn improve", "", f"model `{report['config']['model']}`, recipe `{report['config']['recipe']}`, "
             f"{report['config']['num_prompts']} prompts per round, evaluator `{report['config']['evaluator']}`", ""]
    if metrics:
        lines += ["| round | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        if report["base"]:
            lines.append("| 0 (start) | " + " | ".join(_fmt(report["base"]["metrics"].get(m), 4) for m in metrics) + " |")
        for r in rounds:
            if r.get("eval"):
                lines.append(f"| {r['round']} | " + " | ".join(_fmt(r["eval"]["metrics"].get(m), 4) for m in metrics) + " |")
            if r.get("control", {}).get("eval"):
                lines.append(f"| {r['round']} control | " + " | ".join(
                    _fmt(r["control"]["eval"]["metrics"].get(m), 4) for m in metrics) + " |")
        lines.append("")
        for r in rounds:
            lines += _comparison_table(f"round {r['round']} against round 0", r.get("vs_base"))
            lines += _comparison_table(f"round {r['round']}: judge arm minus control", r.get("control", {}).get("judge_vs_control"))
    else:
        lines.append("no evaluator: rounds trained and exported, nothing measured")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path, log=print) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("improve: matplotlib is not installed, no plot (pip install 'unicorn-umm[dev]')")
        return False
    series = [(0, report["base"])] if report["base"] else []
    series += [(r["round"], r["eval"]) for r in report["rounds"] if r.get("eval")]
    if not series:
        return False
    metrics = list(series[0][1]["metrics"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        xs = [x for x, _ in series]
        ys = [f["metrics"][m] for _, f in series]
        errs = [f["se"].get(m) or 0.0 for _, f in series]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label="judge's picks")
        control = [(r["round"], r["control"]["eval"]) for r in report["rounds"] if r.get("control", {}).get("eval")]
        if control:
            ax.errorbar([x for x, _ in control], [f["metrics"][m] for _, f in control],
                        yerr=[f["se"].get(m) or 0.0 for _, f in control], marker="s", linestyle="none", capsize=3,
                        label="control (random rollout)")
            ax.legend(fontsize=7)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("round")
        ax.set_xticks(xs)
    fig.suptitle("error bars: standard error over the evaluator's units (unpaired; paired deltas in report.md)",
                 fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return True


def write_overall(out: Path, report: dict, log=print) -> None:
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "report.md", overall_markdown(report).encode())
    plot(report, out / "improve.png", log=log)
    log(overall_markdown(report))
