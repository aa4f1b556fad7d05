"""``python tools/wfvae_codec.py reconstruct|encode|decode ...``: the same program as the ``wfvae`` command."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wfvae.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
