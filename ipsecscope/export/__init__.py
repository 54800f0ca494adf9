"""export stage; see docs/ARCHITECTURE.md.

* :mod:`.pcapng` — streaming pcapng writer (:class:`~.pcapng.PcapngWriter`).
* :mod:`.jsonl` — one JSON object per ESP packet, schema ``ipsecscope.decrypt/1``.
* :mod:`.engine` — decrypt-and-export over a whole capture (``ipsecscope decrypt``,
  :func:`ipsecscope.api.decrypt_capture`): mmap fast path; :mod:`.parallel` splits big files over
  processes, :mod:`.general` reads the rest frame by frame, :mod:`.totals` counts a run.
"""
