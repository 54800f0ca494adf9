"""state stage; see docs/ARCHITECTURE.md."""
