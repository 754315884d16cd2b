"""Stage C: evaluation of frozen features.

``knn`` (weighted kNN), ``linear`` (logistic-regression and SGD probes), ``graph_stats`` (graph statistics),
``features`` (batched extraction) and ``evaluate`` (everything a run directory holds -> metrics.json).
Nothing is imported here, so the training code can use the classifiers without loading the run driver.
"""
