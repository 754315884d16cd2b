"""``python -m sslgraph`` (and ``torchrun -m sslgraph``) runs the command line."""

import sys

from sslgraph.cli import main

sys.exit(main())
