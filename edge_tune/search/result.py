"""What a tuner trial reports, typed: built once per report by the trainable, read by the
stopper, the searchers, the ledger and the report.

A trial reports three times over: ``latency`` (its graph benchmarked before fine-tuning:
fine-tuning changes weights, not latency), ``epoch`` (validation top-1 after each fine-tuning
epoch) and ``done`` (accuracy as deployed, size, timings). Ray Tune takes dicts, so
:meth:`TrialResult.metrics` flattens a result once (its keys are those of ``trials.jsonl``)
and :meth:`TrialResult.of` reads one back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from edge_tune.search.objective import objective

# error: the trial raised (its own fault, not a lost process): reported, not retried
Phase = Literal["latency", "epoch", "done", "error"]
# seconds of the steps of a trial's final build (compress: fine-tuning included)
TIMINGS = ("compress_s", "export_s", "quantize_s", "verify_eval_s")


@dataclass(frozen=True)
class Probe:
    """The trial's graph measured at the benchmark actor, interleaved with the baseline
    (ms, batch 1), and where and how long it took."""

    latency_ms: float  # median
    latency_p90_ms: float
    fps: float
    cv: float  # of the timed samples
    ratio_cv: float  # of the per-round ratios to the baseline
    bench_sessions: int
    baseline_latency_ms: float  # median, same session
    speedup: float  # baseline / model
    bench_wait_s: float  # from asking until the device was taken
    bench_call: int
    bench_node_id: str | None
    bench_pid: int
    bench_start: float  # s since the epoch
    bench_end: float
    graph_s: float  # export (+ int8) of the probe's graph
    probe_compress_s: float  # filters removed on a copy, no fine-tuning
    trial_node_id: str
    trial_node_ip: str
    bench_actor: str | None = None  # the benchmark actor's name (several on a node: which)


@dataclass(frozen=True)
class Deployed:
    """The fine-tuned model as the device runs it (phase ``done``)."""

    val_top5: float  # %, as deployed
    baseline_val_top1: float  # %, as deployed
    macs: int  # per batch-1 inference
    params: int
    reached: bool  # every layer's compression is in ONNX and OpenVINO
    epochs_run: int
    trial_s: float  # the whole trial
    trial_device: str  # where it was compressed and fine-tuned (cpu, cuda:0)
    timings: dict[str, float] = field(default_factory=dict)  # TIMINGS that ran
    float_layers: int = 0  # compute layers int8 left in float (quantize.max_drop)


@dataclass(frozen=True)
class Replay:
    """A result a resumed run reports again from its ledger instead of running the trial."""

    from_id: str  # the trial id that ran it
    checkpoint: str  # its folder ("" when it kept none)
    reason: str  # why it was stopped ("" when it completed)


@dataclass(frozen=True)
class TrialResult:
    """One report of a tuner trial (see the module docstring)."""

    phase: Phase
    latency_ratio: float  # model / baseline median latency, same session (lower is faster)
    threshold_top1: float  # % of validation top-1 a trial must reach
    val_top1: float | None = None  # %: torch f32 after an epoch, as deployed when done
    epoch: int = 0  # epochs done (phase done: epochs run)
    finetune_epochs: int = 0  # epochs the schedule asks for
    int8: bool = False
    finetunes: bool = True  # False: the schedule removes nothing, so it fine-tunes nothing
    epoch_s: float | None = None  # the last epoch's seconds (phase epoch)
    predicted_ratio: float | None = None  # what the device's profile predicted (allocation)
    # int8 asked: the int8 graph's median latency / the same graph's in float, one session
    # (> 1: int8 ran slower, and float was deployed unless quantize.keep_slower_int8)
    int8_vs_float: float | None = None
    device_hangs: int = 0  # benchmark calls of this trial that hung (its actor restarted)
    error: str | None = None  # phase error: the exception's type and message
    probe: Probe | None = None
    deployed: Deployed | None = None
    replay: Replay | None = None

    @property
    def objective(self) -> float:
        """The penalty objective (lower is better); before accuracy is known, the latency
        ratio, as if the threshold held (what the latency alone allows)."""
        if self.val_top1 is None:
            return self.latency_ratio
        return objective(self.val_top1, self.latency_ratio, 1.0, self.threshold_top1)

    @property
    def feasible(self) -> bool:
        """Finished, with validation top-1 at or above the threshold."""
        return self.phase == "done" and self.val_top1 is not None \
            and self.val_top1 >= self.threshold_top1

    def metrics(self) -> dict[str, Any]:
        """The flat dict Ray Tune, the searchers and W&B take (the keys of trials.jsonl)."""
        out: dict[str, Any] = {"latency_ratio": self.latency_ratio,
                               "threshold_top1": self.threshold_top1}
        if self.probe is not None:
            out.update(dataclasses.asdict(self.probe))
        out.update(finetune_epochs=self.finetune_epochs, int8=self.int8,
                   finetunes=self.finetunes, phase=self.phase, epoch=self.epoch,
                   val_top1=self.val_top1, objective=self.objective)
        if self.epoch_s is not None:
            out["epoch_s"] = self.epoch_s
        if self.predicted_ratio is not None:
            out["predicted_ratio"] = self.predicted_ratio
        if self.int8_vs_float is not None:
            out["int8_vs_float"] = self.int8_vs_float
        if self.device_hangs:
            out["device_hangs"] = self.device_hangs
        if self.error is not None:  # raised before its latency was known: no figures but
            out["trial_error"] = self.error  # the objective Tune insists on (NaN: learnt from
            out = {k: v for k, v in out.items()  # by no searcher: an error)
                   if k == "objective" or not (isinstance(v, float) and v != v)}
        if self.deployed is not None:
            d = self.deployed
            out.update(epochs_run=d.epochs_run, val_top5=d.val_top5,
                       baseline_val_top1=d.baseline_val_top1, feasible=self.feasible,
                       macs=d.macs, params=d.params, reached=d.reached, trial_s=d.trial_s,
                       **d.timings, trial_device=d.trial_device,
                       int8_float_layers=d.float_layers)
        if self.replay is not None:
            out.update(replayed_from=self.replay.from_id,
                       replayed_checkpoint=self.replay.checkpoint,
                       stopped_reason=self.replay.reason)
        return out

    @classmethod
    def of(cls, metrics: dict[str, Any]) -> TrialResult:
        """A result read back from a flat dict (:meth:`metrics`, a trials.jsonl line or what
        Tune hands a searcher: keys of Tune's own are ignored; missing optional ones are
        None)."""
        m = metrics
        fields: dict[str, Any] = {f.name: m.get(f.name) for f in dataclasses.fields(Probe)}
        probe = Probe(**fields) if "latency_ms" in m else None
        deployed = None
        if "macs" in m:
            deployed = Deployed(
                m["val_top5"], m["baseline_val_top1"], int(m["macs"]), int(m["params"]),
                bool(m["reached"]), int(m["epochs_run"]), m["trial_s"], m["trial_device"],
                {k: m[k] for k in TIMINGS if k in m}, int(m.get("int8_float_layers", 0)))
        replay = Replay(m["replayed_from"], m.get("replayed_checkpoint", ""),
                        m.get("stopped_reason", "")) if "replayed_from" in m else None
        top1 = m.get("val_top1")
        return cls(cast(Phase, m.get("phase", "done")), float(m["latency_ratio"]),
                   float(m["threshold_top1"]), None if top1 is None else float(top1),
                   int(m.get("epoch", 0)), int(m.get("finetune_epochs", 0)),
                   bool(m.get("int8", False)), bool(m.get("finetunes", True)),
                   m.get("epoch_s"), m.get("predicted_ratio"), m.get("int8_vs_float"),
                   int(m.get("device_hangs", 0)), m.get("trial_error"), probe, deployed,
                   replay)


def read_result(metrics: dict[str, Any] | None) -> TrialResult | None:
    """The result a dict from Tune carries, or None when it carries none (an errored trial's,
    a report from before the first one)."""
    return TrialResult.of(metrics) if metrics and "latency_ratio" in metrics else None

