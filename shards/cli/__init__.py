"""shards.cli."""
