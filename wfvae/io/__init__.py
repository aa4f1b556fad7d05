"""Files: chunked video reading, streamed video writing and resizing (:mod:`~wfvae.io.video`), and the latents
file of ``wfvae encode`` / ``wfvae decode`` (:mod:`~wfvae.io.latents_file`)."""
