"""The decrypt engine's chunked run over several processes (``export.engine`` decides when; see
its docstring for the per-record design this splits).

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
counted once, as in a sequential run (tests/test_decrypt_frag_split.py). The price: a
chunk that starts inside a datagram is processed twice (ESP fragmented throughout, 60k datagrams
in 2 fragments each, -j 4 with one bound inside a datagram: 1.86 -> 2.30 s CPU).
RFC 8229 TCP streams the same way, more simply: a chunk that hands any frame to the general decoder
(``ChunkResult.general``) while streams are open where it starts (``ChunkResult.tcp`` of the chunk
before, as one pass holds them) is run again with them, so a record straddling a bound, a gap
before it or a FIN after it is read as in one pass (no fallback to one process; a capture whose
bulk is RFC 8229 then costs about twice the CPU of its chunks after the first).
No chunk gives up what waits at its end; after the last one, the end of the capture is processed
once (``_Worker.tail``, seeded with the datagrams and streams one pass holds there): the records
behind a TCP gap never filled decrypted and written after every chunk's output, the gap and
the datagrams never completed counted as marks, as one process does.
"""

from __future__ import annotations

import _socket as socket  # socket.py's C module, the same inet_* functions: no socket.py enums (~3.7 ms CPU)
import mmap
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from ..capture.layout import Layout
from ..crypto.esp import EspDecryptor, SaStats
from ..errors import DecryptError
from ..outfile import create_private
from . import direct as _direct
from .hotloop import ChunkResult, Options, _Worker
from .pcapng import PcapngWriter
from .totals import RunStats

if TYPE_CHECKING:
    from ..keys.store import KeyStore

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
        res = w.run(start, end, first, out_f, jf, last=False)
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


def run_parallel(lay: Layout, keys: KeyStore, opts: Options, jobs: int, writer: PcapngWriter | None, jf: TextIO | None,
                 progress: Callable[[int, int], None] | None, stats: RunStats) -> tuple[list[ChunkResult], EspDecryptor]:
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
        r0 = w0.run(start0, lay.bounds[1][0], first0, writer.f if writer is not None else None, jf, last=False)
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
                nr = w.run(start, end, 0, of if r.part else None, None, last=False)
            nr.part, nr.jsonl_part = r.part, r.jsonl_part
            # the record it walked to (not ``start``, a byte offset inside some record): an exact
            # bound, as the reconcile step below may run the chunk again from there
            lay.bounds[i] = found[0] if found else (start, nr.first_frame)
            results[i] = nr
        # Reconcile ESN state and IP fragments across chunks (see module docstring).
        seeds: dict = {}
        ah_seeds: dict = {}  # AH's, the same way (RFC 4302 §2.5.1: AH infers ESN high bits as ESP)
        carry: list = []  # the IP datagrams one pass would hold incomplete where chunk i starts
        tcp: dict | None = None  # the RFC 8229 streams one pass would hold there (and their frames' times)
        tcp_held: dict = {}
        final = _Worker(lay, keys, opts)
        for i, r in enumerate(results):
            redo = i > 0 and (
                any(k in seeds and seeds[k][1] >= 0 for k in _text_keys(r.early_fail, r.states))
                or any(k in ah_seeds and ah_seeds[k][1] >= 0 for k in r.ah_early_fail))
            # a chunk that handed frames to the general decoder while streams were open: one pass
            # would have continued them (a record straddling the bound, a gap before it, a FIN)
            redo = redo or bool(tcp and r.general)
            after = None
            if carry or r.frag is not None:  # (chunks without fragments on either side: nothing to do)
                from ..decode.ip import carried_through

                after = carried_through(carry, r.frag)
                redo = redo or after is None
            if redo:
                w = _Worker(lay, keys, opts)
                w.seed(seeds, ah_seeds, carry, tcp, tcp_held)
                w.resolve_hint = (lambda i=i: shared.hint(i))
                start, first = lay.bounds[i]
                end = lay.bounds[i + 1][0] if i + 1 < nchunks else lay.size
                with open(r.part, "wb") if r.part else _null() as of, \
                        open(r.jsonl_part, "w") if r.jsonl_part else _null() as jof:
                    nr = w.run(start, end, first, of if r.part else None, jof if r.jsonl_part else None, last=False)
                nr.part, nr.jsonl_part = r.part, r.jsonl_part
                results[i] = r = nr
                stats.reconciled_chunks += 1
                after = r.frag.pending if r.frag is not None else []
            carry = after or []
            if r.general or redo:  # (a chunk without such frames leaves the streams as they were)
                tcp, tcp_held = r.tcp, r.tcp_held
            _carry(seeds, r.states)
            _carry(ah_seeds, r.ah_states)
        final.seed(seeds, ah_seeds, carry, tcp, tcp_held)
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
        # The end of the capture, once, after every chunk, from the state one pass holds there: the
        # records behind an RFC 8229 gap never filled decrypted, written last (as in one process)
        results.append(final.tail(writer.f if writer is not None else None, jf))
        # the stats objects came back by pickling: merge them into one decryptor's view (the tail's
        # are final's own: taken out first)
        tail_stats = dict(results[-1].stats)
        results[-1].stats = tail_stats
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
