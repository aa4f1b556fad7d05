"""What the CPU can show about GPU performance: operator counts, copies, allocations and torch.compile graph breaks.

    OMP_NUM_THREADS=1 python benchmarks/cpu_profile.py                 # all cases, < 2 minutes on one core
    OMP_NUM_THREADS=1 python benchmarks/cpu_profile.py --no-explain    # skip the torch.compile graph-break check

Cases (random weights, float32, batch 1 unless noted, no_grad):

* WF-VAE-L (``wfvae.models.presets.WFVAE_L_16CHN``) encode and decode of a ``--video`` clip (default 9x64x64), whole and
  with ``latent_chunk=1`` (block-wise, causal cache);
* the Open-Sora Plan v1.3 denoiser forward at batch 2 (a CFG pair, text with padding) with ``--layers`` blocks of
  the given width, Skiparse (k = 4, first and last block dense) and dense.

Per case it prints the number of top-level aten operator calls (total and the most frequent kinds), the copies
(calls and MB, by the op that caused them) and the bytes allocated; counts come from the torch profiler
(:mod:`benchmarks.opcount`), so they do not depend on the speed of the machine. The wall time of one unprofiled
call on the CPU is printed for orientation only. Then ``torch._dynamo.explain`` reports graph breaks of the
stateless pieces that one would hand to ``torch.compile``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import time

import torch

from opcount import count_ops, graph_breaks

MB = 1024 ** 2


def report(name: str, fn, top: int) -> None:
    """Print the counts of one case (one profiled call, which also warms up, then one timed call)."""
    c = count_ops(fn)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    kinds = sorted(c["ops"].items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    copies = sorted(c["copies"].items(), key=lambda kv: -kv[1][1])
    print(f"## {name}")
    print(f"aten calls {c['op_calls']}; copies {c['copy_calls']} ({c['copy_bytes'] / MB:.1f} MB); "
          f"allocated {c['alloc_bytes'] / MB:.1f} MB; CPU wall {wall:.3f} s (1 call, indicative)")
    print("  ops: " + ", ".join(f"{k} {v}" for k, v in kinds))
    print("  copies: " + ", ".join(f"{k} {n} ({b / MB:.1f} MB)" for k, (n, b) in copies))
    print(flush=True)


def vae_cases(shape: str, top: int) -> None:
    from wfvae import WFVAE
    from wfvae.models.presets import WFVAE_L_16CHN

    torch.manual_seed(0)
    vae = WFVAE(**dataclasses.asdict(WFVAE_L_16CHN)).eval()
    t, h, w = (int(v) for v in shape.split("x"))
    video = torch.rand(1, 3, t, h, w) * 2 - 1
    z = torch.randn(1, vae.config.latent_dim, 1 + (t - 1) // vae.temporal_compression, h // 8, w // 8)
    with torch.no_grad():
        for chunk in (None, 1):
            label = "whole" if chunk is None else f"latent_chunk={chunk}"
            report(f"WF-VAE-L encode {shape} ({label})",
                   lambda: vae.encode(video, latent_chunk=chunk).latent_dist.mean, top)
            report(f"WF-VAE-L decode {tuple(z.shape[2:])} latent ({label})",
                   lambda: vae.decode(z, latent_chunk=chunk).sample, top)


def denoiser_model(layers: int, heads: int, head_dim: int, sparse: bool):
    from opensora.models import OpenSoraT2V

    torch.manual_seed(0)
    return OpenSoraT2V(num_layers=layers, num_attention_heads=heads, attention_head_dim=head_dim,
                       cross_attention_dim=heads * head_dim, caption_channels=256, sparse1d=sparse,
                       dense_blocks=(0, layers - 1)).eval()


def denoiser_cases(latent: str, layers: int, heads: int, head_dim: int, top: int) -> None:
    t, h, w = (int(v) for v in latent.split("x"))
    for attention in ("skiparse", "dense"):
        model = denoiser_model(layers, heads, head_dim, attention == "skiparse")
        x = torch.randn(2, model.config.in_channels, t, h, w)
        text = torch.randn(2, 1, 64, model.config.caption_channels)
        mask = torch.ones(2, 1, 64)
        mask[..., 48:] = 0
        step = torch.full((2,), 500)
        with torch.no_grad():
            report(f"denoiser forward, {layers} blocks of {heads}x{head_dim}, latent {latent}, batch 2, {attention}",
                   lambda: model(x, step, text, mask, return_dict=False), top)


def explain_cases() -> None:
    from opensora.models.embeddings import apply_rope
    from opensora.models.transformer import OpenSoraBlock
    from wfvae.models.blocks import ChannelLayerNorm, FrameAttention, ResnetBlock2D, ResnetBlock3D
    from wfvae.models.wavelets import HaarWavelet2D, HaarWavelet3D, InverseHaarWavelet2D, InverseHaarWavelet3D

    torch.manual_seed(0)
    v = torch.randn(1, 16, 5, 8, 8)
    rgb = torch.randn(1, 3, 5, 8, 8)
    tokens = torch.randn(2, 32, 4, 12)
    cos, sin = torch.randn(32, 12), torch.randn(32, 12)
    block = OpenSoraBlock(48, 4, 12, skiparse_ratio=4).eval()
    rope = (torch.randn(32, 12), torch.randn(32, 12))
    from wfvae import WFVAE
    from wfvae.models.causal import StreamCache

    small = WFVAE(base_channels=8, latent_dim=4, encoder_energy_flow_hidden_size=8, decoder_energy_flow_hidden_size=8,
                  norm_type="layernorm", t_interpolation="trilinear").eval()
    latent = torch.randn(1, 4, 3, 2, 2)

    def decode_last_chunk(z):
        cache = StreamCache()
        cache.last = True
        return small.decoder(z, cache)

    denoiser = denoiser_model(2, 4, 12, True)
    pieces = [
        ("WF-VAE Encoder (8-channel config, whole video)", small.encoder, (torch.rand(1, 3, 9, 16, 16),)),
        ("WF-VAE Decoder (8-channel config, whole video)", small.decoder, (latent,)),
        ("WF-VAE Decoder (8-channel config, StreamCache chunk)", decode_last_chunk, (latent,)),
        ("OpenSoraT2V forward (2 blocks, Skiparse, text mask)", denoiser,
         (torch.randn(2, denoiser.config.in_channels, 3, 8, 8), torch.full((2,), 500), torch.randn(2, 1, 16, 256),
          torch.cat([torch.ones(2, 1, 12), torch.zeros(2, 1, 4)], dim=2))),
        ("HaarWavelet3D", HaarWavelet3D(), (rgb,)),
        ("InverseHaarWavelet3D", InverseHaarWavelet3D(), (torch.randn(1, 24, 3, 4, 4),)),
        ("HaarWavelet2D", HaarWavelet2D(), (rgb,)),
        ("InverseHaarWavelet2D", InverseHaarWavelet2D(), (torch.randn(1, 12, 5, 4, 4),)),
        ("ChannelLayerNorm", ChannelLayerNorm(16), (v,)),
        ("ResnetBlock2D", ResnetBlock2D(16, 16, "layernorm"), (v,)),
        ("ResnetBlock3D (whole video)", ResnetBlock3D(16, 16, "layernorm"), (v,)),
        ("FrameAttention", FrameAttention(16, "layernorm"), (v,)),
        ("apply_rope", apply_rope, (tokens, cos, sin)),
        ("OpenSoraBlock (Skiparse k=4, text mask)", block,
         (torch.randn(2, 32, 48), torch.randn(2, 8, 48), torch.randn(2, 6, 48), rope, None,
          torch.zeros(2, 1, 1, 8))),
    ]
    print("## torch.compile graph breaks (torch._dynamo.explain, whole-video / stateless calls)")
    print("| piece | graphs | graph breaks | reasons |")
    print("|---|---|---|---|")
    with torch.no_grad():
        for name, fn, args in pieces:
            try:
                r = graph_breaks(fn, *args)
                print(f"| {name} | {r['graphs']} | {r['breaks']} | {'; '.join(r['reasons']) or '-'} |", flush=True)
            except Exception as exc:  # report, do not stop the other cases
                print(f"| {name} | error | | {type(exc).__name__}: {str(exc).splitlines()[0][:100]} |", flush=True)
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", default="9x64x64", help="WF-VAE clip TxHxW (T = 1 + 4n, H, W multiples of 8)")
    p.add_argument("--latent", default="5x16x16", help="denoiser latent TxHxW")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=48)
    p.add_argument("--top", type=int, default=12, help="operator kinds listed per case")
    p.add_argument("--only", choices=["vae", "denoiser", "explain"], nargs="*", default=None)
    p.add_argument("--no-explain", action="store_true")
    args = p.parse_args()
    only = set(args.only or ["vae", "denoiser", "explain"])
    if args.no_explain:
        only.discard("explain")
    print("# CPU profile: operator counts, copies, allocations, graph breaks")
    print(f"command: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {' '.join(sys.argv)}")
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"device: CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads); "
          f"torch {torch.__version__}; float32; date {date}")
    print("Counts are per call and machine-independent; wall times are CPU, indicative only.\n")
    if "vae" in only:
        vae_cases(args.video, args.top)
    if "denoiser" in only:
        denoiser_cases(args.latent, args.layers, args.heads, args.head_dim, args.top)
    if "explain" in only:
        explain_cases()


if __name__ == "__main__":
    main()
