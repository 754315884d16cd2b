"""The run layer: a run directory (:class:`RunDir`) and one module per stage that reads its inputs through it,
calls the library and writes its outputs atomically.

``pretrain`` (checkpoint, logs, graphs), ``export`` (graphs again from the checkpoint), ``refine``
(refined embeddings), ``evaluate`` (metrics), ``visualize`` (figures), ``report`` (report.md/html);
``pipeline`` chains them and ``settings`` loads every command's configuration.
"""

from sslgraph.run.rundir import RunDir

__all__ = ["RunDir"]
