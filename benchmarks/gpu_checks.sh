#!/usr/bin/env bash
# Every GPU check of docs/gpu.md in one go, for a machine with a CUDA GPU:
#   bash benchmarks/gpu_checks.sh [OUT_DIR]
# the GPU-only and parity tests, then bench_train.py for AASIST (default precision, compiled,
# fp16) and for AASIST_WAV2VEC with a random full-size XLS-R. Results land in OUT_DIR (default
# gpu_checks/). Smaller settings for a trial run on a CPU:
#   DEVICE=cpu CONFIG=config/AASIST-L.conf BATCH=2 STEPS=2 WARMUP=1 SKIP_XLSR=1 bash benchmarks/gpu_checks.sh /tmp/checks
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_checks}
device=${DEVICE:-cuda}
config=${CONFIG:-config/AASIST.conf}
batch=${BATCH:-24}
steps=${STEPS:-30}
warmup=${WARMUP:-5}
mkdir -p "$out"
status=0
run() {  # run NAME COMMAND...: output to OUT_DIR/NAME.txt and the screen; a failure is remembered
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt"
    local code=${PIPESTATUS[0]}
    [ "$code" -eq 0 ] || { echo "== $name failed (exit $code)"; status=1; }
}

{ nvidia-smi || echo "no nvidia-smi"; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
    > "$out/machine.txt" 2>&1
run tests python -m pytest -q -rs tests/training/test_training_loop.py tests/models/test_aasist.py
bench=(python benchmarks/bench_train.py --config "$config" --device "$device" --batch "$batch" --steps "$steps"
       --warmup "$warmup")
run bench_default "${bench[@]}" --json "$out/bench_default.json"
run bench_compile "${bench[@]}" --compile --no_baseline --json "$out/bench_compile.json"
run bench_fp16 "${bench[@]}" --precision fp16 --no_baseline --json "$out/bench_fp16.json"
if [ -z "${SKIP_XLSR:-}" ]; then
    xlsr=(python benchmarks/bench_train.py --config config/AASIST_WAV2VEC.conf --device "$device" --random_xlsr
          --batch "${XLSR_BATCH:-16}" --steps "$steps" --warmup "$warmup")
    run bench_xlsr_bf16 "${xlsr[@]}" --precision bf16 --json "$out/bench_xlsr_bf16.json"
fi
echo "results in $out (exit $status)"
exit $status
