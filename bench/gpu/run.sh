#!/usr/bin/env bash
# bench/gpu/run.sh [janus|bagel|all] [--smoke]: the GPU benchmarks of issues 13 and 14 in one command.
#
#   janus: Janus-Pro-7B shapes in bf16, random weights built on the GPU, 8 and 64 prompts x 8 rollouts with CFG;
#          the engine vs transformers (batched, chunks of 8 prompts: all 64 do not fit) in the same run; img/s,
#          decode read bandwidth and TFLOP/s next to the ceilings, peak memory and utilisation.
#   bagel: BAGEL-7B-MoT shapes in bf16 at 512^2 / 20 timesteps (8 rollouts) and 1024^2 / 50 (2 rollouts), text CFG
#          on every step; the engine (and BagelInference's batched loop) vs the official loop's shape; s/img,
#          TFLOP/s and MFU, peak memory.
#
# Rows go to bench/results/{janus_images,bagel_t2i}.jsonl (each names the card), the console to
# bench/results/gpu/<time>-<part>.log. Each part runs under its own time limit (JANUS_BUDGET_S, BAGEL_BUDGET_S:
# 240 s each), and writes its rows as they exist, so a hang or a failure in one part leaves the other's rows.
#
# Where $OUT names a folder (the lent machines return only what is under it), the log is written there too, as
# $OUT/results/gpu/<time>-<part>.log, and each results file, whole, is copied to $OUT/results/ after each part:
# copy them over bench/results/ in the checkout the call was made from, then commit.
#
# --smoke (or UNICORN_GPU_SMOKE=1): the same code paths with tiny presets on the CPU in seconds, rows and log
# under UNICORN_BENCH_OUT (default: a new temporary directory); tests/test_gpu_bench_smoke.py runs it.
# PYTHON names the interpreter (default: python3).
set -uo pipefail

part=all
smoke=${UNICORN_GPU_SMOKE:-0}
for arg in "$@"; do
    case $arg in
        janus|bagel|all) part=$arg ;;
        --smoke) smoke=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (expected janus, bagel or all, and optionally --smoke)" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
py=${PYTHON:-python3}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1  # a part killed at its limit keeps what it printed
if [ "$smoke" = 1 ]; then
    out=${UNICORN_BENCH_OUT:-$(mktemp -d -t unicorn-gpu-smoke-XXXXXX)}
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    janus_budget=${JANUS_BUDGET_S:-120}
    bagel_budget=${BAGEL_BUDGET_S:-120}
else
    out=${UNICORN_BENCH_OUT:-bench/results}
    export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
    janus_budget=${JANUS_BUDGET_S:-240}
    bagel_budget=${BAGEL_BUDGET_S:-240}
fi
mkdir -p "$out/gpu" || exit 1
log_name="$(date -u +%Y%m%dT%H%M%SZ)-$part$([ "$smoke" = 1 ] && echo -smoke).log"
log="$out/gpu/$log_name"
back=""  # the folder the lent machine returns, when there is one
if [ "$smoke" != 1 ] && [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    back="$OUT/results"
    mkdir -p "$back/gpu" || exit 1
fi

if [ "$smoke" = 1 ]; then
    janus_args=(--preset tiny --device cpu --dtype float32 --weights device --prompts 2,3 --rollouts 2
                --hf-mode batched --hf-prompts 2 --hf-decode --decode-images 4 --breakdown off
                --engine-kwargs '{"num_kv_blocks": 128}')
    bagel_args=(--preset tiny --device cpu --dtype float32 --prompts 1 --configs 64:3:2,32:3:1
                --providers official_loop,engine)
else
    janus_args=(--preset janus-pro-7b --device cuda --dtype bfloat16 --weights device --prompts 8,64 --rollouts 8
                --hf-mode batched --hf-prompts 8 --hf-decode --decode-images 64)
    bagel_args=(--preset bagel-7b-mot --device cuda --dtype bfloat16 --prompts 1 --configs 512:20:8,1024:50:2
                --providers official_loop,engine,batched)
fi

rows_in() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }

# run_part NAME BUDGET_S RESULTS_FILE SCRIPT ARGS...: the script under `timeout`, then one line on how it ended.
run_part() {
    local name=$1 budget=$2 results="$out/$3" script=$4 before start rc
    shift 4
    before=$(rows_in "$results")
    start=$SECONDS
    echo
    echo "=== $name: $script (limit ${budget}s) ==="
    timeout --kill-after=20 "$budget" "$py" "$script" "$@" --out "$results"
    rc=$?
    local added=$(( $(rows_in "$results") - before ))
    case $rc in
        0) status="ok" ;;
        124|137) status="timed out at ${budget}s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    echo "=== $name: $status after $(( SECONDS - start ))s; $added rows added to $results ==="
    summary+=("$name: $status, $added rows")
    if [ -n "$back" ] && [ -f "$results" ]; then
        cp "$results" "$back/" && echo "copied $results to $back/"
    fi
    [ "$rc" = 0 ]
}

preflight() {
    local commit dirty=""
    if commit=$(git rev-parse --short HEAD 2>/dev/null); then
        git diff --quiet HEAD 2>/dev/null || dirty=" (uncommitted changes)"
    else
        commit="? (no git repository here)"
    fi
    echo "run.sh $part$([ "$smoke" = 1 ] && echo ' --smoke') at $(date -u +%Y-%m-%dT%H:%M:%SZ), commit" \
        "$commit$dirty, python $py, rows to $out"
    if [ "$smoke" = 1 ]; then
        return 0
    fi
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,power.limit --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    "$py" - <<'EOF'
import importlib.util, sys
import torch
if not torch.cuda.is_available():
    sys.exit("run.sh: torch sees no CUDA device (on a CPU, run.sh --smoke)")
from unicorn.kernels import cuda_ops
props = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name(0)}, "
      f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; "
      f"triton {'yes' if importlib.util.find_spec('triton') else 'no'}, "
      f"nvidia-ml-py {'yes' if importlib.util.find_spec('pynvml') else 'no (memory from torch only)'}, "
      f"csrc ops (unicorn._C) {'built' if cuda_ops.available() else 'not built (Triton / torch paths)'}")
EOF
}

main() {
    summary=()
    preflight || return 3
    local ok=0
    if [ "$part" = janus ] || [ "$part" = all ]; then
        run_part janus "$janus_budget" janus_images.jsonl bench/janus_images.py "${janus_args[@]}" || ok=1
    fi
    if [ "$part" = bagel ] || [ "$part" = all ]; then
        run_part bagel "$bagel_budget" bagel_t2i.jsonl bench/bagel_t2i.py "${bagel_args[@]}" || ok=1
    fi
    echo
    local line="" item
    for item in "${summary[@]}"; do line+="${line:+; }$item"; done
    echo "run.sh done: $line; log $log"
    return $ok
}

if [ -n "$back" ]; then
    main 2>&1 | tee -a "$log" "$back/gpu/$log_name"
else
    main 2>&1 | tee -a "$log"
fi
rc=${PIPESTATUS[0]}
if [ "$rc" = 3 ]; then  # no device: nothing ran, so no log is left among the results
    rm -f "$log"
    rc=1
fi
exit "$rc"
