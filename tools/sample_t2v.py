"""``python tools/sample_t2v.py --prompt ... --model DIR ...``: the same program as the ``opensora-sample`` command."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from opensora.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
