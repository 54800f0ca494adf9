"""analysis stage; see docs/ARCHITECTURE.md."""
