"""Files: chunked video reading and streamed video writing (:mod:`~wfvae.io.video`), frames as tensors and the one
resize of the project (:mod:`~wfvae.io.frames`), and the latents file of ``wfvae encode`` / ``wfvae decode``
(:mod:`~wfvae.io.latents_file`)."""
