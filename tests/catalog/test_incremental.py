"""Incremental audits against every backend: unchanged simulations kept with their recorded findings."""

from __future__ import annotations

import json

import pytest

from mdbatch.auditing import audit
from mdbatch.engine import ClusterOptions
from mdbatch.generate import inject_fault

pytestmark = pytest.mark.integration
LOCAL = ClusterOptions(workers=2, dashboard=False)


def test_unchanged_simulations_are_kept_on_every_backend(make_campaign, catalog_url):
    result = make_campaign(30, seed=56, faults=True)

    def run():
        res = audit(result.dest, db=catalog_url, cluster=LOCAL, progress=False)
        return res, sorted(map(tuple, res.findings().itertuples(index=False)))

    first, found_first = run()
    second, found_second = run()
    assert second.summary["cache"]["simulations_kept"] == len(result.simulations)
    assert found_second == found_first and second.summary["findings"] == first.summary["findings"]
    manifest = json.loads(result.manifest_path.read_text())
    faulty = {f["simulation"] for f in result.expected_findings}
    clean = next(m["dir"] for m in manifest["simulations"] if m["status"] == "completed" and m["dir"] not in faulty)
    fault = inject_fault(result.dest / clean, "row_count_mismatch")
    third, found_third = run()
    assert third.summary["cache"]["simulations_rescanned"] == 1
    assert third.summary["cache"]["simulations_kept"] == len(result.simulations) - 1
    assert set(found_third) - set(found_first) == {
        (clean, "row_count_mismatch", fault["item"], next(f[3] for f in found_third if f[0] == clean))
    }
    assert third.summary["changes"]["findings"]["new"] == 1
    fourth, found_fourth = run()
    assert fourth.summary["cache"]["simulations_kept"] == len(result.simulations) and found_fourth == found_third
