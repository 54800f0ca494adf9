"""ipsecscope: explain IPsec tunnels from captures."""

__version__ = "0.1.0"
