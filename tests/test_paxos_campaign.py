"""Issue 6's campaign, in CI: ``quorumkit sim paxos --nodes 5 --seeds 1..200 --nemesis
partition,crash,loss`` passes, through the command line a user would type."""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_200_seed_paxos_campaign_with_partitions_crashes_and_loss_passes() -> None:
    cmd = [
        sys.executable, "-m", "quorumkit", "sim", "paxos", "--nodes", "5", "--seeds", "1..200",
        "--nemesis", "partition,crash,loss", "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, summary
    assert summary == {
        "failed_seed": None,
        "ok": True,
        "passed": 200,
        "protocol": "paxos",
        "seeds": [1, 200],
    }
