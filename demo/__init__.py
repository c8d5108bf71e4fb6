"""The demo: the whole pipeline on generated scenes, offline on CPU (``make demo``). Sits above both stages."""
