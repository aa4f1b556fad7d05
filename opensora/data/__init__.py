"""Text-video training data: the release's annotation files (:mod:`~opensora.data.annotations`), datasets, the
latent cache and the data module (:mod:`~opensora.data.datasets`), and min-max token buckets
(:mod:`~opensora.data.buckets`)."""
from wfvae.lazy_exports import lazy_exports

__all__ = ["OpenSoraDataModule"]

__getattr__, __dir__ = lazy_exports(__name__, {"OpenSoraDataModule": "opensora.data.datasets"})
