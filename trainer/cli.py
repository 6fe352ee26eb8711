"""Train a video violence classifier: sample frames, cache backbone features, train, evaluate, predict.

`python -m trainer <command>`: this module parses the arguments and maps errors to exit
codes; each command lives in its own module with a `run(args) -> int`; modules are imported
lazily so that `info`, `scan` or a usage error never pays for importing TensorFlow, and
each command checks what it can (paths, flags, the cache) before importing it.
Exit codes: 0 success, 2 a mistake the user must fix (one line on stderr), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trainer.errors import UsageError


def _count(value: str) -> int:
    """An argparse type: a whole number >= 0 (a bad --gpus fails here, before anything loads)."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0 = every visible GPU), got {n}")
    return n


def _gpus(value: str) -> int | str:
    """train --gpus: a count (0 = every visible GPU) or `auto`."""
    return "auto" if value.strip().lower() == "auto" else _count(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors are usage errors too: exit 2
        self.print_usage(sys.stderr)
        raise UsageError(message + _did_you_mean(self, message))


def _did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    """' (did you mean --epochs?)' for a misspelt flag in argparse's "unrecognized arguments: ..." message."""
    import difflib

    if not message.startswith("unrecognized arguments:"):
        return ""
    parsers = [parser] + [sp for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                          for sp in a.choices.values()]  # argparse reports a verb's unknown flags at the top
    known = sorted({o for p in parsers for action in p._actions for o in action.option_strings if o.startswith("--")})
    hints = []
    for word in message.split(":", 1)[1].split():
        flag = word.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75) if flag.startswith("--") else []
        hints += [f"{flag} -> {close[0]}"] if close else []
    return f" (did you mean: {', '.join(hints)}?)" if hints else ""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m trainer", description=__doc__.splitlines()[0],
                epilog="`python -m trainer COMMAND --help` lists a command's options.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                           title="commands")

    s = sub.add_parser("synth", help="write a labelled set of synthetic motion videos")
    s.add_argument("--out", required=True, help="dataset folder to create (class-folder layout); with --long, the .mp4")
    s.add_argument("--videos", type=int, help="number of videos, half per class")
    s.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same videos (default 0)")
    s.add_argument("--frames", type=int, default=48, help="frames per video")
    s.add_argument("--size", type=int, default=96, help="frame side in pixels")
    s.add_argument("--long", type=float, metavar="SECONDS", help="instead: ONE calm video this long with violent sections")
    s.add_argument("--violent", action="append", metavar="START:END", help="with --long: a violent span in seconds "
                   "(repeatable; default the middle fifth)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(module="trainer.synth")

    s = sub.add_parser("extract", help="sample frames and cache backbone features for every video")
    s.add_argument("--dataset-path", required=True, help="the dataset folder (class-folder or split-folder layout)")
    s.add_argument("--cache-dir", required=True,
                   help="feature cache to create or bring up to date (resumable: done videos are skipped)")
    s.add_argument("--config", help="YAML config (default: built-in defaults = configs/train.yaml)")
    s.add_argument("--weights", help="imagenet | none | PATH (overrides data.weights)")
    s.add_argument("--workers", type=int, help="video-decoding processes (overrides data.workers)")
    s.add_argument("--gpus", type=_count, help="GPUs that extract (default 0: every visible GPU)")
    s.add_argument("--allow-label-conflicts", action="store_true",
                   help="keep identical videos found under both classes (data.allow_label_conflicts)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(module="trainer.extract")

    s = sub.add_parser("scan", help="what a dataset holds, from container headers (decodes nothing)",
                       description="What a dataset holds: videos, durations, resolutions, codecs, duplicates, "
                                   "label conflicts (container headers only, nothing decoded).")
    s.add_argument("dataset", help="the dataset folder (class-folder or split-folder layout)")
    s.add_argument("--config", help="YAML config: class names, extra video extensions, frames per video")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--allow-label-conflicts", action="store_true",
                   help="do not fail on identical videos under both classes")
    s.set_defaults(module="trainer.scan")

    s = sub.add_parser("info", help="summarise a feature cache")
    s.add_argument("--cache-dir", required=True, help="the feature cache that extract wrote")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(module="trainer.info")

    s = sub.add_parser("train", help="train the BiLSTM-attention classifier on a feature cache")
    s.add_argument("--cache-dir", required=True, help="the feature cache that extract wrote")
    s.add_argument("--output-dir", required=True,
                   help="where checkpoints, best_model.keras, model_info.json and logs go")
    s.add_argument("--dataset-path", help="accepted for the seed's command line; training reads the cache")
    s.add_argument("--config", help="YAML config (default: built-in defaults = configs/train.yaml)")
    s.add_argument("--epochs", type=int, help="epochs to train (overrides train.epochs)")
    s.add_argument("--batch-size", type=int, help="GLOBAL batch size")
    s.add_argument("--gpus", type=_gpus, help="GPUs to train on: N (0 = all) or auto, the faster of 1 and all, "
                   "measured at the start (default: train.gpus)")
    s.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed_float16 on GPUs where it pays (overrides train.mixed_precision)")
    s.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the training step with XLA where Keras applies it (overrides train.xla)")
    s.add_argument("--use-focal-loss", action=argparse.BooleanOptionalAction, default=None,
                   help="focal loss instead of cross-entropy (overrides train.focal_loss)")
    s.add_argument("--use-class-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="weight the classes by their share of the training split (overrides train.class_weights)")
    s.add_argument("--resume", action="store_true", help="continue after the last completed epoch")
    s.add_argument("--no-evaluate", action="store_true", help="skip the evaluation at the end")
    s.add_argument("--use-cache-settings", action="store_true",
                   help="train on a cache whose feature settings differ from the config's data section")
    s.add_argument("--dry-run", action="store_true",
                   help="check the flags, the config (and the cache, if it exists) and exit: no training, "
                        "no TensorFlow (what `python -m deploy check` runs)")
    s.set_defaults(module="trainer.train")

    s = sub.add_parser("evaluate", help="test-split metrics and plots for a trained model",
                       description="Test-split metrics and plots for a trained model (the validation split when "
                                   "the cache has no test split).")
    s.add_argument("--cache-dir", required=True, help="the feature cache the model was trained on")
    s.add_argument("--model", required=True, help="the trained model (.keras), e.g. OUTPUT_DIR/best_model.keras")
    s.add_argument("--output-dir", help="where metrics.json and plots/ go (default: the model's folder)")
    s.set_defaults(module="trainer.evaluate")

    s = sub.add_parser("predict", help="classify video files, one JSON line each",
                       description="Classify video files, one JSON line each; long videos as a timeline of "
                                   "windows (--window). Exit 2 if any file could not be read.")
    s.add_argument("files", nargs="+", metavar="FILE", help="video files to classify")
    s.add_argument("--model", required=True,
                   help="the trained model (.keras); model_info.json beside it says how to make its features")
    s.add_argument("--weights", help="backbone weights (default: as recorded with the model)")
    s.add_argument("--window", nargs="?", const="auto", metavar="SECONDS",
                   help="long videos: one prediction per window of SECONDS (alone: the training clips' length)")
    s.add_argument("--stride", metavar="SECONDS", help="seconds between window starts (default: half the window)")
    s.add_argument("--threshold", type=float, default=0.5, help="violent at or above this probability")
    s.add_argument("--plot", metavar="PNG", help="long videos: probability over time with the segments shaded")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(module="trainer.predict")

    s = sub.add_parser("export", help="the model as a SavedModel: features in, probabilities out",
                       description="Write the model as a TensorFlow SavedModel (features in, probabilities out).")
    s.add_argument("--model", required=True, help="the trained model (.keras) to export")
    s.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    s.set_defaults(module="trainer.export")
    return p


def main(argv: list[str] | None = None) -> int:
    from trainer import native_log

    native_log.quiet_tensorflow()  # before anything can import TensorFlow
    try:
        args = build_parser().parse_args(argv)
        return importlib.import_module(args.module).run(args) or 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
