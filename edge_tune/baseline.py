"""The trained model compression starts from: trained once and cached, or the user's checkpoint.

The cache key is (model, data set, seed, epochs) plus a digest of every other setting that
changes the weights, so a second run with the same settings reuses the weights in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_tune.config import Config
from edge_tune.data import Splits, num_classes
from edge_tune.deploy import Artifact, Images, deploy
from edge_tune.errors import UserError, first_line
from edge_tune.export import weight_stats
from edge_tune.models import create_model
from edge_tune.output import log_stderr
from edge_tune.train import evaluate, train

Log = Callable[[str], None]


def cache_dir(config: Config) -> Path:
    """Where baselines are cached: ``cache_dir``, else $EDGE_TUNE_CACHE, else ~/.cache/edge_tune."""
    root = config.cache_dir or os.environ.get("EDGE_TUNE_CACHE") or "~/.cache/edge_tune"
    return Path(root).expanduser() / "baselines"


def cache_key(config: Config) -> str:
    """``{model}-{data}-s{seed}-e{epochs}-{digest}``; the digest covers data and optimiser."""
    b = config.baseline
    data = {k: v for k, v in asdict(config.data).items() if k != "root"}  # moved data: same
    settings = {"data": data, "lr": b.lr, "wd": b.weight_decay}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config.model}-{config.data.name}-s{b.seed}-e{b.epochs}-{digest}"


def load_checkpoint(path: str | Path, model: nn.Module) -> None:
    """Load a state_dict (or Distiller's ``{"state_dict": ...}`` with ``module.`` prefixes).

    Only tensors are unpickled (``weights_only=True``); a file that is not such a checkpoint,
    or that does not fit the model, is a UserError naming ``baseline.checkpoint``.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"baseline.checkpoint: no such file {str(file)!r}")
    try:
        state: Any = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        reason = first_line(err)
        raise UserError(f"baseline.checkpoint: {str(file)!r} is not a readable torch "
                        f"state_dict ({reason[:120]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"baseline.checkpoint: {str(file)!r} holds a {type(state).__name__}, "
                        "expected a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state)
                   if not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else
                  f"unexpected {unexpected[:3]}" if unexpected else f"shape mismatch {wrong[:3]}")
        raise UserError(f"baseline.checkpoint: {str(file)!r} does not fit model "
                        f"{type(model).__name__} ({detail})")
    model.load_state_dict(state)


def check_baseline(config: Config) -> None:
    """Fail early on a checkpoint that is missing, unreadable or of another model."""
    if config.baseline.checkpoint is not None:
        load_checkpoint(config.baseline.checkpoint,
                        create_model(config.model, num_classes(config.data)))


def _save_atomic(state: dict[str, torch.Tensor], meta: dict[str, Any], folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    torch.save(state, tmp / "model.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    try:
        tmp.rename(folder)
    except OSError:  # another process cached the same baseline first; theirs is as good
        for file in tmp.iterdir():
            file.unlink()
        tmp.rmdir()


def baseline_model(config: Config, splits: Splits,
                   log: Log = print) -> tuple[nn.Module, dict[str, Any]]:
    """The uncompressed trained model and facts about it (source, torch top-1/top-5, seconds)."""
    model = create_model(config.model, splits.num_classes)
    b = config.baseline
    if b.checkpoint is not None:
        load_checkpoint(b.checkpoint, model)
        model.eval()
        return model, {"source": str(b.checkpoint)}
    folder = cache_dir(config) / cache_key(config)
    if (folder / "model.pt").is_file():
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu",
                                         weights_only=True))
        model.eval()
        meta = json.loads((folder / "meta.json").read_text())
        log(f"baseline: cached {folder}")
        return model, {**meta, "source": str(folder), "cached": True}
    log(f"baseline: training {config.model} on {config.data.name} for {b.epochs} epochs")
    start = time.perf_counter()
    torch.manual_seed(b.seed)
    model = create_model(config.model, splits.num_classes)
    losses = train(model, splits.train, b.epochs, b.lr, b.weight_decay,
                   config.data.batch_size, seed=b.seed)
    top1, top5 = evaluate(model, splits.test)
    meta = {"top1_torch": top1, "top5_torch": top5, "train_seconds": time.perf_counter() - start,
            "final_loss": losses[-1] if losses else None, "key": cache_key(config)}
    _save_atomic(model.state_dict(), meta, folder)
    log(f"baseline: top-1 {top1:.2f}% after {meta['train_seconds']:.1f} s, cached in {folder}")
    return model, {**meta, "source": str(folder), "cached": False}


@dataclass
class Baseline:
    """The trained, uncompressed model, exported and evaluated as deployed."""

    model: nn.Module
    info: dict[str, Any]  # source, torch accuracy, training seconds, cached or not
    shapes: dict[str, tuple[int, ...]]  # weight name -> shape, for verification
    artifact: Artifact

    def state(self) -> dict[str, torch.Tensor]:
        """The weights as CPU tensors (what trials on other nodes start from)."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}


def prepare_baseline(config: Config, splits: Splits, test: Images, out: Path,
                     log: Log = log_stderr) -> Baseline:
    """Train (or load from cache / checkpoint) the baseline, export it and measure its accuracy."""
    model, info = baseline_model(config, splits, log)
    out.mkdir(parents=True, exist_ok=True)
    shapes = {k: v[0] for k, v in weight_stats(model).items()}
    log("baseline: export and accuracy as deployed")
    artifact = deploy(model, False, splits, config, out, shapes, test, name="baseline")
    return Baseline(model, info, shapes, artifact)
