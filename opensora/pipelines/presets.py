"""Named speed/quality presets for text-to-video sampling, and a counter of denoiser evaluations.

A preset is a set of sampling choices a user picks by name (``pipe(prompt, preset="fast")``,
``opensora-sample --preset fast``); arguments given explicitly override the preset's values, and a model folder's
``model_index.json`` may name its default preset (``"sampling": {"preset": "balanced", ...}``).

* ``quality``: the model folder's settings as they are (the release's where the folder says nothing): its
  scheduler (Euler ancestral), steps and guidance on every step. Outputs are unchanged.
* ``balanced`` / ``fast``: DPM-Solver++ 2M (deterministic, second order) on the same v-prediction,
  zero-terminal-SNR schedule (trailing spacing; its last step goes to sigma 0, ``final_sigmas_type="zero"``, the
  diffusers default) with 20 / 10 steps and guidance on every step: 40 / 20 evaluations per video, against 100
  for the shipped model's folder setting and 200 for the release's. Chosen on the tuning prompts
  (:func:`opensora.synthetic.shapes.tuning_prompts`) of the shipped model only: the cheapest settings that matched
  ``quality`` there (``balanced`` keeps 2x the steps as margin for its 1-point target); held-out figures and every
  other lever (UniPC, DDIM, guidance on a subset of steps, step caches) are in ``benchmarks/README.md``
  (``benchmarks/sampling.py``). A ``guidance_interval`` (guided steps as fractions) is available for any call.

The cost of a setting is counted in denoiser evaluations per video (one evaluation = the denoiser run on one latent
video; a guided step costs 2, an unguided one 1): :func:`evaluations_per_video` predicts it,
:class:`EvaluationCounter` measures it with forward hooks (also what a step cache really computes).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

# name -> values. Keys: ``scheduler`` (a :data:`opensora.pipelines.schedulers.SCHEDULER_NAMES` name),
# ``scheduler_options`` (its constructor overrides), ``num_inference_steps``, ``guidance_interval`` ((start, end)
# fractions of the steps that are guided). An absent key keeps the folder's setting.
PRESETS: Dict[str, Dict[str, Any]] = {
    "quality": {},
    "balanced": {"scheduler": "dpm++", "scheduler_options": {"algorithm_type": "dpmsolver++", "solver_order": 2},
                 "num_inference_steps": 20},
    "fast": {"scheduler": "dpm++", "scheduler_options": {"algorithm_type": "dpmsolver++", "solver_order": 2},
             "num_inference_steps": 10},
}
PRESET_NAMES: Tuple[str, ...] = tuple(PRESETS)
FULL_INTERVAL = (0.0, 1.0)


def check_preset(name: Optional[str]) -> Optional[str]:
    """``name`` if it is a preset name or None; ValueError naming the choices otherwise."""
    if name is not None and name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return name


def preset_values(name: Optional[str]) -> Dict[str, Any]:
    """A copy of preset ``name``'s values ({} for None or ``quality``); ValueError for an unknown name."""
    check_preset(name)
    values = dict(PRESETS.get(name, {}) if name else {})
    if "scheduler_options" in values:
        values["scheduler_options"] = dict(values["scheduler_options"])
    return values


def resolve_preset(name: Optional[str], num_inference_steps: Optional[int] = None,
                   scheduler: Optional[str] = None, guidance_interval=None) -> Dict[str, Any]:
    """Preset ``name``'s values with the explicit ones on top: ``{"num_inference_steps", "scheduler",
    "scheduler_options", "guidance_interval"}`` (None where neither sets it: the model folder's setting applies).
    The preset's solver options come only with its solver (an explicit ``scheduler`` gets none)."""
    values = preset_values(name)
    own_solver = scheduler is None and "scheduler" in values
    return {"num_inference_steps": values.get("num_inference_steps") if num_inference_steps is None
            else num_inference_steps,
            "scheduler": values.get("scheduler") if scheduler is None else scheduler,
            "scheduler_options": values.get("scheduler_options", {}) if own_solver else {},
            "guidance_interval": values.get("guidance_interval") if guidance_interval is None else guidance_interval}


def check_guidance_interval(interval) -> Tuple[float, float]:
    """``interval`` as a (start, end) pair of floats with 0 <= start < end <= 1 (None: every step)."""
    if interval is None:
        return FULL_INTERVAL
    try:
        start, end = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_interval must be a (start, end) pair, got {interval!r}") from None
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"guidance_interval must have 0 <= start < end <= 1, got {interval!r}")
    return start, end


def guided_steps(num_steps: int, interval=None) -> list:
    """For each of ``num_steps`` steps, whether it is guided: step ``i`` is when ``start <= i / num_steps < end``."""
    start, end = check_guidance_interval(interval)
    return [start <= i / num_steps < end for i in range(num_steps)]


def evaluations_per_video(num_steps: int, guidance_scale: float, interval=None) -> int:
    """Denoiser evaluations per video: 1 per step, plus 1 per guided step when ``guidance_scale > 1``."""
    guided = sum(guided_steps(num_steps, interval)) if guidance_scale > 1 else 0
    return num_steps + guided


class EvaluationCounter:
    """Counts what a denoiser computes while it is active (a context manager; hooks are removed on exit).

    ``rows``: latent videos the denoiser was called on (a batched [uncond, cond] call on B videos counts 2B);
    ``block_rows``: those rows times the blocks that really ran (a step cache skips blocks: its hooks wrap a block,
    so the block's self-attention query projection is what is watched). ``per_video(n)`` gives both per video,
    the block figure in whole-denoiser units (``block_rows / num_blocks``)."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.blocks = list(getattr(transformer, "transformer_blocks", []))
        self.rows = 0
        self.block_rows = 0
        self.calls = 0
        self._batch = 0
        self._handles = []

    def _on_call(self, module, args, kwargs):
        latent = args[0] if args else kwargs.get("hidden_states")
        self._batch = int(latent.shape[0])
        self.rows += self._batch
        self.calls += 1

    def _on_block(self, module, inputs, output):
        self.block_rows += self._batch

    def __enter__(self) -> "EvaluationCounter":
        self._handles.append(self.transformer.register_forward_pre_hook(self._on_call, with_kwargs=True))
        for block in self.blocks:
            self._handles.append(block.attn1.to_q.register_forward_hook(self._on_block))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def per_video(self, num_videos: int) -> Dict[str, float]:
        """``{"evaluations": rows / n, "block_evaluations": block_rows / (num_blocks * n)}``."""
        blocks = max(len(self.blocks), 1)
        return {"evaluations": self.rows / num_videos,
                "block_evaluations": self.block_rows / (blocks * num_videos) if self.blocks else self.rows / num_videos}
