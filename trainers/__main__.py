"""``python -m trainers``: train one GAN from a config file, no Ray or MLflow.

Writes ``<out>/metrics.jsonl`` (one line per evaluation), ``<out>/checkpoint.pt``
and ``<out>/result.json``; ``--resume`` continues from ``<out>/checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from trainers.config import ConfigError, TrainConfig


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(path: Path | None, overrides: list[str]) -> TrainConfig:
    data: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        data[key.strip()] = _parse_value(value)
    try:
        return TrainConfig.from_dict(data)
    except TypeError as e:
        raise ConfigError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="YAML or JSON file of TrainConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=Path("trainer_run"), help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    try:
        from trainers.loop import CHECKPOINT_FILE, Progress, train

        cfg = load_config(args.config, args.overrides)
        args.out.mkdir(parents=True, exist_ok=True)
        log = (args.out / "metrics.jsonl").open("a")

        def report(pr: Progress) -> None:
            log.write(json.dumps({"step": pr.step, **pr.metrics}) + "\n")
            log.flush()
            pr.save_checkpoint(args.out)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in pr.metrics.items() if "/" not in k)
            print(f"step {pr.step}/{pr.iterations}: {shown}", flush=True)

        resume = args.out / CHECKPOINT_FILE if args.resume else None
        if resume is not None and not resume.is_file():
            raise ConfigError(f"--resume: no checkpoint at {resume}")
        result = train(cfg, report=report, resume_from=resume)
        summary = {k: v for k, v in result.__dict__.items() if k != "history"}
        (args.out / "result.json").write_text(json.dumps(summary, indent=2))
        print(f"{result.status} after {result.step} iterations; results in {args.out}")
        return 0
    except ConfigError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
