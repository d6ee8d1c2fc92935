"""events-worker: a Kafka stream-processing worker for usage-based billing."""

__version__ = "0.1.0"
