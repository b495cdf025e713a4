"""Benchmarks of the event log and gateway streaming, each beside raw nats-py (`make bench`)."""
