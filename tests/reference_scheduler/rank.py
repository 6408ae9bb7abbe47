"""A naive single vLLM rank, pass by pass (facts section c), on the naive pool and timing.

A request's prompt is given as one identity per block (`block_ids`, the trace's hash ids with
trace block size == block size). Full block i of a request is identified by its prompt
prefix `("p", ids[:i+1])` while it holds only prompt tokens, else by `("g", request, i)`
(generated tokens differ between requests).

Time: arrivals are delivered when they come; a pass formed at `t` ends at `t + duration`;
at a pass end tokens are emitted first, then arrivals at that same instant are delivered,
then the next pass is formed. A pass that schedules nothing is no pass (the rank idles
until the next arrival); one whose every running request was preempted is formed again at
once (admission, skipped in a pass with preemption, then gets its turn).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Hashable

from tests.reference_scheduler.pool import Pool
from tests.reference_scheduler.timing import decode_ms, prefill_ms


@dataclass
class Config:
    block_size: int
    num_gpu_blocks: int
    max_num_seqs: int
    max_num_batched_tokens: int
    chunked: bool = True
    caching: bool = True
    lifo: bool = True


@dataclass
class Record:
    status: str = "incomplete"
    first_token_ms: float | None = None
    second_token_ms: float | None = None
    last_token_ms: float | None = None
    end_ms: float | None = None
    reused_input_tokens: int = 0
    num_preemptions: int = 0
    output_length: int = 0
    token_ms: list[float] = field(default_factory=list)


@dataclass(eq=False)
class Req:
    rid: int
    prompt_len: int
    max_output: int
    block_ids: tuple[int, ...]
    rec: Record = field(default_factory=Record)
    generated: int = 0
    computed: int = 0
    decoding: bool = False
    """Its prompt (and generated tokens so far) were computed before the current pass."""
    held: list[int] = field(default_factory=list)
    """Cached copies of its full blocks 0..len(held)-1."""
    private: int = 0
    admitted_once: bool = False

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.generated


class NaiveRank:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.pool = Pool(cfg.num_gpu_blocks)
        self.waiting: deque[Req] = deque()
        self.running: list[Req] = []

    # ----------------------------------------------------------------------------- blocks
    def ident(self, req: Req, i: int) -> Hashable:
        bs = self.cfg.block_size
        if (i + 1) * bs <= req.prompt_len:
            return ("p", req.block_ids[: i + 1])
        return ("g", req.rid, i)

    def allocate(self, req: Req, boundary: int) -> bool:
        """Hold blocks for tokens [0, boundary): full ones as (new) cached copies."""
        bs, pool = self.cfg.block_size, self.pool
        need = -(-boundary // bs)
        extra = need - (len(req.held) + req.private)
        if extra > 0 and not pool.make_room(extra):
            return False
        if not self.cfg.caching:
            if extra > 0:
                req.private += extra
                pool.private += extra
            return True
        full = boundary // bs
        if full > len(req.held):
            if req.private:  # the partial tail filled up
                req.private -= 1
                pool.private -= 1
            for i in range(len(req.held), full):
                req.held.append(pool.new_copy(self.ident(req, i)))
        if need > full and req.private == 0:
            req.private = 1
            pool.private += 1
        return True

    def release(self, req: Req) -> None:
        self.pool.private -= req.private
        req.private = 0
        for cid in reversed(req.held):  # tail first: suffixes reach the LRU before prefixes
            self.pool.release(cid)
        req.held = []

    def prefix(self, req: Req, limit: int) -> tuple[int, int]:
        """(leading full blocks cached, how many of them have an active copy), at most `limit`."""
        if not self.cfg.caching:
            return 0, 0
        n = active = 0
        while n < limit:
            ids = self.pool.copies_of(self.ident(req, n))
            if not ids:
                break
            active += any(self.pool.copies[c].refs > 0 for c in ids)
            n += 1
        return n, active

    # ----------------------------------------------------------------------------- a pass
    def preempt(self, victim: Req) -> None:
        self.release(victim)
        victim.computed = 0
        victim.decoding = False
        victim.rec.num_preemptions += 1
        self.running.remove(victim)
        self.waiting.appendleft(victim)

    def schedule(self, now: float) -> tuple[list[tuple[Req, int, int]], bool]:
        cfg = self.cfg
        budget = cfg.max_num_batched_tokens
        out: list[tuple[Req, int, int]] = []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            want = req.seq_len - req.computed
            n = min(want, budget)
            if n < want and not req.decoding and not cfg.chunked:
                break
            skip = False
            while not self.allocate(req, req.computed + n):
                victim = self.running[-1] if cfg.lifo else self.running[0]
                if self.running.index(victim) < i:
                    i -= 1
                for k, entry in enumerate(out):
                    if entry[0] is victim:
                        budget += entry[1]
                        del out[k]
                        break
                self.preempt(victim)
                preempted = True
                if victim is req:
                    skip = True
                    break
            if skip:
                continue
            out.append((req, n, req.computed))
            req.computed += n
            budget -= n
            i += 1
        if not preempted:
            self.admit(now, budget, out)
        return out, preempted and not out

    def admit(self, now: float, budget: int, out: list[tuple[Req, int, int]]) -> None:
        cfg, bs = self.cfg, self.cfg.block_size
        while self.waiting and len(self.running) < cfg.max_num_seqs and budget > 0:
            req = self.waiting[0]
            total = -(-req.seq_len // bs)
            if total > cfg.num_gpu_blocks:
                self.waiting.popleft()
                req.rec.status, req.rec.end_ms = "rejected", now
                continue
            hit, active = self.prefix(req, (req.seq_len - 1) // bs)  # at least one token recomputed
            if total - active > cfg.num_gpu_blocks - self.pool.active():
                break
            cached = hit * bs
            n = min(req.seq_len - cached, budget)
            if n < req.seq_len - cached and not cfg.chunked:
                break
            req.held = [self.pool.take(self.ident(req, k)) for k in range(hit)]
            req.computed = cached
            if not self.allocate(req, cached + n):
                self.release(req)
                req.computed = 0
                break
            self.waiting.popleft()
            self.running.append(req)
            if not req.admitted_once:
                req.admitted_once = True
                req.rec.reused_input_tokens = cached
            out.append((req, n, cached))
            req.computed += n
            budget -= n

    def duration(self, scheduled: list[tuple[Req, int, int]]) -> float:
        isl = [before + n for req, n, before in scheduled if not req.decoding]
        prefix = [before for req, n, before in scheduled if not req.decoding]
        decoders = [req for req, _, _ in scheduled if req.decoding]
        d = prefill_ms(isl, prefix)
        if decoders:
            d += decode_ms(sum(r.seq_len for r in decoders), self.cfg.num_gpu_blocks * self.cfg.block_size)
        return d

    def end_pass(self, scheduled: list[tuple[Req, int, int]], now: float) -> None:
        done = []
        for req, _, _ in scheduled:
            if req.computed != req.seq_len:
                continue
            req.generated += 1
            rec = req.rec
            rec.output_length = req.generated
            rec.token_ms.append(now)
            if req.generated == 1:
                rec.first_token_ms = now
            elif req.generated == 2:
                rec.second_token_ms = now
            rec.last_token_ms = now
            req.decoding = True
            if req.generated >= req.max_output:
                done.append(req)
        for req in done:
            self.release(req)
            self.running.remove(req)
            req.rec.status, req.rec.end_ms = "completed", now

    # -------------------------------------------------------------------------- the run
    def submit(self, req: Req, now: float) -> None:
        cfg = self.cfg
        if -(-req.prompt_len // cfg.block_size) > cfg.num_gpu_blocks or (
                not cfg.chunked and req.prompt_len > cfg.max_num_batched_tokens):
            req.rec.status, req.rec.end_ms = "rejected", now
        else:
            self.waiting.append(req)

    def run(self, arrivals: list[tuple[float, Req]]) -> dict[int, Record]:
        """Play `arrivals` ((time, request), any order) to the end; records by request id."""
        todo = deque(sorted(arrivals, key=lambda a: (a[0], a[1].rid)))
        records = {req.rid: req.rec for _, req in todo}
        busy_until: float | None = None
        current: list[tuple[Req, int, int]] = []
        while todo or self.running or self.waiting or busy_until is not None:
            t_next = todo[0][0] if todo else None
            if busy_until is not None and (t_next is None or busy_until <= t_next):
                now = busy_until
                self.end_pass(current, now)
                busy_until, current = None, []
            elif t_next is not None:
                now = t_next
                while todo and todo[0][0] == t_next:
                    self.submit(todo.popleft()[1], now)
            else:
                break  # nothing runs, nothing arrives: stuck requests stay incomplete
            if busy_until is None:
                for _ in range(2):
                    scheduled, again = self.schedule(now)
                    if scheduled:
                        current, busy_until = scheduled, now + self.duration(scheduled)
                        break
                    if not again:
                        break
        return records
