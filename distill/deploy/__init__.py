"""Deployment: the Python API and its one model loader (``model``), the runners and the exported files' contract
(``runtime``; any exported file opened by ``exported``), export with parity, int8 and its accuracy gate (``export``,
one backend module per runtime: ``onnx``, ``litert``, ``executorch_pte``, ``coreml``), latency benchmarks
(``benchmark``), prediction on pictures and video (``predict``) and publishing (``hub``). Uses the students and the
shared numerics; never the training loop, and evaluation only from inside the export command's int8 accuracy gate."""
