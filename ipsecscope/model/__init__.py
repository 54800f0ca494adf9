"""Model objects shared by every stage. Stdlib only: no Textual, no crypto, no I/O."""
