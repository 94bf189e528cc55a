"""The short shard drill: 8 shards of 50 tags for two minutes, two of them killed with
SIGKILL and restarted, one `pidelta maintain` beside them, a live reshard to 12, all
following stream updates while mock-pi edits, deletes and sends values late; the table then
equals PI's archive as of each tag's checkpoint (but for changes made while the reshard
moved a tag, left to `pidelta verify`), and every worker not killed exited 0. The figures
(commits per table and shard, conflicts, freshness, CPU, RSS) are printed with `-s`.
"""

from __future__ import annotations

from pathlib import Path

from scripts.drill_shards import Drill, DrillConfig


def test_short_drill_loses_and_doubles_nothing(tmp_path: Path) -> None:
    config = DrillConfig(
        shards=8, tags_per_shard=50, minutes=2, seed=7, workdir=tmp_path, edits=True
    )
    result = Drill(config).run()
    print("\n".join(result.report))
    assert result.unchecked_tags == 0, "\n".join(result.report)
    found = result.found
    assert found.doubled == 0, "\n".join(result.report)
    assert found.equal, "\n".join(result.report)
    assert result.rows > 0
    assert result.bad_exits == []
    assert result.maintain_exit == 0
    killed = [line for line in result.report if "kill -9 shard" in line]
    assert len(killed) == 2
    assert result.ok
