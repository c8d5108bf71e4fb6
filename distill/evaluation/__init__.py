"""Evaluation, one module per idea: ``protocols`` (how a prediction is scored: which ground truth, which pixels,
which alignment), ``evaluate`` (the command that scores one model on one data set: its config, the data sources it
reads, its report) and ``compare`` (several models, several data sets, one table). Uses the students, the deployment
layer (models load through :mod:`distill.deploy.model`, which runs teachers through ``pseudolabel.teachers``) and the
shared numerics."""
