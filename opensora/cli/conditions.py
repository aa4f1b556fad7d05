"""``opensora-sample``'s condition flags turned into a condition pipeline's call: checks that need no weights
(:func:`check_condition_args`) and the keyword arguments read from files (:func:`condition_arguments`).

The flags themselves are declared in :mod:`opensora.cli.condition_args` (importable without torch).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict

import torch

from opensora.models import OpenSoraInpaintConfig, StructureControllerConfig
from opensora.models.structure_controller import CONTROLLER_CLASS_NAME
from opensora.pipelines.conditions import ConditionError, read_control
from opensora.pipelines.control_signals import load_estimator, save_control


def _read_controller_config(path: str) -> StructureControllerConfig:
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        raise ConditionError(f"controller folder not found or without config.json: {path} (--controller)")
    with open(config) as fh:
        values = json.load(fh)
    if values.get("_class_name", CONTROLLER_CLASS_NAME) != CONTROLLER_CLASS_NAME:
        raise ConditionError(f"{path} is not a structure controller ({values.get('_class_name')})")
    return StructureControllerConfig.from_dict(values)


def check_condition_args(args, model_config) -> None:
    """Checks that need no weights: conditions vs the model kind, controller vs the model, files present."""
    image_args = args.image or args.video or args.mask_type or args.cond_frames is not None or args.noise_strength
    inpaint = isinstance(model_config, OpenSoraInpaintConfig)
    if image_args and not inpaint:
        raise ConditionError("--image/--video/--mask-type/--cond-frames/--noise-strength need an image-condition "
                             "model (OpenSoraInpaint_v1_3); --model is a text-to-video model")
    if args.image and args.video:
        raise ConditionError("give --image(s) or --video, not both")
    if args.noise_strength < 0:
        raise ConditionError("--noise-strength must be >= 0")
    for path in list(args.image) + ([args.video] if args.video else []):
        if not os.path.isfile(path):
            raise ConditionError(f"condition file not found: {path}")
    control_args = [a for a in ("control", "control_video", "control_frames", "save_control", "depth_estimator")
                    if getattr(args, a) is not None]
    if args.controller is None:
        if control_args:
            raise ConditionError(f"--{control_args[0].replace('_', '-')} needs --controller DIR")
        return
    if args.control is None or args.control_video is None:
        raise ConditionError("--controller needs --control {canny,sketch,depth} and --control-video PATH")
    if not os.path.isfile(args.control_video):
        raise ConditionError(f"control video not found: {args.control_video}")
    if args.depth_estimator is not None and args.control != "depth":
        raise ConditionError("--depth-estimator is for --control depth")
    c = _read_controller_config(args.controller)
    wanted = {"hidden size": (c.hidden_size, model_config.hidden_size),
              "number of blocks": (c.base_num_layers, model_config.num_layers),
              "patch size": (c.patch_size, model_config.patch_size)}
    wrong = [f"{k} {a} vs model {b}" for k, (a, b) in wanted.items() if a != b]
    if wrong:
        raise ConditionError(f"controller {args.controller} does not fit the model: {', '.join(wrong)}")


def condition_arguments(args, inpaint: bool, seed: int = 0) -> Dict[str, Any]:
    """The condition keyword arguments of a condition pipeline's call from the command line: the control (read,
    turned into the control kind, written with ``--save-control``) and the image/video clips (read at the output
    size, centre-cropped). Reports the control on stderr."""
    size, t = (args.height, args.width), args.frames
    kwargs: Dict[str, Any] = {}
    if args.controller is not None:
        options = {}
        if args.control == "canny":
            options = dict(low_threshold=args.canny_low, high_threshold=args.canny_high)
        elif args.control == "depth" and args.depth_estimator:
            options = dict(estimator=load_estimator(args.depth_estimator))
        control, mask = read_control(args.control_video, args.control, t, *size, args.control_frames, **options)
        if args.save_control:  # written under a temporary name, renamed when complete
            from wfvae.cli_support import commit, temp_path

            tmp = temp_path(args.save_control)
            save_control(tmp, control, fps=args.fps or 18.0)
            commit(tmp, args.save_control)
            print(f"{args.save_control}: {args.control} control {tuple(control.shape[1:])}", file=sys.stderr)
        kwargs.update(control=control, control_frames=args.control_frames, control_strength=args.control_strength)
        print(f"structure control: {args.control} on frames {mask.nonzero().flatten().tolist()} "
              f"(strength {args.control_strength:g})", file=sys.stderr)
    if inpaint:
        from wfvae.io.video import read_video

        paths = [args.video] if args.video else list(args.image)
        clips = [read_video(p, num_frames=t if args.video else 1, size=size, resize_mode="crop") for p in paths]
        if args.video:
            kwargs["video"] = clips[0]
        else:
            kwargs["image"] = clips
        kwargs.update(mask_type=args.mask_type, cond_frames=args.cond_frames, noise_strength=args.noise_strength,
                      condition_generator=torch.Generator().manual_seed(seed))
    return kwargs
