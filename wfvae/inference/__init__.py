"""Inference helpers around :class:`wfvae.WFVAE`: padding any video to the accepted shapes
(:mod:`~wfvae.inference.padding`), spatial tiling with blended overlaps (:mod:`~wfvae.inference.tiling`) and
chunk/tile sizes that fit a memory budget (:mod:`~wfvae.inference.memory`). The exact temporal chunking (the
causal stream cache) lives with the network in :mod:`wfvae.models.causal`."""
