"""``python -m opensora.cli ...`` is ``opensora-sample ...``."""
from opensora.cli.sample import main

raise SystemExit(main())
