"""A process writing the same registries (Registry.add_analysis) while a repair runs loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from mdbatch import findings as fk
from mdbatch.auditing import audit
from mdbatch.generate import generate_campaign, inject_fault
from mdbatch.repair import repair

from .conftest import NEVER_FIXED, kinds_of

WRITER = r"""
import json, sys, time
from pathlib import Path
import pandas as pd
from mdbatch.registry import Registry
sims, stop, out = [Path(s) for s in json.loads(sys.argv[1])], Path(sys.argv[2]), Path(sys.argv[3])
added, n = [], 0
while not stop.exists() or n < 3 * len(sims):
    sim = sims[n % len(sims)]
    name = f"concurrent_{n}"
    Registry(sim).add_analysis(name, pd.DataFrame({"x": list(range(n % 5 + 1))}))
    added.append([str(sim), name, n % 5 + 1, time.monotonic()])
    n += 1
out.write_text(json.dumps(added))
"""


def test_a_concurrent_writer_loses_nothing_and_the_repair_still_fixes(tmp_path: Path) -> None:
    camp = generate_campaign(tmp_path / "c", 60, seed=5, faults=True)
    faulty = {f["simulation"] for f in camp.expected_findings}
    targets = []
    for sim in camp.simulations:
        registry_path = camp.dest / sim / ".analysis" / "metadata.json"
        if sim not in faulty and registry_path.exists() and json.loads(registry_path.read_bytes())["artifacts"]:
            inject_fault(camp.dest / sim, fk.ROW_COUNT_MISMATCH)
            targets.append(camp.dest / sim)
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    audit(camp.dest, db=db, progress=False)
    stop, out = tmp_path / "stop", tmp_path / "added.json"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps([str(t) for t in targets]), str(stop), str(out)])
    time.sleep(1.0)  # the writer is running (imports done, first registries written)
    t0 = time.monotonic()
    result = repair(camp.dest, db=db, progress=False, accept_checksums=True, rebuild_corrupt=True)
    t1 = time.monotonic()
    stop.touch()
    assert writer.wait(timeout=120) == 0
    added = json.loads(out.read_text())
    during = [a for a in added if t0 <= a[3] <= t1]
    assert during, "the writer wrote while the repair ran"
    for sim, name, rows, _t in added:  # every analysis the writer added is registered, with its file
        entry = json.loads((Path(sim) / ".analysis" / "metadata.json").read_bytes())["analyses"][name]
        assert entry["row_count"] == rows and pq.read_metadata(Path(sim) / ".analysis" / f"{name}.parquet").num_rows == rows
    assert result.summary["fixed"]["row_count_mismatch"] == len(targets) + 1 and result.summary["skipped"] == []
    again = audit(camp.dest, db=db, progress=False)
    assert kinds_of(again.summary["findings"]) == NEVER_FIXED
