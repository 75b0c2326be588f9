"""zephserver: a threaded service-manager daemon that launches, queues and watches work."""

__version__ = "0.1.0"
