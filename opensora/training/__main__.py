"""``python -m opensora.training export|cache ...``."""
from opensora.training.denoiser import main

raise SystemExit(main())
