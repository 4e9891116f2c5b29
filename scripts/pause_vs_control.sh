#!/usr/bin/env bash
# Pause model vs. an identically trained no-pause control (same steps, same data, same seed):
# pretrain -> finetune for both, then eval-pauses of the pause model with the control beside it.
# Usage: scripts/pause_vs_control.sh OUT_DIR [extra --field value overrides for both stages]
set -euo pipefail
out=${1:-runs/pause_vs_control}; shift || true
here=$(cd "$(dirname "$0")" && pwd)
adaptive-pause pretrain --config "$here/configs/pretrain.yaml" --output_dir "$out/pause/pretrain" "$@"
adaptive-pause finetune --config "$here/configs/finetune.yaml" --output_dir "$out/pause/finetune" \
    --base_model "$out/pause/pretrain" "$@"
adaptive-pause pretrain --config "$here/configs/pretrain.yaml" --output_dir "$out/control/pretrain" \
    --pause_rate 0 "$@"
adaptive-pause finetune --config "$here/configs/finetune.yaml" --output_dir "$out/control/finetune" \
    --base_model "$out/control/pretrain" --max_pauses 0 "$@"
adaptive-pause eval-pauses "$out/pause/finetune" --control_dir "$out/control/finetune" \
    --num_examples 1000 --output "$out/eval_pauses.json"
