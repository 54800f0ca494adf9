"""Decrypt-and-export engine: the fast path behind ``ipsecscope decrypt`` and
:func:`ipsecscope.api.decrypt_capture`.

Why not ``open_capture`` + ``Decoder`` + ``EspDecryptor.decrypt`` per frame? Those build three
objects per frame (RawFrame, EspPacket, EspResult), which costs more than the AES-GCM call
itself. Here an uncompressed pcap/pcapng file is read in 1 MiB windows and, for the common case
(little-endian pcap or pcapng, Ethernet, IPv4 without options or fragments, raw ESP or ESP in UDP
4500, an SA already known not to use ESN, tunnel mode), one ``struct.unpack_from`` reads the
record header, Ethernet type, IPv4 fields, SA key and IV (or AAD) at once; the ESP bytes go from
the window to the per-SA opener and the inner packet straight into the buffered output
(``_loop_pcap_eth``). The rarer block types and the chunk-bound walk still use a memory map.
Everything else goes through ``_Worker._frame``, which handles every case (IPv6, transport mode,
ESN inference, failures, --keep-other, JSON lines) and hands frames it cannot parse itself (IP
fragments, IPv6 extension headers, RFC 8229 TCP, other link types) to the general
:class:`~ipsecscope.decode.demux.Decoder`. Same result, only slower for those frames. gzip'd
captures are inflated to a temporary file first when big, else read by the general reader.

What the decoder gives up late is processed as the analysis (session.py) processes it: a frame
handed to the decoder may yield several packets (a TCP segment completing several RFC 8229
records), and the records of earlier frames that waited behind a TCP gap given up (too many
segments waiting, FIN/RST; at the end of the capture ``Decoder.flush``, :meth:`_Worker.run`'s
``last``) are decrypted then and **written when decoded**, after the frames read since, with
their own frame's time, frame number (JSON ``frame``) and a pcapng comment saying so
(export/perframe.py ``FramePath._late``). Not put back in capture order: the output is written as
the capture is read, and the frames read after a waiting segment can be the rest of the capture.
The decoder's malformed marks (the gap; IP datagrams whose fragments never all came) are counted by
layer (``RunStats.marks``), as ``sas`` counts them.

Large files are split over processes (export/parallel.py: chunk bounds, the guessed first
records checked, the ESN, IP-fragment and RFC 8229 stream reconcile step, then the end of the
capture once); gzip'd captures too small to inflate and
standard input take the general path (export/general.py); the totals and the DSB of the keys used
are export/totals.py's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO, TextIO

from ..capture.layout import Layout, scan
from ..errors import CaptureError, ExportError
from ..keys.formats import add_secrets_block
from ..outfile import atomic_output, refuse_inputs, same_file
from . import hotloop
from .hotloop import ChunkResult, Options, _Worker
from .pcapng import LINKTYPE_RAW, PcapngWriter
from .totals import RunStats, collect, open_jsonl, write_dsb

if TYPE_CHECKING:
    from ..keys.store import KeyStore

PARALLEL_MIN_BYTES = 24 << 20  # below this, forking costs more than it saves
# Below this, ``jobs=0`` (the default) runs one process whatever the idle cores: a second one costs
# ~0.05 s of CPU (fork, its own first window, its part file appended) plus 4-8 % of the work, and on
# a file this small (~300k packets, ~0.6 s in one process) saves at most ~0.15 s of wall time. AES-GCM
# 200k packets (83 MB), idle 2 cores: -j 2 0.48 s CPU / 0.45 s wall, -j 1 0.40 / 0.54; 1M: -j 2 1.67 / 1.35,
# -j 1 1.55 / 1.78. An explicit ``-j N`` still splits from PARALLEL_MIN_BYTES up.
AUTO_PARALLEL_MIN_BYTES = 128 << 20
CHUNK_MIN_BYTES = 8 << 20  # a chunk costs a fork-free but not free set-up (new worker, part file)
# Chunks per process. More than one lets a process that gets less CPU (a shared machine) do fewer
# chunks, but every chunk taken while its neighbour is still in progress walks the record
# headers from the nearest known bound: with 4 per process the walks add up to the whole file
# (~0.28 us per record, +5 % CPU on the 200k-packet benchmark) instead of half of it.
MAX_CHUNKS_PER_JOB = 1


def run(path: str | os.PathLike[str], keys: KeyStore, *, out: str | BinaryIO | None,
        jsonl_out: str | TextIO | None = None, opts: Options,
        jobs: int = 0, progress: Callable[[int, int], None] | None = None, dsb: bool = False,
        parallel_min_bytes: int = PARALLEL_MIN_BYTES, mark_every: int = 512, inputs: Sequence[str] = ()) -> RunStats:
    """Decrypt ``path`` into ``out`` (pcapng) and/or ``jsonl_out`` (path, or a text stream).

    Output paths are written through :func:`ipsecscope.outfile.atomic_output` (0600, temporary
    file renamed into place only when the run succeeds); an output that is ``path`` or one of
    ``inputs`` (key files) is refused before anything is read."""
    path = str(path)
    if opts.frames is not None:  # a display filter's selection (decrypt -Y, api frames=): one process's job
        jobs = 1
    inputs = [path, *inputs]
    paths = [o for o in (out, jsonl_out) if isinstance(o, (str, os.PathLike))]
    for o in paths:
        refuse_inputs(o, inputs)
    if len(paths) == 2 and (os.path.abspath(paths[0]) == os.path.abspath(paths[1])
                            or same_file(paths[0], paths[1])):
        raise ExportError("the pcapng and the JSON lines output name the same file; use two files")
    from contextlib import ExitStack

    with ExitStack() as stack:  # outputs committed (renamed into place) only if the run succeeds
        if isinstance(out, (str, os.PathLike)):
            out = stack.enter_context(atomic_output(out, "wb", inputs=inputs))
        if isinstance(jsonl_out, (str, os.PathLike)):
            jsonl_out = stack.enter_context(atomic_output(jsonl_out, "w", inputs=inputs))
        return _run(path, keys, out, jsonl_out, opts, jobs, progress, dsb, parallel_min_bytes, mark_every)


def default_jobs(size: int | None = None) -> int:
    """Processes for ``jobs=0``: 1 for a file of ``size`` < AUTO_PARALLEL_MIN_BYTES, else the cores
    that are idle now (CPU count less the 1-minute load average, rounded), at least 1 and at most
    8. A second process costs 4-19 % more CPU in all and
    halves the wall time only when a core is free for it: on a busy machine one process is as fast
    and cheaper. Measured on 2 cores at load 4-6, 200k-3M packets (1M AES-GCM: -j 2 = -j 1 + 0.13
    s): its part file appended (0.03-0.05 s), numpy imported before the fork, and two processes
    slowing each other on the shared cores; the walk to its first record (~0.2 us a record) is
    guessed away."""
    if size is not None and size < AUTO_PARALLEL_MIN_BYTES:
        return 1
    n = os.cpu_count() or 1
    try:
        free = n - os.getloadavg()[0]
    except OSError:  # no load average on this platform: use every core
        free = n
    return max(1, min(8, n, int(free + 0.5)))


def _run(path: str, keys, out, jsonl_out, opts: Options, jobs: int, progress, dsb: bool,
         parallel_min_bytes: int, mark_every: int) -> RunStats:
    if path == "-":  # standard input (`tcpdump -w - | ipsecscope decrypt - ...`): read once, in order
        return _run_layout(path, None, keys, out, jsonl_out, opts, 1, progress, dsb, None)
    try:
        size = os.path.getsize(path)
        if not os.path.isfile(path) and not os.path.isdir(path):  # FIFO, pipe: open() would block
            raise CaptureError(f"{path} is not a regular file (a pipe or device): save the capture to a file first")
        with open(path, "rb"):  # a directory or an unreadable file: one line here, not a traceback in scan()
            pass
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror}") from None
    auto = jobs <= 0
    if auto:
        jobs = default_jobs(size)
    chunks = chunk_count(size, jobs) if size >= parallel_min_bytes else 1
    lay = scan(path, chunks, mark_every)
    tmp = gz_note = bomb = None
    if lay is None:
        lay, tmp, gz_note, bomb = _decompress(path, default_jobs() if auto else jobs, mark_every)
        if auto and lay is not None:  # by the size inflated, not the gzip's
            jobs = default_jobs(lay.size)
    try:
        stats = _run_layout(path, lay, keys, out, jsonl_out, opts, jobs, progress, dsb, gz_note)
        stats.warning = stats.warning or bomb
        return stats
    finally:
        if tmp is not None:
            os.unlink(tmp)


def _run_layout(path: str, lay: Layout | None, keys, out, jsonl_out, opts: Options, jobs: int, progress,
                dsb: bool, gz_note: str | None) -> RunStats:
    if lay is not None and lay.secrets:
        for stype, data in lay.secrets:
            add_secrets_block(keys, stype, data)
    opts.pcapng = out is not None
    opts.jsonl = jsonl_out is not None
    stats = RunStats()
    if lay is None:  # (imported here: a capture the layout scan takes never needs it)
        from .general import run_general

        return run_general(path, keys, out, jsonl_out, opts, progress, dsb, stats)
    stats.truncated = lay.truncated or gz_note
    writer = PcapngWriter(out) if out is not None else None
    if writer is not None:
        writer.add_interface(LINKTYPE_RAW, name="ipsecscope decrypted ESP inner packets")
        if opts.keep_other:
            for i in lay.ifaces:
                writer.add_interface(i.linktype)
        writer.f.flush()
    jf, own_jf = open_jsonl(jsonl_out)
    nchunks = max(len(lay.bounds), 1)
    stats.jobs = min(jobs, nchunks)
    results: list[ChunkResult] = []
    try:
        if nchunks <= 1 or jobs == 1:
            lay.bounds = lay.bounds[:1] or [(lay.start, 1)]
            w = _Worker(lay, keys, opts, (lambda d: progress(d, lay.size)) if progress else None)
            if writer is not None:
                writer.f.flush()
            results.append(w.run(lay.bounds[0][0], lay.size, lay.bounds[0][1],
                                 writer.f if writer is not None else None, jf))
            results[-1].states = {k: v for k, v in results[-1].states.items()}
            final_dec = w.dec
        else:
            if lay.size >= hotloop.BULK_MIN_BYTES:
                from . import bulk  # noqa: F401  (imported once here, not in every forked worker)
            from .parallel import run_parallel  # (only a file split over processes needs it)

            results, final_dec = run_parallel(lay, keys, opts, jobs, writer, jf, progress, stats)
        if progress:
            progress(lay.size, lay.size)
        collect(results, final_dec, stats)
        if writer is not None and dsb:
            write_dsb(writer, stats.used_keys)
    finally:
        if writer is not None:
            writer.close()
        if own_jf:
            jf.close()
        elif jf is not None:
            jf.flush()
    return stats


def chunk_count(size: int, jobs: int) -> int:
    """How many chunks to split ``size`` bytes into for ``jobs`` processes: up to
    MAX_CHUNKS_PER_JOB per process (each at least CHUNK_MIN_BYTES); whichever process is free
    takes the next one, so a process that got less CPU than the others does fewer."""
    if jobs <= 1:
        return 1
    return jobs * max(1, min(MAX_CHUNKS_PER_JOB, size // (jobs * CHUNK_MIN_BYTES)))


GZIP_FAST_MIN_BYTES = 4 << 20


def _decompress(path: str, chunks: int, mark_every: int) -> tuple[Layout | None, str | None, str | None, str | None]:
    """A big gzip'd capture is inflated to a temporary file so the fast path (and several
    processes) can read it: (layout, temporary path to delete, note about a cut-off gzip, warning
    about a ratio no capture has: checked per 4 MiB window, as the capture readers do)."""
    import gzip
    import zlib

    from ..capture._source import bomb_warning

    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b" or os.fstat(f.fileno()).st_size < GZIP_FAST_MIN_BYTES:
            return None, None, None, None
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix="ipsecscope-", suffix=".cap")
    note = warning = None
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            inflated = 0
            try:
                while block := gz.read(1 << 22):
                    out.write(block)
                    inflated += len(block)
                    if warning is None:
                        warning = bomb_warning(path, inflated, raw.tell())
            except (EOFError, zlib.error, OSError) as exc:  # cut-off or damaged: keep what inflated
                note = f"{path}: gzip stream ends early ({exc}); frames up to there were read"
        lay = scan(tmp, chunks, mark_every)
    except BaseException:
        os.unlink(tmp)
        raise
    if lay is None:
        os.unlink(tmp)
        return None, None, None, warning
    return lay, tmp, note, warning


__all__ = ["Layout", "Options", "RunStats", "run", "scan"]
