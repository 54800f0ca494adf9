"""keys stage; see docs/ARCHITECTURE.md."""
