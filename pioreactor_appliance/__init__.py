"""The Pioreactor appliance: one Twisted process per Pi."""

__version__ = "26.11.0"
