"""Kafka plumbing shared by the service and the load generator: the embedded broker."""
