"""The synthetic domain of the shipped demo models, kept out of the library core: captioned clips of one coloured
shape moving over a plain background (:mod:`~opensora.synthetic.shapes`) and the automatic prompt-following
check (:mod:`~opensora.synthetic.prompt_check`)."""
