#!/usr/bin/env bash
# The user's path, timed end to end (process start, checkpoint load, sampling, STAPLE, writing):
# a 256 px MedSegDiff-B checkpoint from one training step (speed does not depend on the weights), then
# `diffuseg predict` of one DDTI image as a fused 25-member ensemble, for a few sampler settings.
#   benchmarks/speed/predict_cli.sh > benchmarks/results/logs/predict-cli.log 2>&1     # about 5 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/../.."
run=runs/predict-cli
rm -rf "$run"
mkdir -p "$run"
.venv/bin/diffuseg train medsegdiff-b-ddti --data ../shared/data/ddti --out "$run/ckpt" train.steps=1 \
  train.batch_size=2 train.val_every=0 train.accelerator=cpu train.devices=1 data.cache_dir=runs/bench-cache \
  > "$run/train.log" 2>&1
image="../shared/data/ddti/cropped/100_1(1).png"
# (sampler, steps, grid, micro_batch, channels_last): the fast CPU setting, without channels_last, with 10 steps,
# and without micro-batches
for setting in "ddpm 5 quadratic 1 true" "ddpm 5 quadratic 1 false" "ddpm 10 linear 1 true" "ddpm 5 quadratic 0 false"; do
  set -- $setting
  echo "== diffuseg predict --samples 25 --sampler $1 --steps $2 --fusion staple sample.spacing=$3" \
    "sample.micro_batch=$4 sample.channels_last=$5"
  /usr/bin/time -f "%e s wall, %M KB peak memory" .venv/bin/diffuseg predict "$run/ckpt/checkpoints/last.ckpt" \
    "$image" "$run/pred-$1-$2-$3-$4-$5" --samples 25 --sampler "$1" --steps "$2" --fusion staple \
    "sample.spacing=$3" "sample.micro_batch=$4" "sample.channels_last=$5" 2>&1 | tr '\r' '\n' | tail -n 2
done
