"""Training entry point (Lightning CLI): ``python tools/train.py fit --config configs/wfvae/tiny.yaml``.

The model and data classes come from the config (``model.class_path`` / ``data.class_path``), so the same entry
point trains the WF-VAE (``wfvae.training.WFVAETraining`` + ``wfvae.data.VideoDataModule``) and later models.
Any config value can be overridden on the command line, e.g.::

    python tools/train.py fit --config configs/wfvae/s8.yaml --model.init_from /ckpt/WF-VAE-S-8Chn \
        --data.data "[/data/videos, /data/anno.json]" --trainer.max_steps 100000
    python tools/train.py fit --config configs/wfvae/tiny.yaml --ckpt_path runs/wfvae-tiny/checkpoints/last.ckpt
    python tools/train.py fit --config configs/wfvae/l16.yaml --trainer.strategy ddp --trainer.devices 8 \
        --trainer.num_nodes 2

The resolved config is written to the run's log folder (``config.yaml``, overwritten on resume). Configs are
parsed with OmegaConf, so ``${...}`` interpolations work in the YAML files.

Resuming (``--ckpt_path``) restores the step, both optimisers, the EMA copy, the discriminator and the loop state.
Note that Lightning's CLI then also takes the MODEL's init arguments from the checkpoint's hyper-parameters,
so ``--model.*`` overrides given together with ``--ckpt_path`` are ignored (trainer and data overrides apply).
To change model settings, start a new run with ``--model.init_from CKPT`` instead (weights only).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lightning as L  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402


def main(args=None) -> None:
    LightningCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                 parser_kwargs={"parser_mode": "omegaconf"}, save_config_kwargs={"overwrite": True}, args=args)


if __name__ == "__main__":
    main()
