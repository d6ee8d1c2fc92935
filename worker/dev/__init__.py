"""Developer tooling: what a developer or a test run starts locally, never production."""
