"""mosquitto-guard: verified launch, sandboxing and auditing for Eclipse Mosquitto brokers."""

__version__ = "0.1.0"
