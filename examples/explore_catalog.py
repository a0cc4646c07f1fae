"""Exploring a campaign from Python: audit it, query the catalog, write the HTML report.

A notebook-style script: each `# %%` cell can be pasted into a Jupyter notebook (or run as is
in VS Code / Spyder / PyCharm). Run it whole with

    python examples/explore_catalog.py [WORKDIR] [--sims N]

It generates a small synthetic campaign with one fault of each kind in WORKDIR (default: a temporary
directory), audits it twice (with a change in between), and looks at the result.
"""

# %% Setup: a synthetic campaign to look at (use your own root and catalog instead)
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mdbatch
from mdbatch.generate import generate_campaign, inject_fault

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("workdir", nargs="?", help="where to put the campaign, catalog and report (default: a temporary directory)")
parser.add_argument("--sims", type=int, default=60, help="simulations to generate (default 60)")
args = parser.parse_args()
work = Path(args.workdir or tempfile.mkdtemp(prefix="mdbatch-example-"))
work.mkdir(parents=True, exist_ok=True)
root = work / "campaign"
db = f"sqlite:///{work / 'catalog.db'}"
if not root.exists():
    generate_campaign(root, args.sims, seed=0, faults=True, nested=True)

# %% Audit: scan every simulation on a local Dask cluster, write the catalog
cluster = mdbatch.ClusterOptions(workers=2, dashboard=False)
result = mdbatch.audit(root, db=db, cluster=cluster, progress=False)
print(f"run {result.run_id}: {result.summary['simulations']} simulations, {result.summary['findings_total']} findings")
print(result.findings().groupby("kind").size().sort_values(ascending=False).to_string())

# %% Something changes on disk; audit again
some_simulation = next(p.parent.parent for p in sorted(root.rglob(".analysis/metadata.json")))
inject_fault(some_simulation, "missing_file")
again = mdbatch.audit(root, db=db, cluster=cluster, progress=False)

# %% The catalog: every query is a pandas DataFrame
cat = mdbatch.Catalog(db)
systems = cat.systems()
print(systems.groupby(["simulation_type", "status"]).size().unstack(fill_value=0))

completed = cat.systems(status="completed", simulation_type="bilayer", columns=["hash", "parametrization", "directory"])
print(f"{len(completed)} completed bilayers")

# %% Analysis completeness: which analyses and artifacts each kind of simulation has, has faulty, or lacks
complete = cat.completeness(root, by=["simulation_type", "parametrization"], status="completed")
print(complete[["simulation_type", "parametrization", "item_name", "simulations", "have", "faulty", "lacking"]].to_string(index=False))
lacking = cat.lacking(root=root, status="completed")  # the simulations behind the `lacking` counts
print("completed simulations lacking an item others of their type have:", lacking["directory"].nunique())

# %% Findings of the last audit, and what changed since the previous one
findings = cat.findings()  # the newest audit; cat.findings(run_id) for another, cat.findings(None) for all
print(findings[["simulation", "kind", "item"]].head(10).to_string(index=False))
changes = cat.diff()  # the last two audits of the root; cat.diff(a, b) for any two
print(changes.groupby(["scope", "change"]).size().to_string())
print(cat.runs(root)[["run_id", "command", "status", "simulations", "findings_total"]].to_string(index=False))

# %% Storage and duplicates
print(cat.storage(root).head(8).to_string(index=False))  # bytes per file extension
print(cat.storage(root, by="simulation_type").to_string(index=False))
dups = cat.duplicates(root, top=5)
print(dups[["size", "files", "reclaimable_bytes"]].to_string(index=False))
print("reclaimable in all:", int(cat.duplicates(root)["reclaimable_bytes"].sum()), "bytes")

# %% One simulation's registry (.analysis/metadata.json), MDFactory-compatible
registry = mdbatch.Registry(some_simulation)
print(registry.list_analyses(), registry.list_artifacts())
integrity = registry.check_integrity()  # MDFactory's result shape
print("valid:", integrity["valid"], "missing:", integrity["missing_files"])

# %% Analysis frames: available after `mdbatch push analysis ROOT --db ...` (see the README's sync section)
from mdbatch.sync.push import push  # noqa: E402 - a later step of the walk-through

push(root, "analysis", db=db, cluster=cluster, progress=False, mode="diff")
analyses = [t.removeprefix("ANALYSIS_") for t in cat.tables() if t.startswith("ANALYSIS_") and t != "ANALYSIS_OVERVIEW"]
unreadable = set(cat.findings(kind="parquet_unreadable")["item"])  # these frames cannot be rebuilt
analysis = next(name for name in analyses if name not in unreadable)
frame = cat.analysis(analysis)  # every simulation's frame, stacked, with a `hash` column first
print(analysis, frame.shape, list(frame.columns)[:6])

# %% The HTML report (the same as `mdbatch report --db ... -o report.html`)
info = cat.report(work / "report.html")
print(f"open {info.path} ({info.bytes / 1e6:.1f} MB) in a browser")
cat.close()
