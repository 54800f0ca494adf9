"""tui stage; see docs/ARCHITECTURE.md."""
