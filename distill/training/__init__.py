"""The training layer: shards -> a student (``distill.py``; ``docs/distill.md``).

``config`` (the command's config, light: no torch at import), ``data`` (shards -> batches on the device, damage counts,
the test-split guard), ``losses``, ``train`` (the loop, its optimizer step and its on-device figures), ``checkpoint``
(atomic, resumable). It uses the students and the shared numerics (``distill.align``, ``distill.metrics``), never
evaluation or deployment.
"""
