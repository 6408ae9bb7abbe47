"""KV-aware routing: prefix index fed by KV events, router-side load prediction, policies.

Public API: `KvRouter`, `KvRouterConfig`, `RouteDecision`, `RouterStats`, `PrefixIndex`,
`OverlapScores`, `parse_router_mode`.
"""

from router.config import KvRouterConfig, parse_router_mode
from router.decisions import RouteDecision, RouterStats
from router.index import OverlapScores, PrefixIndex
from router.router import KvRouter

__all__ = [
    "KvRouter",
    "KvRouterConfig",
    "OverlapScores",
    "PrefixIndex",
    "RouteDecision",
    "RouterStats",
    "parse_router_mode",
]
