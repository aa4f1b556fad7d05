"""Open-Sora Plan v1.3 denoisers, state-dict compatible with the published release, and the condition controllers."""
from opensora.models.config import OpenSoraT2VConfig
# diffusers' pipeline loader finds a component's load method by looking up ``ModelMixin`` in the component's library
# module (``["opensora.models", "OpenSoraT2V"]`` in model_index.json), so the library must expose it.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (isort: skip)
from opensora.models.structure_controller import (
    ControlledDenoiser, StructureController, StructureControllerConfig, StructureControllerOutput, latent_frame_mask)
from opensora.models.inpaint import OpenSoraInpaint, OpenSoraInpaintConfig, load_denoiser
from opensora.models.skiparse import skiparse_attention
from opensora.models.transformer import OpenSoraT2V

__all__ = ["OpenSoraT2V", "OpenSoraT2VConfig", "OpenSoraInpaint", "OpenSoraInpaintConfig", "load_denoiser",
           "StructureController", "StructureControllerConfig", "StructureControllerOutput", "ControlledDenoiser",
           "latent_frame_mask", "skiparse_attention"]
