"""Request migration: a request whose worker died carries on elsewhere (Dynamo's `Migration` operator).

In the reference (Dynamo's frontend, `--migration-limit N`, default 0 = off) the Migrator sits
between the frontend's preprocessing and the backends: it accumulates every token a worker streams
back, and when the stream breaks because the worker went away it re-sends the request to another
worker as prompt + tokens generated so far, with the remaining token budget, at most `N` times.
The reference's offline replay (`dynamo.replay`) has neither faults nor migration.

Here the `Migrator` sits in the control shard between the response stream and the frontend. A
completion message that says the request failed because its worker is gone (`worker_killed`,
`worker_removed`, or a drain that ran past its deadline) is migrated when the request has moved
fewer than `migration_limit` times (the limit of the deployment of the worker it failed on):
- the worker leaves routing at once (its down notice may still be on the way);
- the client keeps what it already saw (first and second token times); the failed rank's
  engine record, which counts every token generated so far, becomes the request's record;
- the router routes it again at the end of the instant (`migrated_from` grows by the worker); the
  new rank prefills prompt
  + generated tokens, reusing whatever prefix it has cached, and generates the rest.
Past the limit (a limit above 0) it fails with `migration_limit`, its cause still the fault; with a
limit of 0 it fails as before, with the reason the rank gave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from actors.engine.records import FailureReason, RequestRecord, TerminalStatus
from cluster.control.frontend import Frontend
from cluster.control.router_host import RouterHost
from cluster.plane.messages import CompletionMsg
from cluster.sim.clock import Priority

MIGRATABLE = frozenset({FailureReason.WORKER_KILLED, FailureReason.WORKER_REMOVED, FailureReason.DRAIN_DEADLINE})
"""Failures that mean the worker went away (the stream broke), not that the request cannot run."""
_MIGRATE_KEY = 1 << 40
"""Loop keys of re-routes (ARRIVE priority) sort after the frontend's arrivals of an instant."""


class Migrator:
    """See the module docstring. `limit_of(worker_id)`: the migration limit of that worker's deployment."""

    def __init__(self, frontend: Frontend, router: RouterHost, limit_of: Callable[[int], int]) -> None:
        self.frontend = frontend
        self.router = router
        self._limit_of = limit_of
        self.migrations = 0
        """Re-routes so far (a request that moved twice counts twice)."""

    def takes(self, msg: CompletionMsg) -> bool:
        """Whether this completion is a worker loss the migrator handles (else the frontend does)."""
        return msg.status is TerminalStatus.FAILED and msg.reason in MIGRATABLE

    def on_failure(self, now: float, msg: CompletionMsg) -> None:
        rec = self.frontend.records[msg.request_id]
        limit = self._limit_of(msg.worker_id)
        moved = len(rec.migrated_from)
        if moved >= limit:
            if limit > 0:
                msg = replace(msg, reason=FailureReason.MIGRATION_LIMIT,
                              detail=f"migrated {moved} times (migration_limit {limit}), then: {msg.detail}")
            self.frontend.on_completion(now, msg)
            return
        self.router.stop_routing(msg.worker_id)  # its down notice may still be on the way
        self.frontend.keep_progress(rec, msg.record)
        rec.migrated_from.append(msg.worker_id)
        self.migrations += 1
        # Routed again after every message of the instant (ARRIVE priority): the down notices of
        # workers that died with this one are in by then, so it does not land on one of them.
        self.frontend.loop.schedule(now, Priority.ARRIVE, _MIGRATE_KEY + rec.request_id, self._reroute, rec)

    def _reroute(self, now: float, rec: RequestRecord) -> None:
        self.router.route(now, rec, self.frontend.hash_ids_of(rec.request_id))
