"""The shard library: the sample format both stages share, and the tools that write, read, check and draw it."""
