"""The README's engine figures, generated from bench/results/janus_images.jsonl (never typed by hand).

    python bench/janus_report.py                    # prints the markdown of the latest run per dtype
    python bench/janus_report.py --readme README.md # rewrites the block between the janus_images markers

A run is the rows one bench invocation wrote (same time stamp, preset, prompts x rollouts, dtype).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "janus_images.jsonl"
BEGIN, END = "<!-- janus_images:begin (bench/janus_report.py) -->", "<!-- janus_images:end -->"
PARTS = ("GEMMs", "attention", "sampling", "elementwise", "input prep", "scheduling")


def load_runs(path: Path) -> list[dict]:
    runs: dict[tuple, dict] = defaultdict(dict)
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        cfg = row["config"]
        key = (row["time"], cfg["preset"], cfg["prompts"], cfg["rollouts"], cfg["dtype"], row["device"])
        runs[key][(row["provider"], row["metric"])] = row
    return [dict(key=key, rows=rows) for key, rows in sorted(runs.items())]


def _value(run: dict, provider: str, metric: str):
    row = run["rows"].get((provider, metric))
    return None if row is None else row["value"]


def _hf(run: dict, metric: str):
    for (provider, m), row in run["rows"].items():
        if provider.startswith("transformers-") and m == metric:
            return provider[len("transformers-"):], row["value"]
    return None, None


def render(run: dict) -> str:
    time, preset, prompts, rollouts, dtype, device = run["key"]
    cfg = next(iter(run["rows"].values()))["config"]
    ours = _value(run, "unicorn", "img_per_s_tokens")
    previous = _value(run, "unicorn-previous", "img_per_s_tokens")
    limit = _value(run, "limit", "img_per_s_tokens")
    mode, hf = _hf(run, "img_per_s_tokens")
    lines = [f"`{preset}`, {prompts} prompts x {rollouts} rollouts, CFG 5, temperature 1, {dtype}, {device}, "
             f"{cfg.get('threads', '?')} torch thread(s); run of {time} (`bench/results/janus_images.jsonl`):", "",
             "| | images/s (tokens) | vs transformers | share of the tokens limit |", "|---|---|---|---|"]

    def line(name, value):
        ratio = f"{value / hf:.2f}x" if hf else "-"
        share = f"{100 * value / limit:.0f} %" if limit else "-"
        lines.append(f"| {name} | {value:.3f} | {ratio} | {share} |")

    if hf:
        line(f"transformers `generate` ({mode})", hf)
    if previous:
        line("unicorn, the hot path before issue 14 (same run)", previous)
    if ours:
        line("unicorn", ours)
    if limit:
        lines.append(f"| limit: GEMM FLOPs / matmul GFLOP/s + KV bytes / read GB/s, measured | {limit:.3f} | - | 100 % |")
    gflops, gbs = _value(run, "machine", "gemm_gflops"), _value(run, "machine", "read_gbs")
    lines.append("")
    if gflops:
        lines.append(f"Measured in the run: matmul {gflops:.0f} GFLOP/s, memory read {gbs:.1f} GB/s.")
    e2e, hf_e2e = _value(run, "unicorn", "img_per_s_end_to_end"), _hf(run, "img_per_s_end_to_end")[1]
    decode, hf_decode = _value(run, "unicorn", "vq_decode_s"), _value(run, "transformers", "vq_decode_s")
    decode_limit = _value(run, "limit", "vq_decode_s")
    if e2e and hf_e2e:
        lines.append(f"End to end (tokens + VQ decode): {e2e:.3f} vs {hf_e2e:.3f} img/s ({e2e / hf_e2e:.2f}x); VQ "
                     f"decode of all images {decode:.1f}s vs transformers' {hf_decode:.1f}s"
                     + (f" (limit {decode_limit:.1f}s)" if decode_limit else "") + ".")
    parts = {p: _value(run, "unicorn", f"step_time_s:{p}") for p in PARTS}
    if any(v is not None for v in parts.values()):
        before = {p: _value(run, "unicorn-previous", f"step_time_s:{p}") for p in PARTS}
        limits = {p: _value(run, "limit", f"step_time_s:{p}") for p in PARTS}
        lines += ["", "Where the token time goes (seconds for the whole workload; limit: that part's work at the "
                  "measured peak):", "", "| part | before (s) | now (s) | limit (s) |", "|---|---|---|---|"]
        for p in PARTS:
            fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            lines.append(f"| {p} | {fmt(before[p])} | {fmt(parts[p])} | {fmt(limits[p])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--readme", help="rewrite the block between the markers in this file")
    args = parser.parse_args()
    runs = load_runs(Path(args.results))
    latest: dict[str, dict] = {}
    for run in runs:  # sorted by time: the last one per workload, dtype and device wins; only runs with a breakdown
        if ("machine", "gemm_gflops") in run["rows"]:
            latest[run["key"][1:]] = run
    text = "\n\n".join(render(run) for run in latest.values()) or "(no run with a breakdown yet)"
    if not args.readme:
        print(text)
        return
    readme = Path(args.readme)
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{readme}: the markers {BEGIN!r} and {END!r} are missing")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"{readme}: janus_images block rewritten")


if __name__ == "__main__":
    main()
