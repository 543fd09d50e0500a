"""A recordings folder summarized: complete / diverged / failed / missing runs (``virtual-lab status``)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtual_lab.sweeps.storage import MANIFEST_NAME

__all__ = ["SweepStatus", "sweep_status"]


@dataclass
class SweepStatus:
    """A recordings folder summarized (what ``virtual-lab status`` prints).

    Attributes
    ----------
    folder : Path
    protocol : str
        From the manifest; empty without one.
    groups : dict of (rule, architecture) to Counter
        Counts of ``complete``, ``diverged``, ``failed``, ``missing`` per group.
    failures : list of dict
        Failed runs of the manifest without a complete session (``run_id``, ``rule``, ``error``).
    problem_files : list of (Path, str, str)
        Files named ``*.nwb`` that are not complete sessions: path, kind, reason.
    unplanned : int
        Complete sessions that the manifest does not list (e.g. from another version of the protocol).
    has_manifest : bool
    """

    folder: Path
    protocol: str = ""
    groups: dict[tuple[str, str], Counter] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    problem_files: list[tuple[Path, str, str]] = field(default_factory=list)
    unplanned: int = 0
    has_manifest: bool = False

    @property
    def totals(self) -> Counter:
        total: Counter = Counter()
        for counts in self.groups.values():
            total.update(counts)
        return total

    @property
    def ok(self) -> bool:
        totals = self.totals
        return totals["failed"] == 0 and totals["missing"] == 0 and not self.problem_files

    def summary_text(self) -> str:
        totals = self.totals
        head = f"{self.folder}: " + (f"sweep of protocol {self.protocol}" if self.protocol
                                      else "no sweep manifest (missing runs unknown)")
        lines = [head]
        header = f"  {'rule':<26} {'architecture':<14} {'complete':>8} {'diverged':>8} {'failed':>7} {'missing':>8}"
        lines.append(header)
        for (rule, arch), counts in sorted(self.groups.items()):
            lines.append(f"  {rule:<26} {arch:<14} {counts['complete']:>8} {counts['diverged']:>8} "
                         f"{counts['failed']:>7} {counts['missing']:>8}")
        lines.append(f"  {'total':<26} {'':<14} {totals['complete']:>8} {totals['diverged']:>8} "
                     f"{totals['failed']:>7} {totals['missing']:>8}")
        if self.unplanned:
            lines.append(f"  {self.unplanned} complete session(s) not in the manifest's plan")
        for failure in self.failures[:20]:
            lines.append(f"  failed  {failure['run_id']} ({failure['rule']}): {failure['error'] or 'not run yet'}")
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more failed runs (see the manifest)")
        if self.problem_files:
            lines.append(f"  {len(self.problem_files)} file(s) named .nwb that are not complete sessions:")
            for path, kind, reason in self.problem_files[:20]:
                lines.append(f"    {kind:<10} {path}: {reason}")
        return "\n".join(lines)


def sweep_status(folder: str | os.PathLike) -> SweepStatus:
    """Summarize a recordings folder: complete / diverged / failed / missing runs by rule and architecture.

    Reads ``sweep_manifest.json`` when there is one (the plan and the recorded failures) and checks every
    ``*.nwb`` file under the folder with h5py. Never raises for a damaged or foreign file: such files are
    listed in :attr:`SweepStatus.problem_files`.

    Parameters
    ----------
    folder : path-like
        A sweep's recordings folder (``<output_dir>/<protocol name>``).

    Returns
    -------
    SweepStatus

    Raises
    ------
    ValueError
        ``folder`` is not a folder.
    """
    from virtual_lab.sessions import describe_session_file

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"recordings folder {str(folder)!r} does not exist or is not a folder")
    status = SweepStatus(folder)
    manifest = None
    manifest_path = folder / MANIFEST_NAME
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            status.protocol = str(manifest.get("protocol", ""))
            status.has_manifest = True
        except (OSError, json.JSONDecodeError, AttributeError) as error:
            status.problem_files.append((manifest_path, "manifest", f"unreadable: {error}"))
            manifest = None
    files = sorted(p for p in folder.rglob("*.nwb")
                   if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    found: dict[Path, tuple[str, str, dict]] = {p: describe_session_file(p) for p in files}
    planned_paths = set()
    if manifest is not None:
        for run in manifest.get("runs", []):
            path = folder / run["path"]
            planned_paths.add(path)
            key = (str(run.get("rule", "?")), str(run.get("architecture", "?")))
            counts = status.groups.setdefault(key, Counter())
            kind, _, metadata = found.get(path, ("missing", "", {}))
            if kind == "complete" and metadata.get("run_id") == run["run_id"]:
                counts["diverged" if metadata.get("diverged") else "complete"] += 1
            elif run.get("status") == "failed":
                counts["failed"] += 1
                status.failures.append(run)
            else:
                counts["missing"] += 1
    for path, (kind, reason, metadata) in found.items():
        if kind != "complete":
            status.problem_files.append((path, kind, reason))
        elif path not in planned_paths:
            if manifest is not None:
                status.unplanned += 1
            else:
                key = (str(metadata.get("rule", "?")), str(metadata.get("architecture", "?")))
                status.groups.setdefault(key, Counter())["diverged" if metadata.get("diverged") else "complete"] += 1
    return status
