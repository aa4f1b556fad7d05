"""``python tools/sample_t2v.py --prompt ... --model DIR ...``: the same program as the ``opensora-sample`` command."""
import sys

from opensora.cli.sample import main

if __name__ == "__main__":
    sys.exit(main())
