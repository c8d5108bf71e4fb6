"""shards.tools."""
