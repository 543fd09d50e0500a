"""``virtual-lab bench``: time the population engine against one-at-a-time training and write JSON.

Also runs as a script: ``python -m virtual_lab.commands.bench [options]`` (the options of ``virtual-lab bench``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from virtual_lab.commands import configure_logging, run_parsed

DESCRIPTION = ("Measure network-steps/s of the batched population engine against a one-network-at-a-time "
               "nn.Module + torch.optim reference on the same networks, the engine's FLOP/s against the "
               "measured float32 matmul peak, and the cost of checkpoint recording (loss on the evaluation "
               "subset and on the whole training set); write JSON.")
EPILOG = ("example:\n  virtual-lab bench --threads 2 --output bench.json\n"
          "  virtual-lab bench --decode recordings/quickstart   # also: decode with an empty, then a warm cache\n"
          "  python -m virtual_lab.commands.bench --architectures mlp --networks 16 --epochs 2")


def _run(args: argparse.Namespace) -> int:
    from virtual_lab.bench import format_benchmark, measure_matmul_peak, run_benchmark, write_benchmark

    try:
        hidden = tuple(int(v) for v in args.hidden_sizes.split(","))
    except ValueError:
        hidden = ()
    if not hidden or min(hidden) < 1:
        raise ValueError(f"--hidden-sizes must be comma-separated positive integers, got {args.hidden_sizes!r}")
    architectures = [a.strip() for a in args.architectures.split(",") if a.strip()]
    unknown = [a for a in architectures if a not in ("mlp", "cnn")]
    if not architectures or unknown:
        raise ValueError(f"--architectures must list mlp and/or cnn, got {args.architectures!r}")
    if args.eval_subset is not None and args.eval_subset < 0:
        raise ValueError(f"--eval-subset must be >= 0 (0 = the whole training set), got {args.eval_subset}")
    if args.decode is not None and not args.decode.exists():
        raise ValueError(f"--decode {args.decode}: no such file or folder of sessions")
    if args.decode_repeats < 1:
        raise ValueError(f"--decode-repeats must be >= 1, got {args.decode_repeats}")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        peak = measure_matmul_peak(size=args.peak_size, device=args.device)  # one peak for every architecture
    finally:
        torch.set_num_threads(threads)
    results = {}
    for architecture in architectures:
        conv = architecture != "mlp"
        results[architecture] = run_benchmark(
            architecture=architecture, n_networks=args.cnn_networks if conv else args.networks,
            hidden_sizes=hidden, batch_size=args.batch_size, n_epochs=args.cnn_epochs if conv else args.epochs,
            n_threads=args.threads, device=args.device,
            n_reference_networks=min(args.reference_networks, 4) if conv else args.reference_networks,
            n_reference_steps=args.reference_steps, peak_size=args.peak_size, peak=peak,
            eval_subset=args.eval_subset)
        print(format_benchmark(results[architecture]))
    if args.decode is not None:
        results["decode"] = decode_timings(args.decode, args.decode_repeats)
        d = results["decode"]
        print(f"decode {args.decode}: {d['first_s']:.1f} s with an empty observable cache, {d['second_s']:.1f} s "
              f"with the cache it wrote ({d['speedup']:.2f}x; features {d['first_features_s']:.1f} s -> "
              f"{d['second_features_s']:.1f} s); medians of {d['repeats']}")
    path = write_benchmark(results, args.output)
    print(f"written: {path}")
    return 0


def decode_timings(recordings: Path, repeats: int = 3, decode_args: Sequence[str] = ()) -> dict:
    """Wall-clock seconds of ``virtual-lab decode RECORDINGS`` (default decoder) run twice in a row with a fresh
    observable cache: first with the cache empty, then with the cache the first run wrote.

    Each run is its own process (imports included, as a user sees it); the cache and the outputs go to a
    temporary folder, so the recordings' own cache is neither used nor changed.

    Parameters
    ----------
    recordings : Path
        Session files or a folder of them.
    repeats : int, default=3
        Pairs of runs; the figures are medians.
    decode_args : sequence of str, default=()
        Further options of every decode run (default: none, the default decoder and analyses).

    Returns
    -------
    dict
        ``first_s``, ``second_s``, ``speedup`` (first / second), ``first_features_s`` and ``second_features_s``
        (reading sessions and computing observables, from each run's ``summary.json``), every run's figures
        (``runs``) and ``repeats``.

    Raises
    ------
    OSError
        A decode run failed (its last line of error output is in the message).
    """
    import json
    import statistics
    import subprocess
    import tempfile
    import time

    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="virtual-lab-bench-decode-") as tmp:
            pair = {}
            for label in ("first", "second"):
                output = Path(tmp) / label
                command = [sys.executable, "-m", "virtual_lab", "decode", str(recordings), "--cache-dir",
                           str(Path(tmp) / "cache"), "--output-dir", str(output), "-q", *decode_args]
                started = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                elapsed = time.perf_counter() - started
                if not (output / "summary.json").is_file():  # exit status 1 with a summary: files were skipped
                    lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
                    raise OSError(f"virtual-lab decode {recordings} failed (exit status {done.returncode}): "
                                  f"{lines[-1]}")
                summary = json.loads((output / "summary.json").read_text())
                pair[f"{label}_s"] = elapsed
                pair[f"{label}_features_s"] = summary["timings_s"]["features"]
            runs.append(pair)
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    return {"recordings": str(recordings), "repeats": repeats, **median,
            "speedup": median["first_s"] / median["second_s"], "runs": runs}


def add_parser(subparsers) -> None:
    """Add the ``bench`` subcommand."""
    parser = subparsers.add_parser("bench", help="benchmark the population training engine", description=DESCRIPTION,
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--architectures", default="mlp,cnn",
                        help="what to measure: mlp, cnn or both (default mlp,cnn)")
    parser.add_argument("--networks", type=int, default=64, help="MLP networks in the population (default 64)")
    parser.add_argument("--cnn-networks", type=int, default=32, help="CNN networks in the population (default 32)")
    parser.add_argument("--cnn-epochs", type=int, default=5, help="CNN epochs of digits (default 5: 120 steps)")
    parser.add_argument("--hidden-sizes", default="128,128", help="hidden layer sizes (default 128,128)")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step (default 64)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of digits (default 20: 480 steps)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="engine device (default cpu)")
    parser.add_argument("--reference-networks", type=int, default=8,
                        help="networks the one-at-a-time reference trains (default 8)")
    parser.add_argument("--reference-steps", type=int, default=100,
                        help="steps per reference network (default 100)")
    parser.add_argument("--peak-size", type=int, default=1024,
                        help="side of the square matmul that measures the peak (default 1024)")
    parser.add_argument("--eval-subset", type=int, default=None,
                        help="training examples of the recorded loss (default: the protocols' [training] "
                             "eval_subset; 0 = the whole training set)")
    parser.add_argument("--decode", type=Path, default=None, metavar="RECORDINGS",
                        help="also time 'virtual-lab decode RECORDINGS' with an empty observable cache and again "
                             "with the cache it wrote (a temporary cache; the recordings are not changed)")
    parser.add_argument("--decode-repeats", type=int, default=3,
                        help="pairs of decode runs whose medians are reported (default 3)")
    parser.add_argument("--output", type=Path, default=Path("bench.json"), help="JSON output (default bench.json)")
    parser.set_defaults(func=_run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run as a script: ``python -m virtual_lab.commands.bench [virtual-lab bench options]``.

    Parameters
    ----------
    argv : sequence of str, optional
        Default: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status, as ``virtual-lab bench`` returns it.
    """
    parser = argparse.ArgumentParser(prog="python -m virtual_lab.commands.bench", description=DESCRIPTION,
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    _add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(args.verbose)
    return run_parsed(args)


if __name__ == "__main__":
    raise SystemExit(main())
