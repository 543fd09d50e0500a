"""A recordings folder summarized: complete / diverged / failed / missing runs (``virtual-lab status``),
and with ``verify`` every session checked against the checksum its sweep recorded (``status --verify``)."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtual_lab.sweeps.storage import MANIFEST_NAME

__all__ = ["VERIFY_STATES", "FileCheck", "SweepStatus", "sweep_status", "verify_session"]

#: What ``status --verify`` finds for a session: its bytes are those committed (or, without a recorded
#: checksum, it reads completely), they differ but the file still reads, the file is gone, or it fails to
#: open or read as a session.
VERIFY_STATES = ("ok", "changed", "missing", "damaged")


@dataclass(frozen=True)
class FileCheck:
    """One session checked by :func:`verify_session`.

    Attributes
    ----------
    path : Path
    state : str
        One of :data:`VERIFY_STATES`.
    reason : str
        One line (for ``ok``: how it was checked).
    """

    path: Path
    state: str
    reason: str = ""


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
    verified : list of FileCheck, optional
        With ``verify``: every session of the manifest that has a checksum or is recorded complete (without
        a manifest: every complete session), checked by :func:`verify_session`.
    """

    folder: Path
    protocol: str = ""
    groups: dict[tuple[str, str], Counter] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    problem_files: list[tuple[Path, str, str]] = field(default_factory=list)
    unplanned: int = 0
    has_manifest: bool = False
    verified: list[FileCheck] | None = None

    @property
    def totals(self) -> Counter:
        total: Counter = Counter()
        for counts in self.groups.values():
            total.update(counts)
        return total

    @property
    def ok(self) -> bool:
        totals = self.totals
        verified_ok = all(check.state == "ok" for check in self.verified or ())
        return totals["failed"] == 0 and totals["missing"] == 0 and not self.problem_files and verified_ok

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
        if self.verified is not None:
            lines += self._verify_lines()
        return "\n".join(lines)

    def _verify_lines(self) -> list[str]:
        counts = Counter(check.state for check in self.verified or ())
        lines = [f"  verified {len(self.verified or ())} session(s): "
                 + ", ".join(f"{counts[state]} {state}" for state in VERIFY_STATES)]
        unchecked = sum(1 for c in self.verified or () if c.state == "ok" and c.reason.startswith("no checksum"))
        if unchecked:
            lines.append(f"  {unchecked} of the ok session(s) have no recorded checksum: read completely instead")
        bad = [check for check in self.verified or () if check.state != "ok"]
        for check in bad[:50]:
            lines.append(f"    {check.state:<8} {check.path}: {check.reason}")
        if len(bad) > 50:
            lines.append(f"    ... and {len(bad) - 50} more")
        return lines


def sweep_status(folder: str | os.PathLike, *, verify: bool = False) -> SweepStatus:
    """Summarize a recordings folder: complete / diverged / failed / missing runs by rule and architecture.

    Reads ``sweep_manifest.json`` when there is one (the plan and the recorded failures) and classifies every
    ``*.nwb`` file under the folder with :func:`virtual_lab.sessions.find_sessions` (h5py, a few ms each;
    temporary files of a sweep in progress are left out). Never raises for a damaged or foreign file: such
    files are listed in :attr:`SweepStatus.problem_files`.

    Parameters
    ----------
    folder : path-like
        A sweep's recordings folder (``<output_dir>/<protocol name>``).
    verify : bool, default=False
        Also rehash every session the manifest records (:func:`verify_session`: ``ok``, ``changed``,
        ``missing`` or ``damaged``); reads every byte of every session.

    Returns
    -------
    SweepStatus

    Raises
    ------
    ValueError
        ``folder`` is not a folder.
    """
    from virtual_lab.sessions import find_sessions

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"recordings folder {str(folder)!r} does not exist or is not a folder")
    status = SweepStatus(folder)
    manifest = _read_manifest(folder / MANIFEST_NAME, status)
    found = find_sessions(folder, kind="any", allow_empty=True)
    complete = {path: dict(found.metadata[path]) for path in found.complete}
    status.problem_files = [*status.problem_files, *((s.path, s.kind, s.reason) for s in found.bad)]
    planned_paths = set()
    for run in (manifest or {}).get("runs", []):
        path = (folder / run["path"]).resolve()
        planned_paths.add(path)
        counts = status.groups.setdefault((str(run.get("rule", "?")), str(run.get("architecture", "?"))), Counter())
        metadata = complete.get(path)
        if metadata is not None and metadata.get("run_id") == run["run_id"]:
            counts["diverged" if metadata.get("diverged") else "complete"] += 1
        elif run.get("status") == "failed":
            counts["failed"] += 1
            status.failures.append(run)
        else:
            counts["missing"] += 1
    for path, metadata in complete.items():
        if path in planned_paths:
            continue
        if manifest is not None:
            status.unplanned += 1
        else:
            key = (str(metadata.get("rule", "?")), str(metadata.get("architecture", "?")))
            status.groups.setdefault(key, Counter())["diverged" if metadata.get("diverged") else "complete"] += 1
    if verify:
        status.verified = _verify(folder, manifest, list(complete))
    return status


def _read_manifest(path: Path, status: SweepStatus) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        status.protocol = str(manifest.get("protocol", ""))
        status.has_manifest = True
        return manifest
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        status.problem_files.append((path, "manifest", f"unreadable: {error}"))
        return None


def _verify(folder: Path, manifest: dict[str, Any] | None, complete: list[Path]) -> list[FileCheck]:
    """:func:`verify_session` of every run the manifest records as written (else of every complete session)."""
    from virtual_lab.progress import progress_bar

    if manifest is None:
        targets = [(path, None, None) for path in complete]
    else:
        targets = [(folder / run["path"], run.get("sha256") or None, run.get("size"))
                   for run in manifest.get("runs", [])
                   if run.get("sha256") or run.get("status") in ("complete", "diverged")]
    return [verify_session(path, sha256, size)
            for path, sha256, size in progress_bar(targets, desc="verifying", unit="sessions")]


def verify_session(path: str | os.PathLike, sha256: str | None = None, size: int | None = None) -> FileCheck:
    """Check a session file against the checksum recorded when it was committed.

    Parameters
    ----------
    path : path-like
    sha256 : str, optional
        The recorded SHA-256; without one the file is only read completely.
    size : int, optional
        The recorded size in bytes.

    Returns
    -------
    FileCheck
        ``missing`` (no file); ``ok`` (same SHA-256, or without a recorded one: reads completely);
        ``damaged`` (fails to open or read as a session: :func:`virtual_lab.sessions.check_session_data`);
        ``changed`` (another SHA-256, but it still reads completely). Never raises.
    """
    from virtual_lab.sessions import check_session_data
    from virtual_lab.sessions.checksum import file_sha256

    path = Path(path)
    if not path.is_file():
        return FileCheck(path, "missing", "no such file")
    if sha256:
        try:
            actual = file_sha256(path)
        except OSError as error:
            return FileCheck(path, "damaged", f"cannot be read: {error}")
        if actual == sha256:
            return FileCheck(path, "ok", "sha256 matches")
    problem = check_session_data(path)
    if problem:
        return FileCheck(path, "damaged", problem)
    if not sha256:
        return FileCheck(path, "ok", "no checksum recorded; reads completely")
    now = path.stat().st_size
    sizes = f"{size} -> {now} bytes" if size is not None and size != now else f"{now} bytes, same size"
    return FileCheck(path, "changed", f"sha256 differs from the one recorded at commit ({sizes}); "
                                      f"the file still reads")
