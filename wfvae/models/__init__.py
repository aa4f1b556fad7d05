"""The WF-VAE network: Haar wavelets (:mod:`~wfvae.models.wavelets`), causal convolutions and the stream cache
(:mod:`~wfvae.models.causal`), blocks (:mod:`~wfvae.models.blocks`), the configuration, encoder, decoder and
posterior (:mod:`~wfvae.models.encoder_decoder`), the released presets (:mod:`~wfvae.models.presets`), the
diffusers model :class:`WFVAE` (:mod:`~wfvae.models.autoencoder`) and checkpoint layouts
(:mod:`~wfvae.models.checkpoint`)."""
from wfvae.lazy_exports import lazy_exports

__all__ = ["WFVAE", "WFVAEConfig", "DiagonalGaussian", "Encoder", "Decoder"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "WFVAE": "wfvae.models.autoencoder",
    "WFVAEConfig": "wfvae.models.encoder_decoder",
    "DiagonalGaussian": "wfvae.models.encoder_decoder",
    "Encoder": "wfvae.models.encoder_decoder",
    "Decoder": "wfvae.models.encoder_decoder",
})
