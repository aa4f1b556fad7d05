"""``python tools/wfvae_codec.py reconstruct|encode|decode ...``: the same program as the ``wfvae`` command."""
import sys

from wfvae.cli import main

if __name__ == "__main__":
    sys.exit(main())
