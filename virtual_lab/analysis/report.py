"""The experiment report: Markdown + HTML with PNG figures and a machine-readable ``summary.json``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from virtual_lab.lab.rules import PAPER_RULES, display_name
from virtual_lab.types import GroundTruth


def _short(rule: str) -> str:
    """The rule's label in figures and sentences of the report (its registered display name, ``FA``)."""
    return display_name(rule)


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
    long = max(map(len, labels), default=0) > 5  # short rule names fit upright
    ax.set_xticks(range(len(classes)), labels, rotation=45 if long else 0, ha="right" if long else "center",
                  fontsize=8)
    ax.set_yticks(range(len(classes)), labels, fontsize=8)
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


def _rule_order(rules) -> list[str]:
    """Rules in the report's order (SGDM, Adam, FA, IA, then others alphabetically)."""
    return sorted(set(rules), key=lambda r: (PAPER_RULES.index(r) if r in PAPER_RULES else len(PAPER_RULES), r))


#: Quantiles of the learning-curve bands (the interquartile range), and the line (the median).
CURVE_BAND = (0.25, 0.75)


def _ordinal(q: float) -> str:
    n = round(100 * q)
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _band_text() -> str:
    """``"25th-75th percentiles (interquartile range)"`` for :data:`CURVE_BAND`."""
    text = f"{_ordinal(CURVE_BAND[0])}-{_ordinal(CURVE_BAND[1])} percentiles"
    return text + (" (interquartile range)" if CURVE_BAND == (0.25, 0.75) else "")


def learning_curve_bands(ground_truths: Sequence[GroundTruth], key: str
                         ) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]], bool]:
    """Per rule, the median and the :data:`CURVE_BAND` quantiles of one curve over its networks.

    Quantiles (not mean +/- SD) keep the band inside the recorded values: a band through zero on the log
    axis of the loss, or above 1 for the accuracy, cannot occur. Diverged runs are left out.

    Parameters
    ----------
    ground_truths : sequence of GroundTruth
    key : {"test_accuracy", "train_loss"}

    Returns
    -------
    x : ndarray, shape (T,)
        Training steps when every run has the same checkpoints; otherwise the fraction of each run's training
        (the curves are then interpolated onto ``T`` evenly spaced fractions; the loss in log space).
    bands : dict of str to (median, low, high, n_networks)
        In :func:`_rule_order`.
    in_steps : bool
        Whether ``x`` is in training steps.
    """
    runs = [gt for gt in ground_truths if not gt.diverged]
    steps = [np.asarray(gt.checkpoint_steps, dtype=float) for gt in runs]
    in_steps = bool(steps) and all(s.shape == steps[0].shape and np.array_equal(s, steps[0]) for s in steps)
    if in_steps:
        x = steps[0]
        curves = [np.asarray(getattr(gt, key), dtype=float) for gt in runs]
    else:
        x = np.linspace(0, 1, max((len(s) for s in steps), default=0))
        log = key == "train_loss"
        curves = []
        for gt, s in zip(runs, steps):
            y = np.asarray(getattr(gt, key), dtype=float)
            y = np.interp(x, s / s[-1] if s[-1] > 0 else s, np.log(y) if log else y)
            curves.append(np.exp(y) if log else y)
    bands = {}
    for rule in _rule_order(gt.rule for gt in runs):
        values = np.stack([c for gt, c in zip(runs, curves) if gt.rule == rule])
        low, median, high = np.quantile(values, [CURVE_BAND[0], 0.5, CURVE_BAND[1]], axis=0)
        bands[rule] = (median, low, high, len(values))
    return x, bands, in_steps


def plot_learning_curves(ground_truths: Sequence[GroundTruth], path: Path) -> Path:
    """Probe accuracy and training loss over training: per rule the median over its networks (every
    learning rate and seed pooled) and the interquartile band (see :func:`learning_curve_bands`)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    in_steps = True
    for ax, key in zip(axes, ("test_accuracy", "train_loss")):
        x, bands, in_steps = learning_curve_bands(ground_truths, key)
        for rule, (median, low, high, n) in bands.items():
            line, = ax.plot(x, median, label=f"{_short(rule)} (n={n})")
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes[0].set_ylabel("probe accuracy")
    axes[1].set_ylabel("training loss")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("training step" if in_steps else "fraction of training")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Learning curves (line: median over networks; band: {_ordinal(CURVE_BAND[0])} to "
                 f"{_ordinal(CURVE_BAND[1])} percentile)", fontsize=10)
    return _save(fig, path)


def plot_accuracy(evaluations: Sequence[dict[str, Any]], path: Path) -> Path:
    """Layer- and network-level accuracy (mean +/- s.e.m. over splits) of every rig x decoder and control.

    One row per evaluation (horizontal bars, so that the figure keeps its width however many controls ran),
    each with its own chance level (a control such as *rule family* has fewer classes).
    """
    plt = _plt()
    labels = [f"{e['rig']} / {e['decoder']}" + (f": {e['control']}" if e["control"] else "") for e in evaluations]
    y = np.arange(len(evaluations))
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.34 * len(evaluations)))
    for offset, level in ((-0.2, "layer"), (0.2, "network")):
        means = [e["summary"][f"{level}_accuracy_mean"] for e in evaluations]
        sems = [e["summary"][f"{level}_accuracy_sem"] or 0 for e in evaluations]
        ax.barh(y + offset, means, height=0.4, xerr=sems, capsize=2, label=f"{level} level",
                error_kw={"linewidth": 0.8})
    chances = np.array([e["summary"]["chance"] for e in evaluations], dtype=float)
    ax.vlines(chances, y - 0.45, y + 0.45, colors="k", linestyles="--", linewidth=1, label="chance (per row)")
    n_main = sum(not e["control"] for e in evaluations)
    if 0 < n_main < len(evaluations):
        ax.axhline(n_main - 0.5, color="0.5", linewidth=0.6)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(len(evaluations) - 0.5, -0.5)  # first evaluation on top
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("accuracy (mean ± s.e.m. over splits)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    return _save(fig, path)


def plot_confusions(evaluations: Sequence[dict[str, Any]], path: Path) -> Path:
    """Network-level confusion matrix of every (rig, decoder) evaluation, controls excluded."""
    plt = _plt()
    main = [e for e in evaluations if not e["control"]]
    n_cols = min(len(main), 4)  # 4 panels of 2.5 in fill the report's 1,100 px at 110 dpi
    n_rows = -(-len(main) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.5 * n_cols, 3.0 * n_rows), squeeze=False)
    for i, (ax, e) in enumerate(zip(axes.flat, main)):
        s = e["summary"]
        classes = list(s["classes"])
        order = [classes.index(c) for c in _rule_order(classes)]
        matrix = np.asarray(s["network_confusion"], dtype=float)[np.ix_(order, order)]
        plot_confusion(matrix, [classes[k] for k in order],
                       f"{e['rig']} / {e['decoder']}\nnetwork acc {s['network_accuracy_mean']:.2f}", ax)
        if i % n_cols:
            ax.set_ylabel("")
    for ax in list(axes.flat)[len(main):]:
        ax.set_axis_off()
    return _save(fig, path)


def learning_rates(protocol: Any, ground_truths: Sequence[GroundTruth]) -> dict[str, Any]:
    """The learning rates of the sessions, per rule, and the multipliers of the protocol they correspond to.

    Sessions store the absolute ``learning_rate`` only; a run's multiplier is that rate divided by the rule's
    base rate in ``protocol`` (:meth:`virtual_lab.protocol.Protocol.base_learning_rate`, as the sweep computed it),
    and is reported only when every session's ratio is one of the protocol's ``learning_rate_scales``.

    Parameters
    ----------
    protocol : Protocol
    ground_truths : sequence of GroundTruth

    Returns
    -------
    dict
        ``per_rule`` (rule -> sorted absolute rates, in :func:`_rule_order`), ``scales`` (sorted multipliers
        found, or None when some session's rate is not a protocol multiplier of its rule's base rate) and
        ``base`` (rule -> base rate, for the rules the protocol knows).
    """

    per_rule: dict[str, set[float]] = {}
    for gt in ground_truths:
        per_rule.setdefault(gt.rule, set()).add(float(gt.metadata.get("learning_rate", 0)))
    protocol_scales = [float(s) for s in protocol.sweep.learning_rate_scales]
    base, scales = {}, set()
    for rule, rates in per_rule.items():
        try:
            base[rule] = protocol.base_learning_rate(rule)
        except ValueError:  # a rule this version does not know: no base rate to divide by
            scales = None
            continue
        for rate in rates:
            match = [s for s in protocol_scales if np.isclose(rate, base[rule] * s, rtol=1e-9, atol=0)]
            if not match or scales is None:
                scales = None
                break
            scales.add(match[0])
    return {"per_rule": {rule: sorted(per_rule[rule]) for rule in _rule_order(per_rule)},
            "scales": None if scales is None else sorted(scales), "base": base}


def _learning_rate_text(rates: dict[str, Any]) -> str:
    """``learning-rate multipliers 0.5x, 1x, 2x of each rule's base rate (SGDM 0.01/0.02/0.04; ...)``."""
    def listed(values: list[float]) -> str:  # many rates (drawn from a prior): their range
        if len(values) > 6:
            return f"{min(values):.3g}-{max(values):.3g} ({len(values)} rates)"
        return '/'.join(f'{lr:g}' for lr in values)

    per_rule = "; ".join(f"{_short(rule)} {listed(values)}" for rule, values in rates["per_rule"].items())
    scales = rates["scales"]
    if scales is None:
        plural = any(len(v) > 1 for v in rates["per_rule"].values())
        return f"learning rate{'s' if plural else ''} per rule: {per_rule}"
    what = "multipliers" if len(scales) > 1 else "multiplier"
    return f"learning-rate {what} {', '.join(f'{s:g}x' for s in scales)} of each rule's base rate ({per_rule})"


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
        scores = "; ".join(f"{k}: ARI {v['ari']:.2f}, NMI {v['nmi']:.2f}" for k, v in clustering["scores"].items()
                           if v["ari"] is not None)
        lines += [f"- **Unsupervised clustering** ({clustering['method']}, {clustering['n_clusters']} clusters, "
                  f"{clustering['n_networks']} networks, no labels): {scores or 'no label with 2+ values'}."]
    for name, reason in extras.get("skipped", {}).items():
        lines += [f"- *{name}* skipped: {reason}"]
    return lines + [""]


def _inline_html(text: str) -> str:
    """Escape ``text`` and render the report's inline Markdown: ```code```, ``**bold**``, ``*italic*``."""
    import re

    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        escaped = html.escape(part)
        if i % 2 and i < len(parts) - 1:
            out.append(f"<code>{escaped}</code>")
            continue
        if i % 2:  # an unmatched backtick stays a backtick
            escaped = "`" + escaped
        escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
        out.append(re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", escaped))
    return "".join(out)


def markdown_to_html(lines: Sequence[str]) -> str:
    """The report's Markdown as HTML, so that ``report.html`` says exactly what ``report.md`` says.

    Handles what :func:`write_report` writes: ``#`` / ``##`` headings, ``- `` lists, pipe tables (header row,
    separator row, body), ``![alt](src)`` images on their own line, and paragraphs separated by blank lines;
    a paragraph right after an image is its caption (class ``caption``).

    Parameters
    ----------
    lines : sequence of str
        One Markdown line each (no newlines inside).

    Returns
    -------
    str
        The HTML body.
    """
    import re

    out: list[str] = []
    block: list[str] = []
    kind = ""
    after_image = False

    def flush() -> None:
        nonlocal kind, after_image
        if not block:
            return
        if kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline_html(item[2:])}</li>" for item in block) + "</ul>")
            after_image = False
        elif kind == "table":
            cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block]
            body = [row for row in cells[1:] if not all(re.fullmatch(r"-+:?|:?-+:?", c) for c in row)]
            out.append("<table><tr>" + "".join(f"<th>{_inline_html(c)}</th>" for c in cells[0]) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                                 for row in body) + "</table>")
            after_image = False
        else:
            text = " ".join(block)
            image = re.fullmatch(r"!\[([^\]]*)\]\(([^)\s]+)\)", text)
            if image:
                out.append(f"<p><img src='{html.escape(image[2])}' alt='{html.escape(image[1])}'></p>")
            else:
                css = " class='caption'" if after_image else ""
                out.append(f"<p{css}>{_inline_html(text)}</p>")
            after_image = bool(image)
        block.clear()
        kind = ""

    for line in lines:
        heading = re.match(r"(#{1,6}) (.*)", line)
        if heading:
            flush()
            level = len(heading[1])
            out.append(f"<h{level}>{_inline_html(heading[2])}</h{level}>")
            after_image = False
            continue
        if not line.strip():
            flush()
            continue
        line_kind = "list" if line.startswith("- ") else "table" if line.startswith("|") else "text"
        if kind and line_kind != kind:
            flush()
        kind = line_kind
        block.append(line)
    flush()
    return "\n".join(out)


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
    plot_accuracy(result.evaluations, folder / "accuracy.png")
    plot_confusions(result.evaluations, folder / "confusion.png")
    plot_learning_curves(ground_truths, folder / "learning_curves.png")
    by_rule: dict[str, int] = {}
    for gt in ground_truths:
        by_rule[gt.rule] = by_rule.get(gt.rule, 0) + 1
    rates = learning_rates(protocol, ground_truths)
    sweep = getattr(result, "sweep", None)
    caveats = list(getattr(getattr(sweep, "plan", None), "caveats", ()) or ())
    summary = _summary(result, by_rule, rates, caveats)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _write_predictions(result.evaluations, folder / "predictions.csv")
    md = _report_markdown(result, ground_truths, by_rule, rates, caveats)
    md_path = folder / "report.md"
    md_path.write_text("\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{max-width:100%}"
             "p.caption{font-size:13px;color:#333;max-width:900px}")
    (folder / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>"
                                        f"{html.escape(protocol.name)}</title><style>{style}</style></head><body>"
                                        f"{markdown_to_html(md)}</body></html>")
    return md_path


def _summary(result: Any, by_rule: dict[str, int], rates: dict[str, Any], caveats: list[str]) -> dict[str, Any]:
    """Every number of the report (``summary.json``): sessions, rates, rigs, evaluations, timings, controls."""
    rigs = {r.name: r for r in result.protocol.rig}
    return {
        "protocol": result.protocol.name,
        "protocol_file": result.protocol.source,
        "n_sessions": len(result.session_paths),
        "n_trained": result.n_trained,
        "n_reused": result.n_reused,
        "n_diverged": result.n_diverged,
        "networks_per_rule": by_rule,
        "learning_rates": rates["per_rule"],
        "learning_rate_scales": rates["scales"],
        "rigs": {name: {k: v for k, v in vars(r).items()} for name, r in rigs.items()},
        "evaluations": [{"rig": e["rig"], "decoder": e["decoder"], "control": e["control"], **e["summary"]}
                        for e in result.evaluations],
        "timings_s": result.timings,
        "controls": _extras(result.evaluations),
        "beyond_behaviour": _extras(result.evaluations).get("beyond_behaviour"),
        "caveats": caveats,
    }


def _write_predictions(evaluations: Sequence[dict[str, Any]], path: Path) -> None:
    """``predictions.csv``: one row per (evaluation, split, test network)."""
    with open(path, "w") as fh:
        fh.write("rig,decoder,control,split,network_id,rule,predicted_rule,n_layers,correct\n")
        for e in evaluations:
            for row in e["result"].predictions:
                fh.write(f"{e['rig']},{e['decoder']},{e['control']},{row['split']},{row['network_id']},"
                         f"{row['rule']},{row['predicted_rule']},{row['n_layers']},{int(row['correct'])}\n")


def _rig_lines(rigs: Sequence[Any]) -> list[str]:
    """One Markdown list item per rig of the protocol: what it keeps and adds."""
    rig_lines = []
    for r in rigs:
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
    return rig_lines


def _report_markdown(result: Any, ground_truths: Sequence[GroundTruth], by_rule: dict[str, int],
                     rates: dict[str, Any], caveats: list[str]) -> list[str]:
    """The lines of ``report.md``: the networks, the rigs, the accuracy table, the figures with their captions,
    the controls and what the recording adds over behaviour."""
    from virtual_lab.analysis.behaviour import behaviour_markdown

    protocol = result.protocol
    rows = _table_rows(result.evaluations)
    md = [f"# virtual_lab report: {protocol.name}", ""]
    if protocol.description:
        md += [protocol.description, ""]
    n_diverged_runs = sum(gt.diverged for gt in ground_truths)
    observables = ("the paper's 24 admissible observables" if protocol.decoder.observables == "admissible"
                   else "all 45 observables")
    md += [
        f"{len(result.session_paths)} networks "
        f"({', '.join(f'{_short(r)} {by_rule[r]}' for r in _rule_order(by_rule))}); "
        f"{_learning_rate_text(rates)}; {result.n_diverged} diverged. "
        f"{result.n_trained} trained in this run, {result.n_reused} reused from earlier sessions.",
        "",
        f"The decoder sees one layer of one network at a time ({observables}, or those of them a rig measures, "
        "at every observed checkpoint plus the layer's depth position). Splits are grouped by network: no "
        "network has layers on both sides. *Network accuracy* combines the layer predictions of each test "
        "network (mean class probability). Mean ± s.e.m. over splits.",
        "",
        *(["## Caveats", "", *[f"- {c}" for c in caveats], ""] if caveats else []),
        "## Rig settings", "", *_rig_lines(protocol.rig), "",
        "## Accuracy", "",
        "| " + " | ".join(_HEADER) + " |",
        "|" + "---|" * len(_HEADER),
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
        "The *initialization only* control decodes from checkpoint 0 alone; it must sit at chance, because "
        "the rule can only show through learning.",
        "",
        "![accuracy](accuracy.png)", "",
        "*Accuracy of every row of the table*" + (" (the controls below the grey line)" if any(
            e["control"] for e in result.evaluations) else "") + ": layer level (each layer of a test network "
        "decoded alone) and network level (a network's layer predictions combined), mean ± s.e.m. over the "
        "splits. Dashed tick: the row's chance level, 1 / the number of classes it decodes.", "",
        "## Confusion (network level)", "", "![confusion](confusion.png)", "",
        "*One matrix per rig and decoder (controls left out)*: rows are the true rule, columns the predicted "
        "rule; a cell is the fraction of the row's test networks, pooled over the splits, predicted as the "
        "column's rule (rows sum to 1).", "",
        "## Learning curves", "", "![learning curves](learning_curves.png)", "",
        "*Probe accuracy (left) and training loss (right, log scale) at each checkpoint*. Line: the median over "
        "the networks of each rule (n in the legend; every learning rate and seed pooled"
        + (f"; the {n_diverged_runs} diverged runs left out" if n_diverged_runs else "") + "). Band: the "
        f"{_band_text()} of those networks, so it stays within the recorded values.", "",
        *_controls_markdown(result.evaluations),
        *behaviour_markdown([_extras(result.evaluations).get("beyond_behaviour")]),
        "Files: `summary.json` (all numbers), `predictions.csv` (one row per split x test network).", "",
    ]
    return md
