"""crypto stage; see docs/ARCHITECTURE.md."""
