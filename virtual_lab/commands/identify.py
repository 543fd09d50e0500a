"""``virtual-lab identify``: ask a saved decoder which learning rule a recording made elsewhere looks like.

Reads NWB recordings with trial-aligned responses to a repeated stimulus set over several sessions, computes
the observables the model (``virtual-lab decode --save``) expects, and prints, for each recording, first
whether its observables lie inside the simulated training population (out-of-distribution score against
the threshold calibrated on held-out simulated networks), then the posterior over rules. With
``--output-dir``, writes ``identify.json``. A recording that lacks what the model needs, or a model file
that is not a trusted saved decoder, ends with one line and exit status 2 before anything is printed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``identify`` subcommand."""
    parser = subparsers.add_parser(
        "identify", help="ask a saved decoder about a recording: posterior over rules, out-of-distribution check",
        description="Compute the observables a saved decoder (virtual-lab decode --save) expects from NWB "
                    "recordings with trial-aligned responses to a repeated stimulus set over several sessions "
                    "(the epochs of a file, or one file per session of a subject), and report whether they lie "
                    "inside the simulated training population, then the posterior over learning rules.",
        epilog="example:\n"
               "  virtual-lab decode recordings/quickstart --rig 2p-gcamp6s --save model.skops\n"
               "  virtual-lab record recordings/quickstart --rig 2p-gcamp6s --out /tmp/2p\n"
               "  virtual-lab identify /tmp/2p/sub-*/*.nwb --model model.skops --output-dir /tmp/identify\n"
               "  virtual-lab identify mouse1_day*.nwb --model model.skops --depth middle",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recordings", nargs="+", type=Path, metavar="RECORDING.nwb",
                        help="NWB files; those of one subject are the sessions of one recording")
    parser.add_argument("--model", required=True, type=Path, metavar="MODEL.skops",
                        help="a decoder saved by 'virtual-lab decode --save'")
    parser.add_argument("--depth", default=None, choices=("early", "middle", "deep"),
                        help="depth position of populations whose file does not say (default: class scores "
                             "averaged over the three)")
    parser.add_argument("--output-dir", type=Path, default=None, help="write identify.json there")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress")
    parser.set_defaults(func=run)
    return parser


def _model_line(model: Any) -> str:
    cv = model.metadata["cross_validation"]
    population = model.metadata["population"]
    counts = ", ".join(f"{rule} {n}" for rule, n in population["networks_per_rule"].items())
    lo, hi = cv["network_accuracy_wilson95"]
    return (f"model: {model.metadata['decoder']} decoder, rig {model.rig['name']}, {model.n_timepoints} sessions x "
            f"{len(model.observables)} observables, trained on {population['n_networks']} simulated networks "
            f"({counts}); cross-validated network accuracy {cv['network_accuracy_mean']:.2f} [{lo:.2f}, {hi:.2f}] "
            f"(chance {cv['chance']:.2f})")


def _report(result: Any) -> list[str]:
    """The lines of one recording: the out-of-distribution line first, then the verdict."""
    r = result.recording
    head = (f"\n{r.subject}: {len(r.files)} file(s), {r.n_sessions} sessions, {len(r.stimuli)} stimuli in every "
            f"session, {len(r.populations)} population(s)")
    where = (f"score {result.score:.2f} vs threshold {result.threshold:.2f} (the {100 * result.quantile:g}% quantile "
             f"of {result.n_held_out} held-out simulated networks; {result.percentile:.0f}% of them scored lower)")
    if result.in_distribution:
        lines = [head, f"within the simulated range: {where}"]
    else:
        lines = [head, f"OUT OF DISTRIBUTION: the recording's observables lie outside the simulated training "
                       f"population: {where}. The posterior below is an extrapolation; do not read it as a verdict."]
    posterior = ", ".join(f"{rule} {p:.2f}" for rule, p in sorted(result.posterior.items(), key=lambda kv: -kv[1]))
    lines.append(f"posterior over rules: {posterior}")
    lines.append(f"{'verdict' if result.in_distribution else 'most probable (out of distribution)'}: "
                 f"{result.verdict}")
    lines += [f"note: {note}" for note in result.notes]
    return lines


def run(args: argparse.Namespace) -> int:
    """Entry point of ``virtual-lab identify``."""
    from virtual_lab import __version__
    from virtual_lab.analysis.identify import activity_kind, identify, read_trial_responses
    from virtual_lab.analysis.saved_model import load_model

    model = load_model(args.model)                          # one line and exit 2 for an untrusted file
    kind = activity_kind(model, args.model)
    recordings = read_trial_responses([str(p) for p in args.recordings], kind, model_rig=model.rig["name"])
    results = [identify(model, recording, args.depth) for recording in recordings]  # every check before output
    print(_model_line(model))
    for result in results:
        print("\n".join(_report(result)))
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        payload = {"model": str(args.model), "decoder": model.metadata["decoder"], "rig": model.rig["name"],
                   "classes": list(model.classes), "model_versions": model.metadata["versions"],
                   "virtual_lab": __version__, "recordings": [r.summary() for r in results]}
        target = args.output_dir / "identify.json"
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, target)
        print(f"wrote {target}")
    return 0
