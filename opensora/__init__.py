"""Open-Sora Plan v1.3: the Skiparse denoiser and condition controllers (:mod:`opensora.models`), the diffusers
pipelines, schedulers and masks (:mod:`opensora.pipelines`), text encoders and the prompt refiner
(:mod:`opensora.text`), Lightning trainers (:mod:`opensora.training`), training data and buckets
(:mod:`opensora.data`), the ``opensora-sample`` command (:mod:`opensora.cli`), and the synthetic coloured-shapes
domain of the shipped demo models with its prompt checker (:mod:`opensora.synthetic`)."""
