"""lab — a network-impairment benchmark and conformance lab for HTTP/2 versus HTTP/3."""

__version__ = "0.1.0"
