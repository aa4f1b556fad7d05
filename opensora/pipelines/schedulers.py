"""Sampling schedulers (diffusers) set up as the Open-Sora Plan v1.3 release samples, and the release's defaults.

The v1.3 denoiser was trained with v-prediction on a zero-terminal-SNR noise schedule; the release's sampling
script (``sample_t2v_v1_3.sh``) passes ``--prediction_type v_prediction --rescale_betas_zero_snr``, which selects
"trailing" timestep spacing, with diffusers' default linear betas (1000 steps, 0.0001 -> 0.02; the ``v1_5``
scaled-linear 0.00085 -> 0.012 betas are not used for v1.3), EulerAncestral, 100 steps and CFG 7.5.

    scheduler = make_scheduler()                          # the release's EulerAncestral set-up
    scheduler = make_scheduler("dpm++", solver_order=3)   # another solver, same noise schedule
"""
from __future__ import annotations

import inspect
from typing import Dict

# Sampling defaults of the release's text-to-video script.
DEFAULT_STEPS = 100
DEFAULT_GUIDANCE = 7.5
DEFAULT_NUM_FRAMES = 93
DEFAULT_HEIGHT = 352
DEFAULT_WIDTH = 640
DEFAULT_FPS = 18
DEFAULT_SEED = 1234

# The release wraps every prompt in this template and guides away from this negative prompt (strings as published,
# leading/trailing whitespace included; the tokenizer drops it).
POSITIVE_PROMPT_TEMPLATE = """
    high quality, high aesthetic, {}
    """
NEGATIVE_PROMPT = """
    nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, 
    low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry.
    """

# The noise schedule the v1.3 denoiser was trained on, shared by every solver below.
NOISE_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=0.0001,
    beta_end=0.02,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    timestep_spacing="trailing",
)

# name -> diffusers class name; the classes are imported on first use (``SCHEDULERS``), so that the names and the
# defaults above cost no diffusers import (``opensora-sample --help``).
SCHEDULER_NAMES = {
    "euler_ancestral": "EulerAncestralDiscreteScheduler",  # the release's choice
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddpm": "DDPMScheduler",
    "unipc": "UniPCMultistepScheduler",
}
DEFAULT_SCHEDULER = "euler_ancestral"

# Per-solver settings of the release: DDIM and DDPM must not clip x0 to [-1, 1] (latents are not bounded).
_SOLVER_DEFAULTS: Dict[str, dict] = {
    "ddim": dict(clip_sample=False),
    "ddpm": dict(clip_sample=False),
}


def make_scheduler(name: str = DEFAULT_SCHEDULER, **overrides):
    """A fresh diffusers scheduler ``name`` (one of :data:`SCHEDULERS`) with the release's noise schedule.

    ``overrides`` replace or add constructor arguments (e.g. ``prediction_type="epsilon"``, ``solver_order=3``);
    an argument the class does not take raises ValueError, as does an unknown ``name``.
    """
    if name not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    cls = _classes()[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"{cls.__name__} does not take {', '.join(unknown)}")
    kwargs = {**NOISE_SCHEDULE, **_SOLVER_DEFAULTS.get(name, {}), **overrides}
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})


def scheduler_name(scheduler) -> str:
    """The :data:`SCHEDULERS` name of a scheduler instance (its class name if it is not one of them)."""
    for name, cls in _classes().items():
        if type(scheduler) is cls:
            return name
    return type(scheduler).__name__


def _classes() -> Dict[str, type]:
    """:data:`SCHEDULER_NAMES` with the diffusers classes (imported here)."""
    import diffusers

    return {name: getattr(diffusers, cls) for name, cls in SCHEDULER_NAMES.items()}


def __getattr__(name: str):
    if name == "SCHEDULERS":  # {name: diffusers class}, built on first use
        return _classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
