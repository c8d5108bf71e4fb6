"""Evaluation: protocols, the data sources and models they score, ``evaluate`` (one model on one data set) and
``compare`` (several models, several data sets, one table). Uses the students, the deployment runtimes and the shared
numerics; scores teachers through ``pseudolabel.teachers``, imported lazily in :mod:`distill.evaluation.models`."""
