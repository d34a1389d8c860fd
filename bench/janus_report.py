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


def _header(run: dict) -> str:
    time, preset, prompts, rollouts, dtype, device = run["key"]
    cfg = next(iter(run["rows"].values()))["config"]
    return (f"`{preset}`, {prompts} prompts x {rollouts} rollouts, CFG 5, temperature 1, {dtype}, {device}, "
            f"{cfg.get('threads', '?')} torch thread(s); run of {time}")


def render_ratios(run: dict) -> list[str]:
    """Images/s of transformers, the previous hot path and the engine in one run."""
    ours = _value(run, "unicorn", "img_per_s_tokens")
    previous = _value(run, "unicorn-previous", "img_per_s_tokens")
    mode, hf = _hf(run, "img_per_s_tokens")
    lines = [_header(run) + ":", "", "| | images/s (tokens) | vs transformers | vs the previous hot path |",
             "|---|---|---|---|"]
    for name, value in ((f"transformers `generate` ({mode})", hf),
                        ("unicorn, the hot path before issue 14", previous), ("unicorn", ours)):
        if value:
            lines.append(f"| {name} | {value:.3f} | {f'{value / hf:.2f}x' if hf else '-'} | "
                         f"{f'{value / previous:.2f}x' if previous else '-'} |")
    e2e, hf_e2e = _value(run, "unicorn", "img_per_s_end_to_end"), _hf(run, "img_per_s_end_to_end")[1]
    decode, hf_decode = _value(run, "unicorn", "vq_decode_s"), _value(run, "transformers", "vq_decode_s")
    if e2e and hf_e2e:
        lines += ["", f"End to end (tokens + VQ decode): {e2e:.3f} vs {hf_e2e:.3f} img/s ({e2e / hf_e2e:.2f}x); VQ "
                  f"decode of all the images {decode:.1f}s vs transformers' {hf_decode:.1f}s."]
    return lines


def render_breakdown(run: dict) -> list[str]:
    """The step breakdown next to the limits measured in the run."""
    ours, previous = _value(run, "unicorn", "img_per_s_tokens"), _value(run, "unicorn-previous", "img_per_s_tokens")
    limit = _value(run, "limit", "img_per_s_tokens")
    gflops, gbs = _value(run, "machine", "gemm_gflops"), _value(run, "machine", "read_gbs")
    lines = [_header(run) + f": measured matmul {gflops:.0f} GFLOP/s, memory read {gbs:.1f} GB/s. Tokens limit "
             f"(GEMM roofline + KV reads) {limit:.3f} img/s; unicorn {ours:.3f} img/s = {100 * ours / limit:.0f} % "
             "of it" + (f" (the previous hot path {previous:.3f}, {100 * previous / limit:.0f} %)" if previous else "")
             + ". Seconds for the whole workload:", "", "| part | before | now | limit |", "|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for p in PARTS:
        lines.append(f"| {p} | {fmt(_value(run, 'unicorn-previous', f'step_time_s:{p}'))} | "
                     f"{fmt(_value(run, 'unicorn', f'step_time_s:{p}'))} | {fmt(_value(run, 'limit', f'step_time_s:{p}'))} |")
    decode, decode_limit = _value(run, "unicorn", "vq_decode_s"), _value(run, "limit", "vq_decode_s")
    if decode and decode_limit:
        lines += ["", f"VQ decode {decode:.1f}s against a limit of {decode_limit:.1f}s (its FLOPs at the matmul rate)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--readme", help="rewrite the block between the markers in this file")
    args = parser.parse_args()
    runs = load_runs(Path(args.results))
    ratios: dict[tuple, dict] = {}
    breakdowns: dict[tuple, dict] = {}
    for run in runs:  # sorted by time: the latest per workload, dtype and device wins
        workload = run["key"][1:]
        first = next(iter(run["rows"].values()))
        if _hf(run, "img_per_s_tokens")[1] is not None:
            ratios[workload] = run
        if "limits" in first["config"]:  # limits by the current method
            breakdowns[workload] = run
    blocks = []
    for workload in sorted(set(ratios) | set(breakdowns)):
        lines = render_ratios(ratios[workload]) if workload in ratios else []
        if workload in breakdowns:
            lines += ([""] if lines else []) + render_breakdown(breakdowns[workload])
        blocks.append("\n".join(lines))
    text = "\n\n".join(blocks) or "(no run yet)"
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
