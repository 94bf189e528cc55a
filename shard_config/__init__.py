"""Consistent sharding of PI tags over pidelta workers, and the `shards plan` report."""

from shard_config.jump_hash import JumpHash, owned
from shard_config.plan import PlanReport, compute_plan, format_plan

__all__ = ["JumpHash", "PlanReport", "compute_plan", "format_plan", "owned"]
