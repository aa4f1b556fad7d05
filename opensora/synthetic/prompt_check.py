"""Automatic prompt-following check of a text-to-video model on the synthetic captioned domain.

    pipe = OpenSoraPipeline.from_pretrained("assets/models/opensora-t2v")
    report = evaluate(pipe, eval_prompts(36))          # prompts never seen in training
    report["accuracy"]                                 # fraction with BOTH colour and motion right

Every prompt names a colour and a motion (:mod:`opensora.synthetic.shapes`); the video sampled for it is judged by
:func:`opensora.synthetic.shapes.analyse_clip`, which finds the saturated object, its hue and how its centroid and area
change. A sample is correct when both the colour and the motion match the prompt.

:func:`caption_sensitivity` looks inside the denoiser instead: how much its prediction moves when only the colour,
the shape or the motion words of a caption change -- a model that ignores its motion words scores ~0 there.

:func:`vae_ceiling` runs the same checker on VAE reconstructions of rendered held-out clips: the best score a model
decoding through that VAE can reach.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from wfvae.io.frames import to_tensor, to_uint8

from opensora.synthetic.artifacts import ghost_fraction, grid_excess
from opensora.synthetic.shapes import (COLOURS, SHAPES, analyse_clip, caption, heldout_triples, make_spec, render_clip,
                        train_triples)

# The motion a caption is switched to by :func:`caption_sensitivity`.
OPPOSITE_MOTION = {"left": "right", "right": "left", "up": "down", "down": "up", "grow": "shrink", "shrink": "grow"}


@torch.no_grad()
def evaluate(pipe, prompts: Sequence[Tuple[str, ...]], seed: int = 0, batch_size: int = 8,
             progress: bool = True, keep_videos: bool = False, **sample_kwargs) -> Dict[str, Any]:
    """Sample one video per ``(prompt, colour, motion)`` (or ``(prompt, colour, motion, shape)``) and judge it.

    Sampling arguments default to ``pipe.defaults`` (the model folder's ``model_index.json``), then
    ``sample_kwargs``. Batch ``k`` of ``batch_size`` prompts uses seed ``seed + k``.

    Returns ``{"rows": [...], "colour_accuracy", "motion_accuracy", "accuracy", "shape_accuracy", "num_prompts",
    "settings"}`` (``accuracy``: colour and motion both right; ``shape_accuracy`` over the prompts that name a
    shape, None when none does); with ``keep_videos`` each row also has its ``video`` (uint8 (T, H, W, 3)).
    """
    kwargs = {**getattr(pipe, "defaults", {}), **sample_kwargs}
    rows: List[Dict[str, Any]] = []
    batches = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    for k, batch in enumerate(tqdm(batches, desc="prompts", unit="batch", disable=not progress)):
        videos = pipe([item[0] for item in batch], generator=torch.Generator().manual_seed(seed + k),
                      output_type="pt", **kwargs).frames  # (B, T, 3, H, W) in [0, 1]
        for item, video in zip(batch, videos):
            prompt, colour, motion = item[:3]
            frames = to_uint8(video.permute(1, 0, 2, 3) * 2 - 1)
            got = analyse_clip(frames)
            row = {"prompt": prompt, "colour": colour, "motion": motion, "got_colour": got["colour"],
                   "got_motion": got["motion"], "got_shape": got["shape"]}
            row["colour_ok"] = row["got_colour"] == colour
            row["motion_ok"] = row["got_motion"] == motion
            row["ok"] = row["colour_ok"] and row["motion_ok"]
            row["ghost"], row["grid"] = ghost_fraction(frames), grid_excess(frames)
            if len(item) > 3:
                row["shape"] = item[3]
                row["shape_ok"] = got["shape"] == item[3]
            if keep_videos:
                row["video"] = frames
            rows.append(row)
    n = max(len(rows), 1)
    settings = {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str))}
    shaped = [r for r in rows if "shape_ok" in r]
    return {"rows": rows, "num_prompts": len(rows), "settings": {**settings, "seed": seed, "batch_size": batch_size},
            "colour_accuracy": sum(r["colour_ok"] for r in rows) / n,
            "motion_accuracy": sum(r["motion_ok"] for r in rows) / n,
            "accuracy": sum(r["ok"] for r in rows) / n,
            "shape_accuracy": sum(r["shape_ok"] for r in shaped) / len(shaped) if shaped else None,
            "mean_ghost": float(np.mean([r["ghost"] for r in rows])) if rows else 0.0,
            "mean_grid": float(np.mean([r["grid"] for r in rows])) if rows else 0.0}


def format_report(report: Dict[str, Any], limit: Optional[int] = None) -> str:
    """A plain-text table of the rows (``limit`` first ones) and the three accuracies."""
    lines = [f"{'ok':3} {'colour':>8} {'got':>8}  {'motion':>7} {'got':>7}  {'shape':>8} {'got':>8}  prompt"]
    for row in report["rows"][:limit]:
        lines.append(f"{'yes' if row['ok'] else 'no':3} {row['colour']:>8} {row['got_colour']:>8}  "
                     f"{row['motion']:>7} {row['got_motion']:>7}  {row.get('shape', '-'):>8} "
                     f"{row.get('got_shape', '-'):>8}  {row['prompt']}")
    shape = report.get("shape_accuracy")
    lines.append(f"colour {report['colour_accuracy']:.1%}  motion {report['motion_accuracy']:.1%}  "
                 f"both {report['accuracy']:.1%}" + (f"  shape {shape:.1%}" if shape is not None else "") +
                 f"  ({report['num_prompts']} prompts)")
    if "mean_ghost" in report:
        lines.append(f"artefacts: ghost share {report['mean_ghost']:.4f}, grid excess {report['mean_grid']:.3f}")
    return "\n".join(lines)


@torch.no_grad()
def vae_ceiling(vae, num_frames: int = 17, size: int = 96, per_triple: int = 2, seed: int = 0) -> Dict[str, float]:
    """Checker accuracy on ``vae`` reconstructions (posterior mean) of ``per_triple`` rendered clips of every
    held-out triple: ``{"colour_accuracy", "motion_accuracy", "accuracy", "num_clips"}``."""
    rng = np.random.default_rng(seed)
    colour_ok = motion_ok = both = shape_ok = count = 0
    ghosts, grids = [], []
    for colour, shape, motion in heldout_triples():
        for _ in range(per_triple):
            clip = to_tensor(render_clip(make_spec(colour, shape, motion, rng), num_frames, size))[None]
            rec = vae.decode(vae.encode(clip.to(vae.device, vae.dtype)).latent_dist.mean).sample[0]
            frames = to_uint8(rec)
            got = analyse_clip(frames)
            ghosts.append(ghost_fraction(frames))
            grids.append(grid_excess(frames))
            colour_ok += got["colour"] == colour
            motion_ok += got["motion"] == motion
            both += got["colour"] == colour and got["motion"] == motion
            shape_ok += got["shape"] == shape
            count += 1
    return {"colour_accuracy": colour_ok / count, "motion_accuracy": motion_ok / count, "accuracy": both / count,
            "shape_accuracy": shape_ok / count, "num_clips": count, "mean_ghost": float(np.mean(ghosts)),
            "mean_grid": float(np.mean(grids))}


@torch.no_grad()
def caption_sensitivity(pipe, timesteps: Sequence[int] = (300, 700, 900), num_captions: int = 8,
                        seed: int = 0) -> Dict[int, Dict[str, float]]:
    """How much the denoiser's prediction depends on each attribute of a caption, per timestep.

    ``num_captions`` training captions (:func:`opensora.synthetic.shapes.caption` of random training triples) are each
    varied in one attribute: the colour (the next palette colour), the shape (the next shape) or the motion (its
    opposite, :data:`OPPOSITE_MOTION`); the template and word choices stay the same. At every timestep the denoiser
    of ``pipe`` sees the same unit-Gaussian latents (B, C, t, h, w) of ``pipe.defaults``' size with the original
    and with the varied captions, no guidance.

    Returns ``{t: {"colour": rms, "shape": rms, "motion": rms}}``: the root-mean-square change of the prediction.
    """
    d = getattr(pipe, "defaults", {})
    shape = pipe.latent_shape(num_captions, d.get("num_frames", 17), d.get("height", 96), d.get("width", 96))
    triples, colours, shapes = train_triples(), list(COLOURS), list(SHAPES)
    pick = np.random.default_rng(seed)
    specs = [make_spec(*triples[int(pick.integers(len(triples)))], pick) for _ in range(num_captions)]
    variants = {
        "colour": lambda s: replace(s, colour=colours[(colours.index(s.colour) + 1) % len(colours)]),
        "shape": lambda s: replace(s, shape=shapes[(shapes.index(s.shape) + 1) % len(shapes)]),
        "motion": lambda s: replace(s, motion=OPPOSITE_MOTION[s.motion]),
    }

    def captions_of(spec_list):  # same random words for caption i of every variant
        return [caption(s, np.random.default_rng([seed, i])) for i, s in enumerate(spec_list)]

    texts = captions_of(specs) + [c for vary in variants.values() for c in captions_of([vary(s) for s in specs])]
    embeds, mask = pipe.encode_text(texts)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(pipe.device, pipe.dtype)
    rows = len(variants) + 1
    model = pipe.transformer
    out: Dict[int, Dict[str, float]] = {}
    for t in timesteps:
        timestep = torch.full((rows * num_captions,), float(t), device=pipe.device)
        pred = model(latents.repeat(rows, 1, 1, 1, 1), timestep, encoder_hidden_states=embeds.unsqueeze(1),
                     encoder_attention_mask=mask.unsqueeze(1), return_dict=False)[0][:, :shape[1]].float()
        base, *varied = pred.chunk(rows)
        out[int(t)] = {name: float((v - base).pow(2).mean().sqrt()) for name, v in zip(variants, varied)}
    return out
