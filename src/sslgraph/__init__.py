"""sslgraph: self-supervised representation learning beyond augmentation (kNN graphs between instances)."""

import warnings

# torch_geometric scripts two small classes at import time; torch now announces that API's deprecation on every
# import, which is noise for our users.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

__version__ = "0.1.0"
