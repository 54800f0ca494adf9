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

Large files are split over processes (fork): worker *i* starts at the first record at or after
byte ``i * size / jobs`` (pcapng block boundaries come from a scan that also collects IDBs and
DSBs; a pcap record says nothing of where it is: without JSON lines or a filter, the worker
starts at the record ``capture.layout.guess`` finds there, numbered from 1, and this process
checks the guess against where chunk *i - 1* stopped, processing the chunk again from its true
first record if they differ; else it walks the record headers to it while the others already
work). This process does chunk 0 straight into the output; the others write part files
appended in order (O_DIRECT, export/direct.py).
ESN state per SA: every chunk infers high bits on its own (``crypto.esn`` searches 0..16 when an
SA has no history, which covers a chunk that starts after a wrap); if a chunk still had ICV
failures on an SA *before* its first success there while an earlier chunk had verified packets
of that SA, the chunk is processed again with the state the earlier chunks ended with (reconcile
step), so the output equals a sequential run (tests/test_decrypt_export.py checks both). AH SAs
(export/ah.py, ``crypto.ah.AhVerifier``) take the same step with their own states
(``ChunkResult.ah_states``/``ah_early_fail``; tests/test_decrypt_ah.py).
IP fragments the same way: an ESP/AH datagram whose fragments straddle a bound (Linux may send
the last fragment first; tiny chunks put one over several bounds) is reassembled by no chunk
alone. Each chunk reports the datagrams its reassembler still held at its end and what its own
fragments touched (``ChunkResult.frag``, a ``decode.ip.FragReport``; None for a chunk without
fragments, so those cost nothing); walking the chunks in order, ``decode.ip.carried_through``
says whether a chunk's result stands beside the datagrams in flight at its start (none of its
fragments joins one, nothing given up differently), else the chunk is processed again with its
decoder seeded with them, so a datagram is decrypted where its last fragment is and every frame
counted once, as in a sequential run (tests/test_decrypt_frag_split.py). Datagrams still
incomplete when the capture ends are left as one process leaves them: each fragment was an
"other" frame (kept as captured under --keep-other) and no datagram is reported. The price: a
chunk that starts inside a datagram is processed twice (ESP fragmented throughout, 60k datagrams
in 2 fragments each, -j 4 with one bound inside a datagram: 1.86 -> 2.30 s CPU).
"""

from __future__ import annotations

import _socket as socket  # socket.py's C module, the same inet_* functions: no socket.py enums (~3.7 ms CPU)
import mmap
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, TextIO

from ..capture.layout import Layout, scan
from ..crypto.esp import EspDecryptor, SaStats
from ..errors import CaptureError, DecryptError, ExportError
from ..keys.formats import add_secrets_block, dsb_blocks
from ..keys.formats import dump as dump_keys
from ..outfile import atomic_output, create_private, refuse_inputs, same_file
from . import direct as _direct
from . import hotloop
from . import jsonl as _jsonl
from .hotloop import _CARRIES_ESP, ChunkResult, Options, _Worker, decrypt_nested, v6_ext_headers, wire_packet
from .pcapng import LINKTYPE_RAW, SECRETS_TYPE_IPSEC, PcapngWriter

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


@dataclass
class RunStats:
    """A decrypt run's totals, per-SA counts and the keys it used."""

    frames: int = 0
    esp: int = 0
    decrypted: int = 0
    icv_failed: int = 0
    no_key: int = 0
    malformed: int = 0
    unsupported: int = 0
    other: int = 0
    dummy: int = 0  # next header 59 (RFC 4303 §2.6 dummy packets), not written
    written: int = 0
    kept: int = 0  # --keep-other: frames written unchanged (not ESP, or ESP that did not decrypt)
    unkept: int = 0  # --keep-other: frames that could not be written, on an interface no IDB declares
    jobs: int = 1
    reconciled_chunks: int = 0
    guesses_redone: int = 0  # chunks whose guessed first record was wrong (processed again)
    truncated: str | None = None
    warning: str | None = None  # about the input, one line: a gzip bomb's ratio
    nested_decrypted: int = 0  # inner ESP layers (ESP in ESP) decrypted too, and those that failed
    nested_failed: int = 0
    # AH packets (export/ah.py): ICVs verified, failed, without a key for their SA, not checked
    # (unsupported algorithm, a frame short of what the ICV covers); payloads written (all but failures)
    ah: int = 0
    ah_verified: int = 0
    ah_icv_failed: int = 0
    ah_no_key: int = 0
    ah_unverified: int = 0
    ah_written: int = 0
    per_sa: list[tuple[tuple[str, str, int], SaStats]] = field(default_factory=list)
    ah_per_sa: list = field(default_factory=list)  # [((src, dst, spi), crypto.ah.AhStats)], sorted as per_sa
    used_keys: list = field(default_factory=list)


# --- orchestration ------------------------------------------------------------------------------

_JOB: dict = {}


class _Shared:
    """Per-chunk counters in anonymous shared memory (MAP_SHARED, so forked children and this
    process see the same pages): progress in bytes, and the resolved (offset, frame index) of
    lazy chunk bounds, so the walk to a chunk's first record starts from the nearest bound
    someone already found instead of from the start of the file (each header is walked about
    once in all). Aligned 8-byte stores; a slot is only trusted when both values are non-zero
    (each is written once, from 0)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._mm = mmap.mmap(-1, 24 * max(n, 1))
        self.q = memoryview(self._mm).cast("q")

    def progress(self, i: int, done: int) -> None:
        self.q[i] = done

    def done(self) -> int:
        return sum(self.q[:self.n])

    def hint(self, i: int) -> tuple[int, int] | None:
        q, n = self.q, self.n
        for j in range(i - 1, 0, -1):
            off, idx = q[n + j], q[2 * n + j]
            if off and idx:
                return off, idx
        return None

    def publish(self, i: int, off: int, idx: int) -> None:
        self.q[self.n + i] = off
        self.q[2 * self.n + i] = idx

    def close(self) -> None:
        self.q.release()
        self._mm.close()


def _chunk_main(i: int) -> ChunkResult:
    """Chunk ``i`` of the job set up in ``_JOB``, into its part file(s) (in a forked child, or in
    this process once it has finished chunk 0)."""
    job = _JOB
    lay: Layout = job["layout"]
    bounds = lay.bounds
    start, first = bounds[i]
    end = bounds[i + 1][0] if i + 1 < len(bounds) else lay.size
    shared: _Shared = job["shared"]

    w = _Worker(lay, job["keys"], job["opts"], lambda done: shared.progress(i, done))
    w.speculate = job.get("speculate", False)
    w.resolve_hint = lambda: shared.hint(i)
    w.resolved = lambda off, idx: shared.publish(i, off, idx)
    part = jpart = None
    out_f = jf = None
    if job["opts"].pcapng:
        part = f"{job['tmp']}/part{i:04d}"
        out_f = create_private(part, "wb", buffering=1 << 20)  # cleartext: 0600 like the output
    if job["opts"].jsonl:
        jpart = f"{job['tmp']}/part{i:04d}.jsonl"
        jf = create_private(jpart, "w", buffering=1 << 20, encoding="utf-8")
    try:
        res = w.run(start, end, first, out_f, jf)
    finally:
        if out_f is not None:
            out_f.close()
        if jf is not None:
            jf.close()
    shared.progress(i, end - start)
    res.part, res.jsonl_part = part, jpart
    return res


def _take(queue_fd: int) -> int | None:
    """The next chunk number from the work queue (a pipe pre-filled with 2-byte numbers; reads
    of at most PIPE_BUF bytes are atomic, so every chunk goes to exactly one process)."""
    b = os.read(queue_fd, 2)
    return int.from_bytes(b, "little") if len(b) == 2 else None


def _child(queue_fd: int, result_fd: int) -> None:
    """Forked worker: take chunks until the queue is empty, send [(chunk, ChunkResult)] (or the
    exception) back pickled, and leave without running the parent's cleanup (os._exit)."""
    import pickle

    code = 1
    try:
        try:
            done = []
            while (i := _take(queue_fd)) is not None:
                done.append((i, _chunk_main(i)))
            payload = pickle.dumps(("ok", done), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
            try:
                payload = pickle.dumps(("error", exc))
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                payload = pickle.dumps(("error", DecryptError(f"worker process failed: {exc!r}")))
        with os.fdopen(result_fd, "wb") as f:
            f.write(payload)
        code = 0
    finally:
        os._exit(code)


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
    if lay is None:
        return _run_general(path, keys, out, jsonl_out, opts, progress, dsb, stats)
    stats.truncated = lay.truncated or gz_note
    writer = PcapngWriter(out) if out is not None else None
    if writer is not None:
        writer.add_interface(LINKTYPE_RAW, name="ipsecscope decrypted ESP inner packets")
        if opts.keep_other:
            for i in lay.ifaces:
                writer.add_interface(i.linktype)
        writer.f.flush()
    jf, own_jf = _open_jsonl(jsonl_out)
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
            results, final_dec = _run_parallel(lay, keys, opts, jobs, writer, jf, progress, stats)
        if progress:
            progress(lay.size, lay.size)
        _collect(results, final_dec, stats)
        if writer is not None and dsb:
            _write_dsb(writer, stats.used_keys)
    finally:
        if writer is not None:
            writer.close()
        if own_jf:
            jf.close()
        elif jf is not None:
            jf.flush()
    return stats


def _open_jsonl(jsonl_out):
    if jsonl_out is None:
        return None, False
    if hasattr(jsonl_out, "write"):
        return jsonl_out, False
    return open(jsonl_out, "w", buffering=1 << 20), True


def chunk_count(size: int, jobs: int) -> int:
    """How many chunks to split ``size`` bytes into for ``jobs`` processes: up to
    MAX_CHUNKS_PER_JOB per process (each at least CHUNK_MIN_BYTES); whichever process is free
    takes the next one, so a process that got less CPU than the others does fewer."""
    if jobs <= 1:
        return 1
    return jobs * max(1, min(MAX_CHUNKS_PER_JOB, size // (jobs * CHUNK_MIN_BYTES)))


def _run_parallel(lay: Layout, keys, opts: Options, jobs: int, writer, jf, progress, stats: RunStats):
    """Chunk 0 in this process straight into the output; chunks 1.. taken from a shared queue by
    ``jobs - 1`` forked children and by this process once chunk 0 is done, each into part files;
    then the ESN reconcile and the parts appended in order.

    Plain os.fork and pipes rather than multiprocessing: importing and starting a Pool costs more
    than this whole scheme (start-up counts: a 200k-packet capture takes ~0.3 s)."""
    import pickle
    import select
    import shutil

    nchunks = len(lay.bounds)
    nproc = min(jobs, nchunks)
    import tempfile

    tmp = tempfile.mkdtemp(prefix="ipsecscope-decrypt-", dir=_tmp_dir(writer))
    shared = _Shared(nchunks)
    _JOB.clear()
    # A chunk's first record is guessed rather than walked to (capture.layout.guess), and checked
    # below, where frame numbers matter only for counts and messages: no JSON lines, no filter.
    _JOB.update(layout=lay, keys=keys, opts=opts, tmp=tmp, shared=shared,
                speculate=not opts.jsonl and opts.frames is None)
    children: dict[int, int] = {}  # pid -> result pipe
    qr = qw = -1
    try:
        qr, qw = os.pipe()
        os.write(qw, b"".join(i.to_bytes(2, "little") for i in range(1, nchunks)))  # < 64 KiB
        os.close(qw)
        qw = -1
        if writer is not None:
            writer.f.flush()  # nothing buffered may be inherited (and written twice)
        if jf is not None:
            jf.flush()
        for _ in range(nproc - 1):
            rr, rw = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child leaves through os._exit
                os.close(rr)
                _child(qr, rw)
            os.close(rw)
            children[pid] = rr

        def progress0(done: int) -> None:
            shared.progress(0, done)
            if progress:
                progress(shared.done(), lay.size)

        w0 = _Worker(lay, keys, opts, progress0)
        start0, first0 = lay.bounds[0]
        r0 = w0.run(start0, lay.bounds[1][0], first0, writer.f if writer is not None else None, jf)
        shared.progress(0, lay.bounds[1][0] - start0)
        results: list[ChunkResult | None] = [r0] + [None] * (nchunks - 1)
        while (i := _take(qr)) is not None:  # then help with the rest
            results[i] = _chunk_main(i)
            if progress:
                progress(shared.done(), lay.size)
        # the children's results (read before waiting for them: a result can exceed the pipe buffer)
        bufs = {fd: bytearray() for fd in children.values()}
        pending = set(bufs)
        while pending:
            ready, _, _ = select.select(list(pending), [], [], 0.1)
            for fd in ready:
                data = os.read(fd, 1 << 20)
                if data:
                    bufs[fd] += data
                else:
                    pending.discard(fd)
            if progress:
                progress(shared.done(), lay.size)
        failure = None
        for pid, fd in list(children.items()):
            _, status = os.waitpid(pid, 0)
            del children[pid]
            os.close(fd)
            if not bufs[fd]:
                failure = failure or DecryptError(f"a worker process died (wait status {status}); try --jobs 1")
                continue
            kind, val = pickle.loads(bufs[fd])
            if kind == "error":
                failure = failure or val
            else:
                for i, r in val:
                    results[i] = r
        if failure is not None:
            raise failure
        if any(r is None for r in results):  # pragma: no cover - every chunk is taken exactly once
            raise DecryptError("a chunk of the capture was not processed; try --jobs 1")
        # Guessed chunk starts: right when the chunk before stopped there, else done again.
        for i in range(1, nchunks):
            r, prev = results[i], results[i - 1]
            if r.guessed < 0:
                continue
            if prev.end_off == r.guessed:
                first = prev.first_frame + prev.frames
                lay.bounds[i] = (r.guessed, first)
                if r.truncated:  # numbered from 1 until now
                    r.truncated = re.sub(r"\(frame (\d+)\)", lambda m, d=first - 1: f"(frame {int(m[1]) + d})", r.truncated)
                r.first_frame = first
                continue
            stats.guesses_redone += 1  # bytes that look like records: walk to the chunk's start
            w = _Worker(lay, keys, opts)
            w.resolve_hint = (lambda i=i: shared.hint(i))
            found: list = []
            w.resolved = lambda off, idx, found=found: found.append((off, idx))
            start, end = lay.bounds[i][0], lay.bounds[i + 1][0] if i + 1 < nchunks else lay.size
            with open(r.part, "wb") if r.part else _null() as of:
                nr = w.run(start, end, 0, of if r.part else None, None)
            nr.part, nr.jsonl_part = r.part, r.jsonl_part
            # the record it walked to (not ``start``, a byte offset inside some record): an exact
            # bound, as the reconcile step below may run the chunk again from there
            lay.bounds[i] = found[0] if found else (start, nr.first_frame)
            results[i] = nr
        # Reconcile ESN state and IP fragments across chunks (see module docstring).
        seeds: dict = {}
        ah_seeds: dict = {}  # AH's, the same way (RFC 4302 §2.5.1: AH infers ESN high bits as ESP)
        carry: list = []  # the IP datagrams one pass would hold incomplete where chunk i starts
        final = _Worker(lay, keys, opts)
        for i, r in enumerate(results):
            redo = i > 0 and (
                any(k in seeds and seeds[k][1] >= 0 for k in _text_keys(r.early_fail, r.states))
                or any(k in ah_seeds and ah_seeds[k][1] >= 0 for k in r.ah_early_fail))
            after = None
            if carry or r.frag is not None:  # (chunks without fragments on either side: nothing to do)
                from ..decode.ip import carried_through

                after = carried_through(carry, r.frag)
                redo = redo or after is None
            if redo:
                w = _Worker(lay, keys, opts)
                w.seed(seeds, ah_seeds, carry)
                w.resolve_hint = (lambda i=i: shared.hint(i))
                start, first = lay.bounds[i]
                end = lay.bounds[i + 1][0] if i + 1 < nchunks else lay.size
                with open(r.part, "wb") if r.part else _null() as of, \
                        open(r.jsonl_part, "w") if r.jsonl_part else _null() as jof:
                    nr = w.run(start, end, first, of if r.part else None, jof if r.jsonl_part else None)
                nr.part, nr.jsonl_part = r.part, r.jsonl_part
                results[i] = r = nr
                stats.reconciled_chunks += 1
                after = r.frag.pending if r.frag is not None else []
            carry = after or []
            _carry(seeds, r.states)
            _carry(ah_seeds, r.ah_states)
        final.seed(seeds)
        # the parts are written around the page cache (export/direct.py): appended the same way
        parts = [r.part for r in results if writer is not None and r.part]
        direct = _direct.open_direct(writer.f) if parts and sum(
            os.path.getsize(p) for p in parts) >= _direct.MIN_BYTES else None
        try:
            for part in parts:
                if direct is not None:
                    direct.append_file(part)
                else:
                    writer.f.flush()
                    _append_file(part, writer.f)
            if direct is not None:
                direct.finish()
        finally:
            if direct is not None:
                direct.close()
        for r in results:
            if jf is not None and r.jsonl_part:
                with open(r.jsonl_part) as pf:
                    shutil.copyfileobj(pf, jf, 1 << 22)
        # the stats objects came back by pickling: merge them into one decryptor's view
        final.dec.stats.clear()
        for r in results:
            for k, s in r.stats.items():
                t = final.dec.stats.setdefault(k, SaStats(keys_source=s.keys_source))
                t.decrypted += s.decrypted
                t.icv_failed += s.icv_failed
                t.no_key += s.no_key
                t.malformed += s.malformed
                t.unsupported += s.unsupported
                t.esn = s.esn if s.esn is not None else t.esn
                if s.top is not None and (t.top is None or s.top > t.top):
                    t.top, t.seq_hi = s.top, s.seq_hi
                t.last_reason = s.last_reason or t.last_reason
        return results, final.dec
    finally:
        for pid, fd in children.items():  # only after an error (Ctrl-C, a failed chunk here)
            try:
                os.kill(pid, 15)
                os.waitpid(pid, 0)
            except OSError:
                pass
            os.close(fd)
        for fd in (qr, qw):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
        _JOB.clear()
        shared.close()


def _append_file(part: str, f) -> None:
    """Append a worker's part to the output: in the kernel (sendfile) when the output is a
    regular file, else through Python."""
    import shutil

    f.flush()
    with open(part, "rb") as pf:
        done = 0
        try:
            out_fd = f.fileno()
            size = os.fstat(pf.fileno()).st_size
            while done < size:
                n = os.sendfile(out_fd, pf.fileno(), done, size - done)
                if n <= 0:
                    raise OSError("sendfile made no progress")
                done += n
        except (OSError, AttributeError, ValueError):
            pf.seek(done)
            shutil.copyfileobj(pf, f, 1 << 22)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _carry(seeds: dict, states: dict) -> None:
    """Fold one chunk's end-of-chunk ESN states (mode, top, searches) per SA into ``seeds``."""
    for k, (mode, top, searches) in states.items():
        old = seeds.get(k)
        if old is None:
            seeds[k] = (mode, top, searches)
        else:
            seeds[k] = (old[0] if mode is None else mode, max(old[1], top), old[2] + searches)


def _text_keys(keys: set, states: dict) -> list:
    out = []
    for k in keys:
        src, dst, spi = k
        if isinstance(src, bytes):
            af = socket.AF_INET if len(src) == 4 else socket.AF_INET6
            out.append((socket.inet_ntop(af, src), socket.inet_ntop(af, dst), spi))
        else:
            out.append(k)
    return out


def _tmp_dir(writer) -> str | None:
    """Part files go next to the output (same filesystem, no copy across devices), unless the
    output is not a regular file (/dev/null, a pipe)."""
    try:
        name = os.path.abspath(writer.f.name)
        if os.path.isfile(name):
            return os.path.dirname(name)
    except (AttributeError, TypeError, OSError):
        pass
    return None


def _collect(results: list[ChunkResult], dec: EspDecryptor, stats: RunStats, nested: set | None = None,
             ah=None) -> None:
    nested = set(nested or ())
    if ah is not None or any(r.ah is not None for r in results):
        from .ah import AhTotals

        totals = AhTotals()
        for t in [ah, *(r.ah for r in results)]:
            if t is not None:
                totals.merge(t)
        stats.ah, stats.ah_written = totals.packets, totals.written
        stats.ah_verified, stats.ah_icv_failed = totals.count("ok"), totals.count("icv_failed")
        stats.ah_no_key = totals.count("no_key")
        stats.ah_unverified = totals.count("unsupported") + totals.count("unverifiable")
        stats.ah_per_sa = sorted(totals.per_sa.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))
    for r in results:
        stats.truncated = stats.truncated or r.truncated
        stats.frames += r.frames
        stats.esp += r.esp
        stats.other += r.other
        stats.dummy += r.dummy
        stats.kept += r.kept
        stats.unkept += r.unkept
        nested |= r.nested_sas
    used = []
    for k, s in dec.summary():
        if s.decrypted:
            st = dec.state(*k)
            if st.keys is not None and st.keys not in used:
                used.append(st.keys)
        if k in nested:  # inner layers of ESP-in-ESP: not frames of the capture, counted apart
            stats.nested_decrypted += s.decrypted
            stats.nested_failed += s.icv_failed + s.malformed + s.unsupported
            continue
        stats.decrypted += s.decrypted
        stats.icv_failed += s.icv_failed
        stats.no_key += s.no_key
        stats.malformed += s.malformed
        stats.unsupported += s.unsupported
    stats.per_sa = dec.summary()
    stats.used_keys = used
    stats.written = stats.decrypted - stats.dummy + stats.ah_written


def _write_dsb(writer: PcapngWriter, used) -> None:
    from ..keys import KeyStore

    store = KeyStore()
    for k in used:
        store.add_esp(k)
    # Wireshark's own ESP SA secrets type where it has names for the algorithms (Wireshark 4.6+
    # decrypts with it, no esp_sa file needed), ipsecscope's JSON block for the rest.
    for stype, data in dsb_blocks(store):
        writer.write_secrets(data, secrets_type=stype, comment=(
            "ipsecscope: keys of the SAs decrypted into this file (Wireshark ESP SA secrets, 10-column esp_sa "
            "CSV)" if stype != SECRETS_TYPE_IPSEC else
            "ipsecscope: keys of the SAs decrypted into this file that no Wireshark secrets type carries "
            "(private type 0x4950534b, native JSON). As Wireshark esp_sa rows:\n" + str(dump_keys(store, "esp_sa", True))))


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


def _run_general(path, keys, out, jsonl_out, opts: Options, progress, dsb: bool, stats: RunStats) -> RunStats:
    """gzip'd or unusual files: the general capture reader and decoder, one process."""
    from ..capture import open_capture
    from ..decode.demux import Decoder
    from ..decode.link import ip_offset
    from ..model.packets import AhPacket, EspPacket

    dec = EspDecryptor(keys)
    decoder = Decoder()
    nested: set = set()
    ah = None  # export.ah.AhOut, made at the first AH packet
    # Not a capture: fail before creating (and truncating) the output files. Opened once, as
    # standard input can be read only once.
    opened = open_capture(path)
    try:
        writer = PcapngWriter(out) if out is not None else None
        jf, own_jf = _open_jsonl(jsonl_out)
    except BaseException:
        opened.close()
        raise
    iface_map: dict[int, int] = {}
    if writer is not None:
        writer.add_interface(LINKTYPE_RAW, name="ipsecscope decrypted ESP inner packets")
    try:
        with opened as reader:
            seen = 0
            for n, raw in enumerate(reader, 1):
                if len(reader.secrets) != seen:  # keys shipped inside the capture (pcapng DSB)
                    for stype, sdata in reader.secrets[seen:]:
                        add_secrets_block(keys, stype, sdata)
                    seen = len(reader.secrets)
                stats.frames += 1
                pkt = decoder.decode(raw)
                # linktype < 0: an interface no IDB declared (damaged file) cannot be written out
                keep = opts.keep_other and writer is not None
                if keep and raw.linktype < 0:
                    keep = False
                    stats.unkept += 1
                if type(pkt) is AhPacket and opts.ah:  # export/ah.py: its record and payload; ESP it protects goes on
                    ah, pkt = _general_ah(ah, pkt, raw, keys, dec, nested, writer, jf, opts, keep, iface_map, stats)
                    if pkt is None:
                        continue
                if type(pkt) is not EspPacket:
                    stats.other += 1
                    if keep:
                        stats.kept += 1
                        i = iface_map.get(raw.iface)
                        if i is None:
                            i = iface_map[raw.iface] = writer.add_interface(raw.linktype)
                        writer.write_packet(i, raw.ts_ns, raw.data, raw.orig_len)
                    continue
                stats.esp += 1
                st = dec.state(pkt.src, pkt.dst, pkt.spi)
                r = dec.decrypt(pkt)
                src = socket.inet_pton(socket.AF_INET6 if ":" in pkt.src else socket.AF_INET, pkt.src)
                dst = socket.inet_pton(socket.AF_INET6 if ":" in pkt.dst else socket.AF_INET, pkt.dst)
                if r.status != "ok":
                    if keep:
                        stats.kept += 1
                        i = iface_map.get(raw.iface)
                        if i is None:
                            i = iface_map[raw.iface] = writer.add_interface(raw.linktype)
                        writer.write_packet(i, raw.ts_ns, raw.data, raw.orig_len,
                                            comment=f"ipsecscope: {r.status}: {r.reason}")
                    if jf is not None:
                        jf.write(_jsonl.record(raw.index, raw.ts_ns, st, src, dst, pkt.spi, pkt.seq, r.seq_hi,
                                               r.status, None, None, len(pkt.data), opts.hex, reason=r.reason,
                                               udp_encap=pkt.udp_encap))
                    continue
                inner, nh, isrc, idst, layers = r.inner, r.next_header, src, dst, None
                if nh in _CARRIES_ESP:  # ESP in ESP: the layers there are keys for (as _Worker._frame)
                    inner, nh, isrc, idst, layers = decrypt_nested(dec, nested, inner, nh, src, dst)
                # A dummy packet (RFC 4303 §2.6) has no inner packet to write, but the JSONL holds one
                # record per ESP packet.
                dummy = nh == 59
                stats.dummy += dummy
                if writer is not None and not dummy:
                    ext = ()  # IPv6 extension headers before ESP, kept in a transport-mode packet
                    if len(src) == 16 and not pkt.udp_encap and (isrc, idst) == (src, dst):
                        ver, l3 = ip_offset(raw.linktype, raw.data)
                        if ver == 6 and raw.data[l3 + 8:l3 + 40] == src + dst:
                            ext = v6_ext_headers(raw.data, l3)
                    data = wire_packet(isrc, idst, nh, inner, ext)
                    writer.write_packet(0, raw.ts_ns, data)
                if jf is not None:
                    jf.write(_jsonl.record(raw.index, raw.ts_ns, st, src, dst, pkt.spi, pkt.seq, r.seq_hi, "ok",
                                           nh, inner, len(pkt.data), opts.hex, udp_encap=pkt.udp_encap,
                                           nested=layers, inner_src=isrc, inner_dst=idst))
                if progress is not None and n % 4096 == 0:
                    progress(reader.bytes_read, reader.total_bytes)
            stats.truncated = reader.truncated
            stats.warning = reader.warning
        _collect([], dec, stats, nested, ah.totals if ah is not None else None)
        if writer is not None and dsb:
            _write_dsb(writer, stats.used_keys)
    finally:
        if writer is not None:
            writer.close()
        if own_jf:
            jf.close()
    return stats


def _general_ah(ah, pkt, raw, keys, dec, nested, writer, jf, opts: Options, keep: bool, iface_map: dict,
                stats: RunStats):
    """An AH packet on the general path, as ``_Worker._ah`` on the fast one: (the AhOut, the ESP
    packet AH protects for the ESP path, or None when the frame is done)."""
    from ..model.packets import EspPacket
    from .ah import AhOut

    if ah is None:
        ah = AhOut(keys, wire_packet, decrypt_nested, v6_ext_headers)
    got = ah.handle(pkt, raw.data, raw.linktype, raw.ts_ns, dec, nested, jf is not None, opts.hex)
    if got.record is not None:
        jf.write(got.record)
    if writer is not None and got.packet is not None:
        writer.write_packet(0, raw.ts_ns, got.packet, comment=got.comment or None)
    elif keep and got.status == "icv_failed":
        stats.kept += 1
        i = iface_map.get(raw.iface)
        if i is None:
            i = iface_map[raw.iface] = writer.add_interface(raw.linktype)
        writer.write_packet(i, raw.ts_ns, raw.data, raw.orig_len, comment=got.comment)
    if got.esp is None or len(got.esp) < 8:
        return ah, None
    spi, seq = int.from_bytes(got.esp[:4], "big"), int.from_bytes(got.esp[4:8], "big")
    return ah, EspPacket(pkt.frame, pkt.ts, pkt.src, pkt.dst, spi, seq, got.esp, ip_version=pkt.ip_version,
                         ip_fragmented=pkt.ip_fragmented)


__all__ = ["Layout", "Options", "RunStats", "run", "scan"]
