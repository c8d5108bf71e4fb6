"""The distillation stage: shards -> student; evaluation, export, predict."""
