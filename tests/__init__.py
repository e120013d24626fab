"""The test suite: `make test` runs it all, `make test-quick` only what is not marked slow."""
