"""Stage C: evaluation of frozen features.

``knn`` (weighted kNN), ``linear`` (logistic-regression and SGD probes), ``graph_stats`` (graph statistics),
``features`` (batched extraction) and ``evaluate`` (the backbone and node-feature measurements of a run, from
networks, datasets and graphs). Nothing is imported here, so the training loop can use the classifiers
without loading the evaluation of whole runs.
"""
