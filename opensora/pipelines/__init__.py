"""Open-Sora Plan v1.3 diffusers pipelines and their parts.

    from opensora.pipelines import OpenSoraPipeline
    pipe = OpenSoraPipeline.from_pretrained("assets/models/opensora-t2v")

Importing a pipeline class also registers the three pipelines with diffusers, so that
``DiffusionPipeline.from_pretrained`` finds them by the ``_class_name`` of a ``model_index.json``.

Modules: :mod:`~opensora.pipelines.text_to_video`, :mod:`~opensora.pipelines.conditions` (image/video conditions
and structure control), :mod:`~opensora.pipelines.masks`, :mod:`~opensora.pipelines.control_signals`,
:mod:`~opensora.pipelines.schedulers` (with the release's defaults) and :mod:`~opensora.pipelines.defaults` (a model
folder's ``model_index.json`` and sampling settings). The names below load on first use, so the command line can
read defaults without importing torch.
"""
from wfvae.lazy_exports import lazy_exports

__all__ = ["OpenSoraPipeline", "OpenSoraPipelineOutput", "OpenSoraImageToVideoPipeline", "OpenSoraControlPipeline"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "OpenSoraPipeline": "opensora.pipelines.text_to_video",
    "OpenSoraPipelineOutput": "opensora.pipelines.text_to_video",
    "OpenSoraImageToVideoPipeline": "opensora.pipelines.conditions",
    "OpenSoraControlPipeline": "opensora.pipelines.conditions",
})
