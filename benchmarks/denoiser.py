"""Open-Sora Plan v1.3 denoiser: forward time and peak memory by latent shape, Skiparse vs dense, and a training
step (forward + backward with gradient checkpointing).

    python benchmarks/denoiser.py                        # GPU: the issue's table (release config, bf16)
    python benchmarks/denoiser.py --device cpu --model tiny --latents 3x16x16

Random weights; forward at batch 2 (one CFG pair), training at batch 1; text of 512 tokens with 4096 channels
(mT5-XXL), a quarter of them padding. Each case runs in a fresh process; median of ``--repeats`` after
``--warmup``. Peak memory as in ``benchmarks/vae.py``.
"""
from __future__ import annotations

import argparse

from common import add_timing_args, fast_math, header, measure, run_child_case, run_in_subprocess

GPU_LATENTS = ["24x44x80", "24x60x80"]
PUBLISHED_H100 = {  # published implementation, one H100, bf16 (issue reference)
    ("forward", "24x44x80", "skiparse"): "0.85 s", ("forward", "24x44x80", "dense"): "1.36 s",
    ("forward", "24x60x80", "skiparse"): "1.30 s", ("forward", "24x60x80", "dense"): "2.25 s",
    ("train", "24x44x80", "skiparse"): "1.79 s", ("train", "24x44x80", "dense"): "3.02 s",
}
TINY = dict(num_layers=6, num_attention_heads=2, attention_head_dim=24, cross_attention_dim=48, caption_channels=64)


def run_case(spec: dict) -> dict:
    import torch

    from opensora.models import OpenSoraT2V

    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    fast_math(device)
    torch.manual_seed(0)
    fields = dict(TINY) if spec["model"] == "tiny" else {}
    fields["sparse1d"] = spec["attention"] == "skiparse"
    with torch.device(device):  # random init where it runs: 2.7B parameters initialised on the CPU take minutes
        model = OpenSoraT2V(**fields).to(dtype)
    cfg = model.config
    t, h, w = (int(v) for v in spec["latent"].split("x"))
    batch = 2 if spec["op"] == "forward" else 1
    length = 512 if spec["model"] != "tiny" else 32
    x = torch.randn(batch, cfg.in_channels, t, h, w, device=device, dtype=dtype)
    text = torch.randn(batch, 1, length, cfg.caption_channels, device=device, dtype=dtype)
    mask = torch.ones(batch, 1, length, device=device)
    mask[..., length * 3 // 4:] = 0
    step = torch.full((batch,), 500, device=device)
    if spec["op"] == "forward":
        model.eval()
        fn = lambda: model(x, step, text, mask, return_dict=False)  # noqa: E731
        return measure(fn, device, spec["warmup"], spec["repeats"])
    model.train()
    model.enable_gradient_checkpointing()

    def fn():
        model(x, step, text, mask).sample.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    return measure(fn, device, spec["warmup"], spec["repeats"], grad=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--model", choices=["release", "tiny"], default="release",
                   help="release: OpenSoraT2V_v1_3 2.77B config; tiny: 6 layers (2 Skiparse), 48 wide")
    p.add_argument("--latents", nargs="*", default=None, help="latent TxHxW (default: the GPU table)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--ops", nargs="*", default=["forward", "train"])
    add_timing_args(p)
    args = p.parse_args()
    if run_child_case(args, run_case):
        return
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    latents = args.latents or (GPU_LATENTS if device == "cuda" else ["3x16x16"])
    header(f"Open-Sora Plan v1.3 denoiser benchmark, model {args.model}, random weights", device, args.warmup,
           args.repeats)
    print("| op | latent (TxHxW) | attention | batch | median s | peak GiB | published H100 |")
    print("|---|---|---|---|---|---|---|")
    for op in args.ops:
        for latent in latents if op == "forward" else latents[:1]:
            for attention in ("skiparse", "dense"):
                spec = dict(op=op, latent=latent, attention=attention, device=device, dtype=args.dtype,
                            model=args.model, warmup=args.warmup, repeats=args.repeats)
                res = run_in_subprocess(__file__, spec)
                batch = 2 if op == "forward" else 1
                if "error" in res:
                    print(f"| {op} | {latent} | {attention} | {batch} | error: {res['error']} | | |")
                    continue
                ref = PUBLISHED_H100.get((op, latent, attention), "") if args.model == "release" else ""
                print(f"| {op} | {latent} | {attention} | {batch} | {res['median_s']:.3f} | {res['peak_gib']:.2f} "
                      f"| {ref} |", flush=True)


if __name__ == "__main__":
    main()
