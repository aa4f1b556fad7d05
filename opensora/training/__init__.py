"""Training with Lightning: the denoiser (:mod:`~opensora.training.denoiser`, text-to-video and image-condition),
the structure controller (:mod:`~opensora.training.controller`), the shared v-prediction objective
(:mod:`~opensora.training.objectives`), adaptive gradient clipping (:mod:`~opensora.training.grad_clip`) and FSDP2
sharding of the denoiser under ``ModelParallelStrategy`` (:mod:`~opensora.training.sharding`).

``python -m opensora.training export|cache ...`` exports a checkpoint or caches latents (see the denoiser module).
"""
from wfvae.lazy_exports import lazy_exports

__all__ = ["DenoiserTraining", "StructureControllerTraining", "AdaptiveGradClip"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "DenoiserTraining": "opensora.training.denoiser",
    "StructureControllerTraining": "opensora.training.controller",
    "AdaptiveGradClip": "opensora.training.grad_clip",
})
