"""Caption encoders (:mod:`~opensora.text.encoders`: T5/mT5, CLIP text towers, BERT-like sentence encoders behind
one interface) and the prompt refiner (:mod:`~opensora.text.refiner`)."""
