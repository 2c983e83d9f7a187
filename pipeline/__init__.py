"""Building blocks: no knowledge of the CLI, DVC or of any stage."""
