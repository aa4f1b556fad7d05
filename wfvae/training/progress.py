"""A progress bar that counts optimizer steps when the run is bounded by ``trainer.max_steps``.

Lightning's bars count batches per epoch and show ``Epoch 0/-2`` when only ``max_steps`` bounds the run (max_epochs
is then -1) and totals such as ``22/2`` when an epoch is shorter than the run. :class:`StepProgressBar` (Lightning's
own :class:`~lightning.pytorch.callbacks.TQDMProgressBar`, changed only in the training bar) shows one bar for the
whole run, ``global_step/max_steps``, kept across epochs and starting at the restored step after a resume. Without
``max_steps`` it is Lightning's bar unchanged. ``tools/train.py`` adds it to every run that has no progress bar.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """Training bar over optimizer steps: ``n = trainer.global_step``, ``total = trainer.max_steps`` (when > 0)."""

    @staticmethod
    def _step_bounded(trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self._step_bounded(trainer):
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.initial = 0
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_description("Training")
            self.train_progress_bar.refresh()

    def on_train_epoch_start(self, trainer, *args: Any) -> None:
        if not self._step_bounded(trainer):
            super().on_train_epoch_start(trainer, *args)
            return
        self.train_progress_bar.set_description(f"Training (epoch {trainer.current_epoch})")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self._step_bounded(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar
