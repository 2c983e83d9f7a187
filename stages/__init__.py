"""One module per pipeline stage. Stages call building blocks, never each other's internals."""
