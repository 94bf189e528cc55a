"""The short shard drill: 8 shards of 50 tags for two minutes, two of them killed with
SIGKILL and restarted, one `pidelta maintain` beside them, a live reshard to 12; the table
then equals the ground truth exactly, and every worker not killed exited 0. The figures
(commits per table and shard, conflicts, freshness, CPU, RSS) are printed with `-s`.
"""

from __future__ import annotations

from pathlib import Path

from scripts.drill_shards import Drill, DrillConfig


def test_short_drill_loses_and_doubles_nothing(tmp_path: Path) -> None:
    config = DrillConfig(shards=8, tags_per_shard=50, minutes=2, seed=7, workdir=tmp_path)
    result = Drill(config).run()
    print("\n".join(result.report))
    assert result.unchecked_tags == 0, "\n".join(result.report)
    assert (result.lost, result.doubled, result.extra, result.changed) == (0, 0, 0, 0)
    assert result.rows > 0
    assert result.bad_exits == []
    assert result.maintain_exit == 0
    killed = [line for line in result.report if "kill -9 shard" in line]
    assert len(killed) == 2
    assert result.ok
