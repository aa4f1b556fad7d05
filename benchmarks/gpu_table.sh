#!/usr/bin/env bash
# The whole GPU table of issue 23 in one run: WF-VAE-L bf16 and TF32 encode/decode at 33x256^2, 33x512^2, 33x768^2,
# 93x512^2 and chunked 129x512^2 (ours and, given its checkout, the published code on the same random weights),
# the float32 encode with cuDNN autotuning off (the 64.7 GiB case), and the 2.7B denoiser forward (batch 2,
# 24x44x80 latents, Skiparse and dense) and training step. Budget: under 8 minutes on one H100.
#
#   bash benchmarks/gpu_table.sh [PUBLISHED_WFVAE_CHECKOUT] | tee benchmarks/results/gpu_table_$(date +%F).md
#   GPU_TABLE_SMOKE=1 bash benchmarks/gpu_table.sh [CHECKOUT]   # CPU, tiny models and shapes: checks the script
#
# Every section prints its device, date and command (benchmarks/common.py); a failed case prints its error in its
# row and the table goes on.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
published=()
if [[ $# -ge 1 ]]; then
    if [[ ! -d "$1/causalvideovae" ]]; then
        echo "error: $1 is not a checkout of PKU-YuanGroup/WF-VAE (no causalvideovae/ folder); give its path or nothing" >&2
        exit 2
    fi
    published=(--published "$1")
fi
if [[ "${GPU_TABLE_SMOKE:-0}" == 1 ]]; then
    vae=(--device cpu --model tiny --warmup 0 --repeats 1 --weights "${TMPDIR:-/tmp}/gpu_table_smoke_tiny")
    shapes=(9x32x32) long=(17x32x32) den=(--device cpu --model tiny --latents 2x8x8 --warmup 0 --repeats 1)
else
    vae=(--model l16 --warmup 1 --repeats 3)
    shapes=(33x256x256 33x512x512 33x768x768 93x512x512) long=(129x512x512)
    den=(--model release --latents 24x44x80 --warmup 1 --repeats 3)
fi
py() { echo; python "$@"; }
start=$SECONDS
py "$here/vae.py" "${vae[@]}" "${published[@]}" --shapes "${shapes[@]}" --dtypes bfloat16 float32
py "$here/vae.py" "${vae[@]}" "${published[@]}" --shapes "${long[@]}" --ops decode --dtypes bfloat16 float32 --chunks 2 4
py "$here/vae.py" "${vae[@]}" --shapes "${shapes[1]:-${shapes[0]}}" --ops encode --dtypes float32 --no-cudnn-benchmark
py "$here/denoiser.py" "${den[@]}"
echo
echo "gpu_table.sh: $((SECONDS - start)) s in all"
