#!/usr/bin/env bash
# The arousal-gap table of docs/emotion.md (#the-arousal-gap-on-the-devkit) from nothing:
#   bash benchmarks/arousal_gap.sh [RUNS_DIR] [OUT_DIR]
# trains every row's devkit config over its seeds (the baseline and silence 5, the others 3, as the
# issue behind that section asks), re-reports each baseline run with emotion-aware calibration,
# then compares every row against AASIST-L with compare.py into OUT_DIR (comparison.md, .json,
# .png, report.html). Finished runs are reused and interrupted ones resumed, so running it again
# after a stop carries on. Settings (environment):
#   JOBS=4 trainings at once (default 1)   DEVICE=cuda|cpu (default: main.py's)
#   SEEDS=3 seeds of the other rows        BEST_SEEDS=5 seeds of the baseline and silence
#   ROWS="AASIST-L_silence_devkit AASIST-L_emocal_devkit" the rows besides the baseline (config names;
#        default all seven, in the section's order)
# Each row's runs go to RUNS_DIR/<config name>/ (default runs/), its logs to RUNS_DIR/<config name>/logs/
# when JOBS > 1. On the project's 2-core CPU machine a run takes 17-36 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
out=${2:-arousal_gap}
jobs=${JOBS:-1}
seeds=${SEEDS:-3}
best_seeds=${BEST_SEEDS:-5}
device=()
[ -n "${DEVICE:-}" ] && device=(--device "$DEVICE")
baseline=AASIST-L_devkit
best=AASIST-L_silence_devkit
calibrated=AASIST-L_emocal_devkit
read -r -a rows <<< "${ROWS:-AASIST_FiLM_utterance_devkit AASIST_FiLM_learnable_devkit AASIST-L_group_robust_devkit \
AASIST-L_prosody_devkit $best $calibrated AASIST-L_combined_devkit}"

train() {  # train CONFIG_NAME SEEDS: that row's runs, through compare.py (which also compares them)
    python compare.py --train "config/$1.conf" --seeds "$2" --jobs "$jobs" --runs_dir "$runs/$1" \
        --output_dir "$runs/$1/comparison" --n_boot 10 "${device[@]}"
}

train "$baseline" "$best_seeds"
folders=("$runs/$baseline")
for row in "${rows[@]}"; do
    if [ "$row" = "$calibrated" ]; then  # no training: each baseline run's scores, calibrated
        for seed in $(seq 1 "$best_seeds"); do
            system=$runs/$row/LA_${row}_ep4_bs16_seed$seed/emotion_calibrated
            folders+=("$system")
            [ -f "$system/eval_report.json" ] && continue
            python main.py --config "config/$row.conf" --eval --comment "seed$seed" --output_dir "$runs/$row" \
                --scores_from "$runs/$baseline/LA_${baseline}_ep4_bs16_seed$seed"
        done
        continue
    fi
    folders+=("$runs/$row")
    if [ "$row" = "$best" ]; then
        train "$row" "$best_seeds"
    else
        train "$row" "$seeds"
    fi
done
python compare.py "${folders[@]}" --output_dir "$out"
