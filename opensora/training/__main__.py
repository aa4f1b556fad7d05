"""``python -m opensora.training export|cache ...``."""
from opensora.training.offline import main

raise SystemExit(main())
