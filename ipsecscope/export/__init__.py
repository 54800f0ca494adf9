"""export stage; see docs/ARCHITECTURE.md."""
