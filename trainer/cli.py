"""`python -m trainer <command>`: argument parsing and exit codes only.

Each command lives in its own module with a `run(args) -> int`; modules are imported
lazily so that `info` or a usage error never pays for importing TensorFlow.
Exit codes: 0 success, 2 a mistake the user must fix (one line on stderr), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trainer.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors are usage errors too: exit 2
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m trainer", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("synth", help="write a labelled set of synthetic motion videos")
    s.add_argument("--out", required=True, help="dataset folder to create (class-folder layout); with --long, the .mp4")
    s.add_argument("--videos", type=int, help="number of videos, half per class")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--frames", type=int, default=48, help="frames per video")
    s.add_argument("--size", type=int, default=96, help="frame side in pixels")
    s.add_argument("--long", type=float, metavar="SECONDS", help="instead: ONE calm video this long with violent sections")
    s.add_argument("--violent", action="append", metavar="START:END", help="with --long: a violent span in seconds "
                   "(repeatable; default the middle fifth)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(module="trainer.synth")

    s = sub.add_parser("extract", help="sample frames and cache backbone features for every video")
    s.add_argument("--dataset-path", required=True)
    s.add_argument("--cache-dir", required=True)
    s.add_argument("--config", help="YAML config (default: built-in defaults = configs/train.yaml)")
    s.add_argument("--weights", help="imagenet | none | PATH (overrides data.weights)")
    s.add_argument("--workers", type=int, help="video-decoding processes (overrides data.workers)")
    s.add_argument("--gpus", type=int, help="GPUs that extract (default 0: every visible GPU)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(module="trainer.extract")

    s = sub.add_parser("info", help="summarise a feature cache")
    s.add_argument("--cache-dir", required=True)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(module="trainer.info")

    s = sub.add_parser("train", help="train the BiLSTM-attention classifier on a feature cache")
    s.add_argument("--cache-dir", required=True)
    s.add_argument("--output-dir", required=True)
    s.add_argument("--dataset-path", help="accepted for the seed's command line; training reads the cache")
    s.add_argument("--config")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int, help="GLOBAL batch size")
    s.add_argument("--gpus", type=int, help="number of GPUs to use, 0 = all (default: train.gpus, auto: the "
                   "faster of 1 and all, measured at the start)")
    s.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--use-focal-loss", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--use-class-weights", action=argparse.BooleanOptionalAction, default=None)
    s.add_argument("--resume", action="store_true", help="continue after the last completed epoch")
    s.add_argument("--no-evaluate", action="store_true", help="skip the test-split evaluation at the end")
    s.set_defaults(module="trainer.train")

    s = sub.add_parser("evaluate", help="test-split metrics and plots for a trained model")
    s.add_argument("--cache-dir", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--output-dir", help="where metrics.json and plots/ go (default: the model's folder)")
    s.set_defaults(module="trainer.evaluate")

    s = sub.add_parser("predict", help="classify video files, one JSON line each (exit 2 if any could not be read)")
    s.add_argument("files", nargs="+")
    s.add_argument("--model", required=True)
    s.add_argument("--weights", help="backbone weights (default: as recorded with the model)")
    s.add_argument("--window", nargs="?", const="auto", metavar="SECONDS",
                   help="long videos: one prediction per window of SECONDS (alone: the training clips' length)")
    s.add_argument("--stride", metavar="SECONDS", help="seconds between window starts (default: half the window)")
    s.add_argument("--threshold", type=float, default=0.5, help="violent at or above this probability")
    s.add_argument("--plot", metavar="PNG", help="long videos: probability over time with the segments shaded")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(module="trainer.predict")

    s = sub.add_parser("export", help="write the model as a TensorFlow SavedModel (features in, probabilities out)")
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    s.set_defaults(module="trainer.export")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return importlib.import_module(args.module).run(args) or 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
