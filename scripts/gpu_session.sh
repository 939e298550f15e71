#!/usr/bin/env bash
# Every GPU check of issues 3 and 7 in one command, for a session that is lent a GPU machine
# (15 minutes of device time in all; one command may run 10). Prepare here first:
#
#   bash scripts/gpu_wheels.sh                      # .gpu-wheels/: what the GPU image lacks (~31 MB)
#
# then call the device tool's `run` with
#
#   command: bash scripts/gpu_session.sh            carry: [".gpu-wheels"]     timeout_s: 560
#
# Phases (each time-boxed; whatever finished is written to $OUT, at most 8 files):
#   1. LLC throughput, ours (eager, compiled, CUDA-graphed) vs devinterp 2.0.1 (paper-size LM and the
#      quickstart toy), and the top CUDA kernels of the compiled bf16 step     -> bench_llc_gpu.txt
#   2. the paper-size language-model run (configs/induction-paper.yaml), shortened to fit: train ->
#      sweep -> detect -> report, then the side-by-side table with the paper's LM1-LM5 -> repro.md,
#      repro.log, metrics.csv, stages.csv, training.json, report.html
#   3. a screen of the paper-size position schemes and contexts (scripts/context_length_study.py's
#      PAPER_SIZE variants, quick look only: the paper's own shortformer positions, 20,000 steps, about
#      3.5 minutes on an H200; then sinusoidal init at contexts 1,024 and 256, 12,000 steps, about 2.5
#      minutes each; the time box may cut the last); the
#      first that forms previous-token and induction heads goes on to the full reproduction
#      -> screen.md, screen.log, screen.<variant>.md and that run's metrics.csv, stages.csv, ...
# Knobs (environment): BENCH_S (260), REPRO_S (270), STEPS (20000), BATCH (32), DRAWS (100), PHASES ("1 2": which
# phases run), REPRO_CONFIG (configs/induction-paper.yaml; a config of its own gets no STEPS/BATCH/DRAWS overrides),
# SCREEN_S (520), SCREEN ("paper-sf1024 paper-sin1024 paper-sin256": phase 3's variants, in order; paper-rot1024 also exists). The
# next session with a GPU: `PHASES=3 bash scripts/gpu_session.sh`, timeout_s 580.
# GPU_SESSION_CPU=1 runs the same script on a CPU at toy size (a smoke test of the script itself).
# Measured on an H200 (2026-11-28): a fresh machine's start and transfer ≈ 45 s of device time; wheel
# install + phase 1 ≈ 165 s; the paper-size model trains at ≈ 100 steps/s at batch 32 (bf16); its sweep
# (loss, ICL, heads, LLC 4 x 60 draws compiled) ≈ 1.35 s per checkpoint. Phase 1's figures are in
# BENCHMARKS.md: a later session can run PHASES=2 alone and give the reproduction the whole budget.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-session}
mkdir -p "$OUT"
PY=${PY:-python3}
BENCH_S=${BENCH_S:-260}; REPRO_S=${REPRO_S:-270}
STEPS=${STEPS:-20000}; BATCH=${BATCH:-32}; DRAWS=${DRAWS:-100}
PHASES=${PHASES:-1 2}; REPRO_CONFIG=${REPRO_CONFIG:-}
SCREEN_S=${SCREEN_S:-520}; SCREEN=${SCREEN:-paper-sf1024 paper-sin1024 paper-sin256}
export PYTHONUNBUFFERED=1

# the wheels are built for the GPU image's Python; the CPU smoke test uses the local venv as it is
CPU_SMOKE=${GPU_SESSION_CPU:-0}
if [ -d .gpu-wheels/ours ] && [ "$CPU_SMOKE" != 1 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ours .gpu-wheels/ours/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/ours
fi
REF=()
if [ -d .gpu-wheels/ref ] && [ "$CPU_SMOKE" != 1 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ref .gpu-wheels/ref/*.whl \
    && REF=(--ref-path /tmp/ref)
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

if [ "${GPU_SESSION_CPU:-0}" = 1 ]; then
  BENCH=(--device cpu --small --models toy --draws 5); REPRO=(--tiny); SCREEN_ARGS=(--tiny)  # --tiny runs on the CPU
else
  SCREEN_ARGS=()
  BENCH=(--draws 200 --profile); REPRO=(--steps "$STEPS" --batch-size "$BATCH" --llc-draws "$DRAWS")
fi
if [ -n "$REPRO_CONFIG" ]; then  # its own steps, batch and draws
  if [ "$CPU_SMOKE" = 1 ]; then REPRO=(--config "$REPRO_CONFIG" --tiny); else REPRO=(--config "$REPRO_CONFIG"); fi
fi

if [[ " $PHASES " == *" 1 "* ]]; then
  echo "== phase 1: LLC throughput (timeout ${BENCH_S}s)"
  timeout "$BENCH_S" "$PY" scripts/bench_llc_gpu.py "${REF[@]}" "${BENCH[@]}" 2>&1 | tee "$OUT/bench_llc_gpu.txt"
fi
# copy_run GLOB: whatever of the newest run folder matching out/GLOB finished, even when a time box cut
# the run short (sweeps are resumable, the machine is not)
copy_run() {
"$PY" - "$OUT" "$1" <<'PYEOF'
import shutil, sys
from pathlib import Path
out, pattern = Path(sys.argv[1]), sys.argv[2]
runs = sorted((p for p in Path("out").glob(pattern) if p.is_dir()), key=lambda p: p.stat().st_mtime)
if not runs:
    sys.exit(f"no run folder out/{pattern}")
run = runs[-1]
for name in ("stages.csv", "training.json", "report.html"):
    if (run / name).is_file():
        shutil.copy(run / name, out / name)
try:
    from devinterp.results import load_results
    load_results(run).metrics.to_csv(out / "metrics.csv", index=False)
except Exception as err:  # a run cut short in training has no metrics yet
    print(f"metrics: {type(err).__name__}: {err}")
print("copied from", run, "->", sorted(p.name for p in out.iterdir()))
PYEOF
}

if [[ " $PHASES " == *" 2 "* ]]; then
  echo "== phase 2: paper-size LM reproduction (timeout ${REPRO_S}s)"
  timeout "$REPRO_S" "$PY" scripts/reproduce_induction_paper.py "${REPRO[@]}" --out out --markdown "$OUT/repro.md" -q \
    2>&1 | tee "$OUT/repro.log"
  copy_run "induction-paper*"
fi

if [[ " $PHASES " == *" 3 "* ]]; then
  echo "== phase 3: paper-size screen of positions and context: $SCREEN (timeout ${SCREEN_S}s)"
  # shellcheck disable=SC2086  # SCREEN is a list of names
  timeout "$SCREEN_S" "$PY" scripts/context_length_study.py --only $SCREEN "${SCREEN_ARGS[@]}" --out out/screen \
    --markdown "$OUT/screen.md" --reproduce-first-formed 2>&1 | tee "$OUT/screen.log"
  # the reproduced variant's run when there is one (its config was written beside the runs), else the last
  formed=$(ls -t out/screen/*.yaml 2>/dev/null | head -1)
  if [ -n "$formed" ]; then copy_run "screen/$(basename "$formed" .yaml)*"; else copy_run "screen/paper-*"; fi
fi
