"""The experiment report: Markdown + HTML with PNG figures and a machine-readable ``summary.json``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from virtual_lab.lab.record import GroundTruth

SHORT = {"sgdm": "SGDM", "adam": "Adam", "feedback_alignment": "FA", "information_alignment": "IA"}


def _short(rule: str) -> str:
    return SHORT.get(rule, rule)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], title: str, ax) -> None:
    """Row-normalized confusion matrix on ``ax`` (true rule in rows, predicted in columns)."""
    matrix = np.asarray(matrix, dtype=float)
    ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    labels = [_short(c) for c in classes]
    ax.set_xticks(range(len(classes)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels)
    ax.set_xlabel("predicted rule")
    ax.set_ylabel("true rule")
    ax.set_title(title, fontsize=9)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                    color="white" if matrix[i, j] > 0.6 else "black", fontsize=8)


def _save(fig, path: Path) -> Path:
    """Lay out, write (110 dpi) and close a report figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_learning_curves(ground_truths: Sequence[GroundTruth], path: Path) -> Path:
    """Test accuracy and training loss over training, mean +/- SD over networks of each rule."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    rules = sorted({gt.rule for gt in ground_truths}, key=lambda r: list(SHORT).index(r) if r in SHORT else 99)
    for rule in rules:
        runs = [gt for gt in ground_truths if gt.rule == rule and not gt.diverged]
        if not runs:
            continue
        steps = runs[0].checkpoint_steps
        for ax, key in zip(axes, ("test_accuracy", "train_loss")):
            values = np.stack([getattr(gt, key) for gt in runs])
            mean, sd = values.mean(0), values.std(0)
            line, = ax.plot(steps, mean, label=f"{_short(rule)} (n={len(runs)})")
            ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, linewidth=0)
    axes[0].set_ylabel("probe accuracy")
    axes[1].set_ylabel("training loss")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Learning curves (mean +/- SD over networks)", fontsize=10)
    return _save(fig, path)


def plot_accuracy(evaluations: Sequence[dict[str, Any]], path: Path) -> Path:
    """Layer- and network-level accuracy (mean +/- s.e.m. over splits) of every rig x decoder."""
    plt = _plt()
    labels = [f"{e['rig']}\n{e['decoder']}" + ("\n(" + e["control"] + ")" if e["control"] else "") for e in evaluations]
    x = np.arange(len(evaluations))
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(evaluations)), 3.6))
    for offset, level in ((-0.18, "layer"), (0.18, "network")):
        means = [e["summary"][f"{level}_accuracy_mean"] for e in evaluations]
        sems = [e["summary"][f"{level}_accuracy_sem"] or 0 for e in evaluations]
        ax.bar(x + offset, means, width=0.36, yerr=sems, capsize=3, label=f"{level} level")
    chance = evaluations[0]["summary"]["chance"]
    ax.axhline(chance, color="k", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Decoding the learning rule (grouped splits, mean +/- s.e.m.)", fontsize=10)
    return _save(fig, path)


def plot_confusions(evaluations: Sequence[dict[str, Any]], path: Path) -> Path:
    """Network-level confusion matrix of every (rig, decoder) evaluation, controls excluded."""
    plt = _plt()
    main = [e for e in evaluations if not e["control"]]
    fig, axes = plt.subplots(1, len(main), figsize=(3.3 * len(main), 3.3), squeeze=False)
    for ax, e in zip(axes[0], main):
        s = e["summary"]
        plot_confusion(np.array(s["network_confusion"]), s["classes"],
                       f"{e['rig']} / {e['decoder']}\nnetwork acc {s['network_accuracy_mean']:.2f}", ax)
    return _save(fig, path)


def _table_rows(evaluations: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for e in evaluations:
        s = e["summary"]

        def fmt(name: str) -> str:
            return f"{s[name + '_mean']:.3f} ± {s[name + '_sem'] or 0:.3f}"

        networks = str(s["n_networks"])
        if s.get("split") == "generalization":  # held-out rows: how many networks the held-out side has
            networks = f"{s['n_test_networks']} of {s['n_networks']}"
        rows.append([e["rig"], e["decoder"], e["control"] or "-", fmt("layer_accuracy"),
                     fmt("layer_balanced_accuracy"), fmt("network_accuracy"), networks,
                     str(s["n_splits"]), f"{s['chance']:.2f}"])
    return rows


def _extras(evaluations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Permutation test, clustering and split comparison attached by ``decode_sessions`` (or {})."""
    return next((e["extras"] for e in evaluations if e.get("extras")), {})


def _controls_markdown(evaluations: Sequence[dict[str, Any]]) -> list[str]:
    """The "Controls" section: how to read the control rows, permutation test, splits, clustering."""
    extras = _extras(evaluations)
    if not extras:
        return []
    lines = ["## Controls", "",
             "Rows with a *control* in the accuracy table: *weights / activations / activity_change only* "
             "decode from one observable class; *time average*, *last timepoint* and *time shuffled* remove "
             "the time course; *performance only* decodes from the loss and accuracy curves alone (is the "
             "rule given away by performance?); *performance matched* keeps networks whose final accuracy "
             "overlaps across rules; *rule family* decodes the family instead of the rule; *layer-level "
             "splits* are the paper's splits, which let one network's layers sit on both sides; *held-out "
             "architecture / task / paradigm: X* trains on every other value and tests on networks of X alone "
             "(run when the sessions vary in that key). The same analyses run one by one with "
             "`virtual-lab decode RECORDINGS --control NAME`, and a held-out test with "
             "`virtual-lab decode RECORDINGS --train-filter architecture=mlp,cnn --test-filter "
             "architecture=resnet`.", ""]
    perm = extras.get("permutation")
    if perm:
        lines += [f"- **Permutation test** ({perm['decoder']}, labels shuffled across networks, whole "
                  f"cross-validation re-run {perm['n_permutations']} times): network accuracy "
                  f"{perm['observed']:.3f} vs null {perm['null_mean']:.3f} ± {perm['null_sd'] or 0:.3f} "
                  f"(empirical chance), p = {perm['p_value']:.3f}."]
    diff = extras.get("split_difference")
    if diff:
        lines += [f"- **Grouped vs layer-level splits**: layer-level splits change layer accuracy by "
                  f"{diff['layer_accuracy']:+.3f} and network accuracy by {diff['network_accuracy']:+.3f} "
                  f"(positive = what leaking a network's identity buys)."]
    clustering = extras.get("clustering")
    if clustering:
        scores = ", ".join(f"{k}: ARI {v['ari']:.2f}, NMI {v['nmi']:.2f}" for k, v in clustering["scores"].items()
                           if v["ari"] is not None)
        lines += [f"- **Unsupervised clustering** ({clustering['method']}, {clustering['n_clusters']} clusters, "
                  f"{clustering['n_networks']} networks, no labels): {scores or 'no label with 2+ values'}."]
    for name, reason in extras.get("skipped", {}).items():
        lines += [f"- *{name}* skipped: {reason}"]
    return lines + [""]


_HEADER = ["rig", "decoder", "control", "layer accuracy", "layer balanced acc.", "network accuracy",
           "networks", "splits", "chance"]


def write_report(result: Any, ground_truths: Sequence[GroundTruth]) -> Path:
    """Write ``report.md``, ``report.html``, ``summary.json`` and figures into ``<output_dir>/report``.

    Parameters
    ----------
    result : ExperimentResult
        From :func:`virtual_lab.pipeline.run_protocol` (evaluations and counts filled in).
    ground_truths : sequence of GroundTruth
        The sessions (for learning curves).

    Returns
    -------
    Path
        The Markdown report.
    """
    protocol = result.protocol
    folder = Path(result.output_dir) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    figures = {
        "accuracy": plot_accuracy(result.evaluations, folder / "accuracy.png"),
        "confusion": plot_confusions(result.evaluations, folder / "confusion.png"),
        "learning_curves": plot_learning_curves(ground_truths, folder / "learning_curves.png"),
    }
    by_rule: dict[str, int] = {}
    for gt in ground_truths:
        by_rule[gt.rule] = by_rule.get(gt.rule, 0) + 1
    lrs = sorted({float(gt.metadata.get("learning_rate", 0)) for gt in ground_truths})
    rows = _table_rows(result.evaluations)
    rigs = {r.name: r for r in protocol.rig}
    sweep = getattr(result, "sweep", None)
    caveats = list(getattr(getattr(sweep, "plan", None), "caveats", ()) or ())

    summary = {
        "protocol": protocol.name,
        "protocol_file": protocol.source,
        "n_sessions": len(result.session_paths),
        "n_trained": result.n_trained,
        "n_reused": result.n_reused,
        "n_diverged": result.n_diverged,
        "networks_per_rule": by_rule,
        "rigs": {name: {k: v for k, v in vars(r).items()} for name, r in rigs.items()},
        "evaluations": [{"rig": e["rig"], "decoder": e["decoder"], "control": e["control"], **e["summary"]}
                        for e in result.evaluations],
        "timings_s": result.timings,
        "controls": _extras(result.evaluations),
        "caveats": caveats,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    with open(folder / "predictions.csv", "w") as fh:
        fh.write("rig,decoder,control,split,network_id,rule,predicted_rule,n_layers,correct\n")
        for e in result.evaluations:
            for row in e["result"].predictions:
                fh.write(f"{e['rig']},{e['decoder']},{e['control']},{row['split']},{row['network_id']},"
                         f"{row['rule']},{row['predicted_rule']},{row['n_layers']},{int(row['correct'])}\n")

    rig_lines = []
    for r in protocol.rig:
        parts = []
        if r.n_units:
            parts.append(f"{r.n_units} units per layer")
        elif r.unit_fraction < 1:
            parts.append(f"{r.unit_fraction:.0%} of units")
        if r.synapse_fraction < 1:
            parts.append(f"{r.synapse_fraction:.0%} of synapses")
        if r.noise_sd:
            parts.append(f"noise SD {r.noise_sd:g}" + (" x signal SD" if r.noise_relative else ""))
        if r.n_checkpoints:
            parts.append(f"{r.n_checkpoints} {r.checkpoint_spacing} checkpoints")
        rig_lines.append(f"- **{r.name}**: " + (", ".join(parts) if parts else "every unit, synapse and checkpoint, no noise"))

    md = [f"# virtual_lab report: {protocol.name}", ""]
    if protocol.description:
        md += [protocol.description, ""]
    md += [
        f"{len(result.session_paths)} networks ({', '.join(f'{_short(r)} {n}' for r, n in by_rule.items())}); "
        f"learning rates {', '.join(f'{lr:g}' for lr in lrs)}; {result.n_diverged} diverged. "
        f"{result.n_trained} trained in this run, {result.n_reused} reused from earlier sessions.",
        "",
        "The decoder sees one layer of one network at a time (the paper's 24 admissible observables at "
        "every observed checkpoint plus the layer's depth position). Splits are grouped by network: no "
        "network has layers on both sides. *Network accuracy* combines the layer predictions of each test "
        "network (mean class probability). Mean ± s.e.m. over splits.",
        "",
        *(["## Caveats", "", *[f"- {c}" for c in caveats], ""] if caveats else []),
        "## Rig settings", "", *rig_lines, "",
        "## Accuracy", "",
        "| " + " | ".join(_HEADER) + " |",
        "|" + "---|" * len(_HEADER),
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
        "The *initialization only* control decodes from checkpoint 0 alone; it must sit at chance, because "
        "the rule can only show through learning.",
        "",
        "![accuracy](accuracy.png)", "",
        "## Confusion (network level)", "", "![confusion](confusion.png)", "",
        "## Learning curves", "", "![learning curves](learning_curves.png)", "",
        *_controls_markdown(result.evaluations),
        "Files: `summary.json` (all numbers), `predictions.csv` (one row per split x test network).", "",
    ]
    md_path = folder / "report.md"
    md_path.write_text("\n".join(md))

    table_html = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in _HEADER) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>"
    body = "\n".join([
        f"<h1>virtual_lab report: {html.escape(protocol.name)}</h1>",
        f"<p>{html.escape(protocol.description)}</p>",
        f"<p>{html.escape(md[4] if protocol.description else md[2])}</p>",
        ("<h2>Caveats</h2><ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in caveats) + "</ul>"
         if caveats else ""),
        "<h2>Rig settings</h2><ul>" + "".join(f"<li>{html.escape(line[2:].replace('**', ''))}</li>" for line in rig_lines) + "</ul>",
        "<h2>Accuracy</h2>", table_html,
        "<p><img src='accuracy.png'></p><h2>Confusion (network level)</h2><p><img src='confusion.png'></p>",
        "<h2>Learning curves</h2><p><img src='learning_curves.png'></p>",
    ])
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{max-width:100%}")
    (folder / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(protocol.name)}"
                                        f"</title><style>{style}</style></head><body>{body}</body></html>")
    return md_path
