"""Work on denoiser training runs outside the Trainer, and the ``python -m opensora.training`` command.

    python -m opensora.training export runs/t2v/checkpoints/last.ckpt out/OpenSoraT2V [--no-ema] [--lora]
    (a checkpoint file, or the folder of ``ModelParallelStrategy(save_distributed_checkpoint=True)``)
    python -m opensora.training cache --config configs/opensora/t2v_synthetic.yaml cache_dir   # latents + text

:func:`export` writes the (EMA) denoiser of a :class:`~opensora.training.DenoiserTraining` checkpoint in the release
layout; :func:`write_latent_cache` / :func:`cache_from_config` precompute VAE latents and caption features so that
training can read them instead of videos (``data.init_args.cache``).
"""
from __future__ import annotations

import glob
import os
import shutil
from typing import Any, Dict, Iterable, Optional, Sequence

import torch

from wfvae.training.ema import ema_weights

from opensora.models import OpenSoraInpaint, OpenSoraInpaintConfig, OpenSoraT2V
from opensora.models.diffusers_glue import LORA_TARGETS, lora_config, save_lora_weights
from opensora.training.denoiser import DenoiserTraining, build_config
from opensora.training.sharding import read_checkpoint


@torch.no_grad()
def write_latent_cache(module: DenoiserTraining, loader: Iterable[Dict[str, Any]], folder: str,
                       all_captions: bool = False) -> int:
    """Encode every batch of ``loader`` once (videos with the module's VAE, captions with its text encoder, and for
    the image-condition model the masked-video latent and compressed mask) into one ``.safetensors`` per sample,
    read back by :class:`opensora.data.datasets.LatentCacheDataset` (``data.cache``). Use a loader without caption
    dropout;
    the condition noise and masks drawn here are then fixed. With ``all_captions`` a sample with several captions
    (``batch["captions"]``) gives one item per caption, sharing the latents (the video is encoded once).
    Returns the number of items written."""
    from opensora.data.datasets import save_cache_item

    count = 0
    for batch in loader:
        if batch is None:
            continue
        if "latents" in batch:
            latents = batch["latents"].float()
        else:
            latents = module.encode_video(batch["video"].to(module.device))
        items = {"latents": latents}
        if isinstance(module.model, OpenSoraInpaint):
            cond = module.conditions_of({k: v.to(module.device) if torch.is_tensor(v) else v for k, v in batch.items()},
                                        latents)
            items["masked_latents"], items["compressed_mask"] = cond.split(
                [latents.shape[1], cond.shape[1] - latents.shape[1]], dim=1)
        if all_captions and "captions" in batch:
            pairs = [(i, cap) for i, caps in enumerate(batch["captions"]) for cap in caps]
            index = torch.tensor([i for i, _ in pairs], device=latents.device)
            items = {k: v[index] for k, v in items.items()}
            text, mask = module.captions_of({"caption": [cap for _, cap in pairs]}, len(pairs))
        else:
            text, mask = module.captions_of(batch, latents.shape[0])
        items.update(text_embeds=text, text_mask=mask)
        latents = items["latents"]
        for i in range(latents.shape[0]):
            save_cache_item(os.path.join(folder, f"{count:08d}.safetensors"), **{k: v[i] for k, v in items.items()})
            count += 1
    return count


def export(checkpoint: str, folder: str, ema: bool = True, max_shard_size: str = "10GB",
           lora: bool = False, to_t2v: bool = False) -> OpenSoraT2V:
    """Write the EMA (or the trained) denoiser of a :class:`DenoiserTraining` checkpoint to ``folder`` in the
    release layout (``config.json`` + safetensors, sharded above ``max_shard_size``); with ``lora`` (a run with
    ``lora_rank``) only its adapter, as ``pytorch_lora_weights.safetensors``. ``to_t2v``: an image-condition model
    trained with ``t2iv_condition: zero`` is written as the text-to-video model it is without a condition
    (:meth:`opensora.models.OpenSoraInpaint.to_t2v`)."""
    data = read_checkpoint(checkpoint)
    if not isinstance(data, dict) or "state_dict" not in data or "hyper_parameters" not in data:
        raise ValueError(f"{checkpoint} is not a denoiser training checkpoint (no state_dict / hyper_parameters)")
    hp = data["hyper_parameters"]
    use_ema = ema and hp.get("ema_decay") is not None
    state = ema_weights(data["state_dict"]) if use_ema else {}
    state = state or {k[len("model."):]: v for k, v in data["state_dict"].items() if k.startswith("model.")}
    return write_release(hp, state, folder, max_shard_size, lora, to_t2v, name=checkpoint)


def write_release(hp: Dict[str, Any], state: Dict[str, torch.Tensor], folder: str, max_shard_size: str = "10GB",
                  lora: bool = False, to_t2v: bool = False, name: str = "the run") -> OpenSoraT2V:
    """Write the denoiser of a :class:`DenoiserTraining` run with hyper-parameters ``hp`` and weights ``state``
    (keys of the denoiser itself) to ``folder``: the release layout, or the LoRA adapter (``lora``), or the
    text-to-video model of an image-condition run (``to_t2v``) -- :func:`export`'s options."""
    config = build_config(hp.get("pretrained"), hp.get("model_config"), bool(hp.get("inpaint")))
    rank = hp.get("lora_rank")
    if lora and rank is None:
        raise ValueError(f"{name} was not trained with lora_rank: export it without --lora")
    if to_t2v and (lora or not isinstance(config, OpenSoraInpaintConfig) or hp.get("t2iv_condition") != "zero"):
        raise ValueError(f"{name}: --to-t2v needs an image-condition run with t2iv_condition: zero "
                         f"(and no LoRA)")
    if rank is not None and not lora:
        raise ValueError(f"{name} trained a LoRA adapter (lora_rank {rank}): export it with --lora")
    with torch.device("meta"):
        model = (OpenSoraInpaint if isinstance(config, OpenSoraInpaintConfig) else OpenSoraT2V)(config)
        if lora:
            model.add_adapter(lora_config(rank, hp.get("lora_alpha"), hp.get("lora_targets") or LORA_TARGETS))
    model.load_state_dict(state, strict=True, assign=True)
    if lora:
        save_lora_weights(model, folder)
        return model
    if to_t2v:
        model = model.to_t2v()
    model.save_pretrained(folder, max_shard_size)
    return model


def link_conditioned_items(source: str, folder: str) -> int:
    """Hard-link (copy where linking fails) into ``folder`` every item of the latent cache ``source`` whose
    ``compressed_mask`` keeps at least one frame: an image-condition cache without its text-to-video (``t2iv``)
    samples, to mix with a new cache whose text-to-video samples are wanted instead. Returns the count."""
    from safetensors import safe_open

    count = 0
    for path in sorted(glob.glob(os.path.join(source, "**", "*.safetensors"), recursive=True)):
        with safe_open(path, "pt") as fh:
            if "compressed_mask" not in fh.keys():
                raise ValueError(f"{path} has no compressed_mask: not an image-condition cache")
            if bool((fh.get_tensor("compressed_mask") >= 1).all()):   # keeps no frame: t2iv
                continue
        target = os.path.join(folder, os.path.relpath(path, source))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
        count += 1
    return count


def cache_from_config(config: str, folder: str, batch_size: Optional[int] = None, all_captions: bool = False) -> int:
    """Write the latent cache of a training config's ``data`` (no caption dropout, every sample once) with its
    ``model``'s VAE and text encoder into ``folder``; train on it with ``data.init_args.cache: folder``."""
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from opensora.data.datasets import OpenSoraDataModule

    cfg = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    model_args = dict(cfg["model"].get("init_args", {}))
    data_args = dict(cfg["data"].get("init_args", {}))
    model_args.update(ema_decay=None, export_dir=None, cached_caption_dropout=0.0)
    data_args.update(cache=None, caption_dropout=0.0, num_workers=0, val_data=None, drop_last=False)
    if batch_size is not None:
        data_args["batch_size"] = batch_size
    if data_args.get("data") is None:
        raise ValueError(f"{config}: data.init_args.data (the annotation data) is needed to build a cache")
    module = DenoiserTraining(**model_args).eval()
    data = OpenSoraDataModule(**data_args)
    data.setup("fit")
    loader = data.train_dataloader()
    return write_latent_cache(module, tqdm(loader, desc="caching", unit="batch"), folder, all_captions)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from wfvae.cli_support import ErrorParser, Outputs, UsageError, run_cli

    parser = ErrorParser(prog="python -m opensora.training",
                         description="Export a denoiser training checkpoint to the release layout, or "
                                     "precompute the latent cache of a training config.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ErrorParser)
    ca = sub.add_parser("cache", help="training config -> folder of cached latents and caption features")
    ca.add_argument("--config", required=True, help="the training YAML (its model.init_args and data.init_args)")
    ca.add_argument("folder")
    ca.add_argument("--batch-size", type=int, default=None)
    ca.add_argument("--all-captions", action="store_true",
                    help="one item per caption of each entry (the video is encoded once)")
    ex = sub.add_parser("export", help="checkpoint -> model folder (EMA weights unless --no-ema)")
    ex.add_argument("checkpoint", help="a checkpoint file, or the folder of a sharded (FSDP) checkpoint")
    ex.add_argument("folder")
    ex.add_argument("--no-ema", action="store_true")
    ex.add_argument("--max-shard-size", default="10GB")
    ex.add_argument("--to-t2v", action="store_true",
                    help="write an image-condition run (t2iv_condition: zero) as its text-to-video model")
    ex.add_argument("--lora", action="store_true",
                    help="write only the LoRA adapter (pytorch_lora_weights.safetensors) of a lora_rank run")
    ln = sub.add_parser("link-conditioned", help="cache -> folder of hard links to its items that keep a frame "
                                                 "(drops the text-to-video samples)")
    ln.add_argument("source")
    ln.add_argument("folder")
    for p in (ca, ex, ln):
        p.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")

    def run() -> None:
        args = parser.parse_args(argv)
        source = vars(args)[{"cache": "config", "export": "checkpoint", "link-conditioned": "source"}[args.command]]
        if args.command == "link-conditioned" and not os.path.isdir(source):
            raise UsageError(f"cache folder not found: {source}")
        if not (os.path.isfile(source) or args.command != "cache" and os.path.isdir(source)):
            raise UsageError(f"{'config' if args.command == 'cache' else 'checkpoint'} not found: {source}")
        if args.command == "cache" and args.batch_size is not None and args.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
        if os.path.exists(args.folder) and not os.path.isdir(args.folder):
            raise UsageError(f"{args.folder} exists and is not a folder")
        if os.path.isdir(args.folder) and os.listdir(args.folder) and not args.overwrite:
            raise UsageError(f"{args.folder} is not empty: pass --overwrite to write into it, or choose another folder")
        outputs = Outputs(overwrite=args.overwrite, inputs=[source])
        outputs.check_folder(args.folder)
        outputs.make_folder(args.folder)
        if args.command == "cache":
            count = cache_from_config(args.config, args.folder, args.batch_size, args.all_captions)
            print(f"{args.folder}: {count} cached samples")
        elif args.command == "link-conditioned":
            try:
                count = link_conditioned_items(args.source, args.folder)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            print(f"{args.folder}: {count} items that keep a frame")
        else:
            try:
                export(args.checkpoint, args.folder, ema=not args.no_ema, max_shard_size=args.max_shard_size,
                       lora=args.lora, to_t2v=args.to_t2v)
            except ValueError as exc:
                raise UsageError(str(exc).splitlines()[0]) from None
            print(f"{args.folder}: exported the denoiser")

    return run_cli(run)

