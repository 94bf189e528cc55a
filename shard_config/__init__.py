"""Consistent sharding of PI tags over pidelta workers, and the `shards plan` report."""

from shard_config.plan import PlanReport, compute_plan, format_plan
from shard_config.ring import ShardRing, owned, tag_key

__all__ = ["PlanReport", "ShardRing", "compute_plan", "format_plan", "owned", "tag_key"]
