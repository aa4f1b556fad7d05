"""Sampling cost against quality: denoiser evaluations per video, wall time, prompt following, closeness.

    python benchmarks/sampling.py assets/models/opensora-t2v --prompts 36               # held-out prompts
    python benchmarks/sampling.py assets/models/opensora-t2v --tuning --prompts 24 --settings dpm++-20 fast
    python benchmarks/sampling.py --release-size --settings release quality fast        # random weights: cost only
    python benchmarks/sampling.py --list                                                # the settings

For each setting (:data:`SETTINGS`: a solver, steps, guidance interval, step cache or preset) it samples one video
per prompt (held-out :func:`opensora.synthetic.shapes.eval_prompts`, or ``--tuning`` prompts of training triples)
and reports:

* evaluations per video, counted by forward hooks (:class:`opensora.pipelines.presets.EvaluationCounter`): ``evals``
  = latent videos the denoiser ran on; ``block evals`` = the blocks that really computed, in whole-denoiser units
  (lower than ``evals`` only with a step cache);
* wall time per video (sampling + decoding, batches of ``--batch-size``, this process's threads);
* prompt following with the project's checker (:func:`opensora.synthetic.prompt_check.evaluate`): colour, motion,
  both;
* closeness to the reference (:data:`REFERENCE`, a deterministic 100-step solver at the same guidance, from the
  same initial noise) on the first ``--closeness`` prompts, for deterministic settings: PSNR and SSIM of the decoded
  videos (:mod:`wfvae.evaluation.metrics`) and the relative L2 error of the final latents.

``--release-size``: the release's denoiser configuration (or ``--model-size tiny``) with random weights at a small
latent, no VAE decode and no checker: evaluations and wall time only.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional

DPM20_MAG_RATIOS = [1.000, 0.907, 1.033, 0.987, 0.866, 0.853, 0.872, 0.840, 0.854, 0.824, 0.832, 0.811, 0.834, 0.838, 0.858,
    0.873, 0.886, 0.902, 0.911, 0.914]
FOLDER50_MAG_RATIOS = [1.000, 0.992, 1.056, 0.905, 0.955, 1.031, 1.036, 0.950, 0.962, 0.981, 0.933, 0.965, 0.932, 0.926, 0.968,
    0.933, 0.929, 0.965, 0.926, 0.935, 0.936, 0.902, 0.945, 0.917, 0.920, 0.944, 0.905, 0.923, 0.923, 0.935,
    0.927, 0.938, 0.918, 0.942, 0.936, 0.934, 0.928, 0.951, 0.941, 0.948, 0.948, 0.944, 0.950, 0.953, 0.951,
    0.952, 0.951, 0.942, 0.942, 0.929]

# name -> pipeline call arguments (+ "cache": a diffusers cache config name and its arguments). Guidance and sizes
# are the model folder's. "folder" is what the model folder does today (quality preset).
SETTINGS: Dict[str, Dict[str, Any]] = {
    "folder": {"preset": "quality"},
    "release": {"scheduler": "euler_ancestral", "num_inference_steps": 100},
    "euler_a-25": {"scheduler": "euler_ancestral", "num_inference_steps": 25},
    "ddim-25": {"scheduler": "ddim", "num_inference_steps": 25},
    "ddim-50": {"scheduler": "ddim", "num_inference_steps": 50},
    "dpm++-10": {"scheduler": "dpm++", "num_inference_steps": 10},
    "dpm++-15": {"scheduler": "dpm++", "num_inference_steps": 15},
    "dpm++-20": {"scheduler": "dpm++", "num_inference_steps": 20},
    "dpm++-25": {"scheduler": "dpm++", "num_inference_steps": 25},
    "dpm++-30": {"scheduler": "dpm++", "num_inference_steps": 30},
    "dpm++sde-25": {"scheduler": "dpm++", "scheduler_options": {"algorithm_type": "sde-dpmsolver++"},
                    "num_inference_steps": 25},
    "unipc-10": {"scheduler": "unipc", "num_inference_steps": 10},
    "unipc-20": {"scheduler": "unipc", "num_inference_steps": 20},
    "unipc-25": {"scheduler": "unipc", "num_inference_steps": 25},
    "dpm++-30-cfg0.5": {"scheduler": "dpm++", "num_inference_steps": 30, "guidance_interval": (0.0, 0.5)},
    "dpm++-20-cfg0.5": {"scheduler": "dpm++", "num_inference_steps": 20, "guidance_interval": (0.0, 0.5)},
    "dpm++-25-cfg0.6": {"scheduler": "dpm++", "num_inference_steps": 25, "guidance_interval": (0.0, 0.6)},
    "dpm++-20-cfg.2-1": {"scheduler": "dpm++", "num_inference_steps": 20, "guidance_interval": (0.2, 1.0)},
    "folder-cfg0.5": {"preset": "quality", "guidance_interval": (0.0, 0.5)},
    "folder-fbc0.05": {"preset": "quality", "cache": ("FirstBlockCacheConfig", {"threshold": 0.05})},
    "folder-fbc0.1": {"preset": "quality", "cache": ("FirstBlockCacheConfig", {"threshold": 0.1})},
    "folder-fbc0.2": {"preset": "quality", "cache": ("FirstBlockCacheConfig", {"threshold": 0.2})},
    "folder-fbc0.3": {"preset": "quality", "cache": ("FirstBlockCacheConfig", {"threshold": 0.3})},
    "folder-fbc0.5": {"preset": "quality", "cache": ("FirstBlockCacheConfig", {"threshold": 0.5})},
    "dpm++-20-fbc0.3": {"scheduler": "dpm++", "num_inference_steps": 20,
                        "cache": ("FirstBlockCacheConfig", {"threshold": 0.3})},
    "folder-taylorseer3": {"preset": "quality",
                           "cache": ("TaylorSeerCacheConfig", {"cache_interval": 3, "disable_cache_before_step": 3})},
    "dpm++-20-taylorseer3": {"scheduler": "dpm++", "num_inference_steps": 20,
                             "cache": ("TaylorSeerCacheConfig", {"cache_interval": 3, "disable_cache_before_step": 3})},
    # MagCache: magnitude ratios calibrated on one tuning prompt ("footage of a blue disc dropping down", seed 0)
    # with MagCacheConfig(calibrate=True) at the setting's own solver and steps
    "dpm++-20-mag0.06": {"scheduler": "dpm++", "num_inference_steps": 20,
                          "cache": ("MagCacheConfig", {"threshold": 0.06, "num_inference_steps": 20,
                                                       "mag_ratios": DPM20_MAG_RATIOS})},
    "folder-mag0.06": {"preset": "quality",
                        "cache": ("MagCacheConfig", {"threshold": 0.06, "num_inference_steps": 50,
                                                     "mag_ratios": FOLDER50_MAG_RATIOS})},
    "balanced": {"preset": "balanced"},
    "fast": {"preset": "fast"},
}
TINY = dict(num_layers=6, num_attention_heads=2, attention_head_dim=24, cross_attention_dim=48, caption_channels=64)
REFERENCE = {"scheduler": "dpm++", "num_inference_steps": 100}
DETERMINISTIC = ("ddim", "dpm++", "unipc", "euler")


def resolve(pipe, setting: Dict[str, Any]) -> Dict[str, Any]:
    """A setting with its preset spelled out (the preset's values, then the setting's own), as explicit values: the
    checker passes the folder's steps explicitly, which would override a preset's."""
    from opensora.pipelines.presets import preset_values

    values = {**preset_values(setting.get("preset", pipe.settings.get("preset"))), **setting}
    values.pop("preset", None)
    return values


def is_deterministic(pipe, setting: Dict[str, Any]) -> bool:
    """True when the setting's solver injects no noise (ODE solvers; SDE variants and ancestral samplers do)."""
    from opensora.pipelines.schedulers import scheduler_name

    values = resolve(pipe, setting)
    name = values.get("scheduler") or scheduler_name(pipe.scheduler)
    sde = "sde" in str(values.get("scheduler_options", {}).get("algorithm_type", ""))
    return name in DETERMINISTIC and not sde


class Sampler:
    """Runs a setting on a pipeline: swaps in its scheduler and step cache for the call, counts evaluations."""

    CALL_KEYS = ("num_inference_steps", "guidance_interval", "guidance_scale")

    def __init__(self, pipe):
        self.pipe = pipe

    def __call__(self, setting: Dict[str, Any], fn):
        """``fn(call_kwargs)`` run with the setting in place -> (its result, the counter, seconds)."""
        from diffusers import hooks

        from opensora.pipelines.presets import EvaluationCounter
        from opensora.pipelines.schedulers import make_scheduler

        pipe, own = self.pipe, self.pipe.scheduler
        values = resolve(pipe, setting)
        if "scheduler" in values:
            pipe.register_modules(scheduler=make_scheduler(values["scheduler"], **values.get("scheduler_options", {})))
        if "cache" in values:
            name, options = values["cache"]
            pipe.transformer.enable_cache(getattr(hooks, name)(**options))
        kwargs = {"preset": "quality", **{k: values[k] for k in self.CALL_KEYS if k in values}}
        try:
            with EvaluationCounter(pipe.transformer) as counter:
                start = time.perf_counter()
                result = fn(kwargs)
                seconds = time.perf_counter() - start
        finally:
            if "cache" in values:
                pipe.transformer.disable_cache()
            pipe.register_modules(scheduler=own)
        return result, counter, seconds


def closeness(ref: Dict[str, Any], got: Dict[str, Any]) -> Dict[str, float]:
    """PSNR, SSIM of the decoded videos (uint8 (T, H, W, 3) lists) and the latents' relative L2 error."""
    import torch

    from wfvae.evaluation.metrics import video_psnr, video_ssim

    def stack(videos):  # uint8 (T, H, W, 3) -> (B, 3, T, H, W) in [-1, 1]
        x = torch.stack([torch.as_tensor(v) for v in videos]).float() / 127.5 - 1
        return x.permute(0, 4, 1, 2, 3)

    a, b = stack(ref["videos"]), stack(got["videos"])
    rel = ((got["latents"] - ref["latents"]).flatten(1).norm(dim=1) / ref["latents"].flatten(1).norm(dim=1))
    return {"psnr": video_psnr(a, b).mean().item(), "ssim": video_ssim(a, b).mean().item(),
            "latent_rel_err": rel.mean().item()}


def run_prompts(pipe, name: str, setting: Dict[str, Any], prompts, args) -> Dict[str, Any]:
    """Prompt following (all prompts) and the latents/videos of the first ``args.closeness`` prompts."""
    import torch

    from opensora.synthetic.prompt_check import evaluate

    finals: List[torch.Tensor] = []

    def keep(p, i, t, tensors):
        if i == p.num_timesteps - 1:
            finals.append(tensors["latents"].clone())
        return tensors

    def fn(kwargs):
        return evaluate(pipe, prompts, seed=args.seed, batch_size=args.batch_size, progress=False,
                        keep_videos=True, callback_on_step_end=keep, **kwargs)

    report, counter, seconds = Sampler(pipe)(setting, fn)
    n = args.closeness
    return {"name": name, **counter.per_video(len(prompts)), "s_per_video": seconds / len(prompts),
            "colour": report["colour_accuracy"], "motion": report["motion_accuracy"], "both": report["accuracy"],
            "num_prompts": len(prompts), "deterministic": is_deterministic(pipe, setting),
            "videos": [r["video"] for r in report["rows"][:n]], "latents": torch.cat(finals)[:n]}


def release_size_rows(args) -> List[Dict[str, Any]]:
    """Evaluations and wall time of each setting on a random-weight denoiser, latent ``args.latent``, no decoding."""
    import torch

    from diffusers import hooks

    from opensora.models import OpenSoraT2V
    from opensora.pipelines.presets import EvaluationCounter, guided_steps, preset_values
    from opensora.pipelines.schedulers import make_scheduler

    torch.manual_seed(0)
    if args.model_size == "shipped":
        model = OpenSoraT2V.from_config(OpenSoraT2V.load_config(os.path.join(args.model, "transformer")))
    else:
        model = OpenSoraT2V(**(TINY if args.model_size == "tiny" else {}))
    model = model.eval().to(args.device)
    if args.compile:
        model.compile_repeated_blocks()
    cfg = model.config
    t, h, w = (int(v) for v in args.latent.split("x"))
    length = 32
    g = torch.Generator().manual_seed(0)
    text = torch.randn(2 * args.videos, length, cfg.caption_channels, generator=g).to(args.device)
    mask = torch.ones(2 * args.videos, length, device=args.device)
    rows = []
    for name in args.settings:
        setting = SETTINGS[name]
        values = {**preset_values(setting.get("preset")), **setting}
        sched = make_scheduler(values.get("scheduler", "euler_ancestral"), **values.get("scheduler_options", {}))
        steps = values.get("num_inference_steps", 100)
        guide = guided_steps(steps, values.get("guidance_interval"))
        if "cache" in setting:
            model.enable_cache(getattr(hooks, setting["cache"][0])(**setting["cache"][1]))
        sched.set_timesteps(steps)
        n = args.videos
        x = torch.randn(n, cfg.in_channels, t, h, w, generator=g).to(args.device) * sched.init_noise_sigma
        with EvaluationCounter(model) as counter, torch.no_grad():
            start = time.perf_counter()
            for i, step in enumerate(sched.timesteps):
                rows_in = 2 * n if guide[i] else n
                inp = sched.scale_model_input(torch.cat([x] * (rows_in // n)), step)
                with model.cache_context("guided" if rows_in > n else "cond"):
                    out = model(inp, step.reshape(1).expand(rows_in).to(args.device), text[:rows_in, None],
                                mask[:rows_in, None], return_dict=False)[0][:, :cfg.in_channels].float()
                pred = out[:n] + 7.5 * (out[n:] - out[:n]) if rows_in > n else out
                x = sched.step(pred, step, x, return_dict=False)[0]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        if "cache" in setting:
            model.disable_cache()
        rows.append({"name": name, **counter.per_video(n), "s_per_video": seconds / n})
    return rows


def fmt_pct(x: Optional[float]) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="assets/models/opensora-t2v")
    p.add_argument("--settings", nargs="*", default=None, help="names from --list (default: all)")
    p.add_argument("--list", action="store_true", help="print the settings and exit")
    p.add_argument("--prompts", type=int, default=36)
    p.add_argument("--tuning", action="store_true", help="prompts of training triples (for choosing presets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--closeness", type=int, default=12, help="prompts compared with the reference (0: none)")
    p.add_argument("--release-size", action="store_true", help="random weights: evaluations and time only")
    p.add_argument("--model-size", choices=["release", "tiny", "shipped"], default="release",
                   help="--release-size denoiser: the release's config, a tiny one, or the model folder's config")
    p.add_argument("--latent", default="3x8x8", help="--release-size latent TxHxW")
    p.add_argument("--videos", type=int, default=1, help="--release-size videos sampled together")
    p.add_argument("--compile", action="store_true", help="--release-size: regional torch.compile of the blocks "
                   "(the first setting's time includes compiling)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.list:
        for name, setting in SETTINGS.items():
            print(f"{name:18} {setting}")
        return 0
    args.settings = args.settings or list(SETTINGS)
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        p.error(f"unknown settings {unknown}; see --list")
    import torch

    cpu = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu
    print(f"device: {device}; torch {torch.__version__}; date {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"command: python {' '.join(sys.argv)}\n")
    if args.release_size:
        print(f"denoiser: {args.model_size} config, random weights, latent {args.latent}, {args.videos} video(s) "
              f"at a time, no decoding, compiled blocks: {args.compile}; settings without a model folder: the "
              f"release's (100 Euler-ancestral steps)\n")
        print("| setting | evals / video | block evals / video | s / video |")
        print("|---|---|---|---|")
        for row in release_size_rows(args):
            print(f"| {row['name']} | {row['evaluations']:.0f} | {row['block_evaluations']:.1f} | "
                  f"{row['s_per_video']:.2f} |", flush=True)
        return 0

    from opensora.pipelines.text_to_video import OpenSoraPipeline
    from opensora.synthetic.shapes import eval_prompts, tuning_prompts

    pipe = OpenSoraPipeline.from_pretrained(args.model).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    prompts = tuning_prompts(args.prompts) if args.tuning else eval_prompts(args.prompts)
    s = pipe.settings
    print(f"model {args.model}: {s['num_frames']}x{s['height']}x{s['width']}, guidance {s['guidance']}, folder "
          f"sampler {s['scheduler']} {s['steps']} steps; {len(prompts)} {'tuning' if args.tuning else 'held-out'} "
          f"prompts, seed {args.seed}, batch {args.batch_size}; closeness on the first {args.closeness} prompts vs "
          f"{REFERENCE}\n")
    ref = run_prompts(pipe, "reference", REFERENCE, prompts[:args.closeness], args) if args.closeness else None
    print("| setting | evals / video | block evals / video | s / video | colour % | motion % | both % | "
          "PSNR dB | SSIM | latent rel. err |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.settings:
        rows.append(run_prompts(pipe, name, SETTINGS[name], prompts, args))
        row = rows[-1]
        near = closeness(ref, row) if ref and row["deterministic"] else {}
        print(f"| {name} | {row['evaluations']:.0f} | {row['block_evaluations']:.1f} | {row['s_per_video']:.2f} | "
              f"{fmt_pct(row['colour'])} | {fmt_pct(row['motion'])} | {fmt_pct(row['both'])} | "
              f"{near.get('psnr', float('nan')):.2f} | {near.get('ssim', float('nan')):.3f} | "
              f"{near.get('latent_rel_err', float('nan')):.3f} |", flush=True)
    if ref:
        print(f"\nreference ({len(prompts[:args.closeness])} prompts): evals {ref['evaluations']:.0f}, "
              f"{ref['s_per_video']:.2f} s/video, both {fmt_pct(ref['both'])}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
