"""Open-Sora Plan v1.3 denoisers, state-dict compatible with the published release, and the condition controllers."""
from .config import OpenSoraT2VConfig
from .controlnet import ControlledDenoiser, StructureController, StructureControllerConfig, latent_frame_mask
from .inpaint import OpenSoraInpaint, OpenSoraInpaintConfig, load_denoiser
from .skiparse import skiparse_attention
from .transformer import OpenSoraT2V

__all__ = ["OpenSoraT2V", "OpenSoraT2VConfig", "OpenSoraInpaint", "OpenSoraInpaintConfig", "load_denoiser",
           "StructureController", "StructureControllerConfig", "ControlledDenoiser", "latent_frame_mask",
           "skiparse_attention"]
