"""Promotion behind a quality gate, rollback, and the history of where an alias pointed.

The gate has two parts. The candidate's holdout metrics must meet the configured minimums. If the
alias already points at a version (the champion), both models are scored with their ONNX bundles
on the same rows: the candidate's holdout rows that the champion did not train on, so neither model
has seen them. The candidate may trail the champion by at most the tolerance.

MLflow aliases keep no history, so each alias's moves are kept as JSON in a registered-model tag.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from toolkit.bundle.card import ONNX_FILE, ModelCard
from toolkit.bundle.onnx_model import OnnxClassifier
from toolkit.config import PromotionPolicy
from toolkit.data.datasets import TARGET_COLUMN, hash_rows
from toolkit.errors import ConfigError, ModelNotFound, PromotionRefused, RegistryError
from toolkit.tracking.registry import download_run_artifact, get_version, read_card
from toolkit.tracking.runs import BUNDLE_DIR, HOLDOUT_FILE, SPLIT_DIR, TRAIN_ROWS_FILE
from toolkit.tracking.store import TrackingStore
from toolkit.training.evaluation import evaluate

__all__ = ["AliasEvent", "GateCheck", "PromotionOutcome", "alias_history", "promote", "rollback"]

HISTORY_TAG = "mct.alias_history.{alias}"
FORCED_TAG = "mct.forced_promotion"
# Tag values are bounded in size; the oldest moves are dropped beyond this many.
HISTORY_LIMIT = 50
LOWER_IS_BETTER = {"log_loss", "brier", "fpr", "fpr_macro"}


@dataclass(frozen=True)
class GateCheck:
    """One test of the gate and its figures."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias."""

    version: str
    action: str
    at: str
    forced: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class PromotionOutcome:
    """What `promote` or `rollback` did."""

    name: str
    alias: str
    version: str
    previous: str | None
    checks: list[GateCheck]
    changed: bool
    forced: bool = False


def promote(
    store: TrackingStore,
    name: str,
    version: str,
    policy: PromotionPolicy,
    alias: str = "champion",
    force: bool = False,
    reason: str | None = None,
) -> PromotionOutcome:
    """Point `alias` at `version` if it passes the gate; with `force`, regardless (and recorded)."""
    _check_policy(policy)
    candidate = get_version(store, name, version)
    current = _alias_target(store, name, alias)
    version = str(candidate.version)
    if current == version:
        return PromotionOutcome(name, alias, version, current, [], changed=False)
    with tempfile.TemporaryDirectory(prefix="mct-gate-") as scratch:
        checks = _gate(store, name, _run_of(candidate), current, policy, Path(scratch))
    failed = [check for check in checks if not check.passed]
    if failed and not force:
        reasons = "; ".join(check.detail for check in failed)
        raise PromotionRefused(f"version {version} of {name!r} not promoted to {alias}: {reasons} (--force overrides)")
    try:
        store.client.set_registered_model_alias(name, alias, version)
        if force:
            store.client.set_model_version_tag(name, version, FORCED_TAG, reason or "no reason given")
    except MlflowException as exc:
        raise RegistryError(f"cannot move alias {alias} of {name!r}: {exc.message}") from None
    _append_history(store, name, alias, AliasEvent(version, "promote", _now(), force, reason))
    return PromotionOutcome(name, alias, version, current, checks, changed=True, forced=force)


def rollback(store: TrackingStore, name: str, alias: str = "champion") -> PromotionOutcome:
    """Point `alias` back at the version it held before the current one."""
    history = alias_history(store, name, alias)
    current = _alias_target(store, name, alias)
    if current is None:
        raise ModelNotFound(f"model {name!r} has no {alias} to roll back")
    stack = _pointer_stack(history)
    if not stack or stack[-1] != current:
        stack.append(current)
    if len(stack) < 2:
        raise RegistryError(f"{alias} of {name!r} has no earlier version to roll back to (it is version {current})")
    target = stack[-2]
    get_version(store, name, target)
    store.client.set_registered_model_alias(name, alias, target)
    _append_history(store, name, alias, AliasEvent(target, "rollback", _now()))
    return PromotionOutcome(name, alias, target, current, [], changed=True)


def alias_history(store: TrackingStore, name: str, alias: str = "champion") -> list[AliasEvent]:
    """Every recorded move of `alias`, oldest first."""
    try:
        model = store.client.get_registered_model(name)
    except MlflowException:
        raise ModelNotFound(f"no registered model named {name!r}; see `mct models list`") from None
    raw = (model.tags or {}).get(HISTORY_TAG.format(alias=alias))
    return [AliasEvent(**event) for event in json.loads(raw)] if raw else []


def _gate(
    store: TrackingStore, name: str, run_id: str, champion: str | None, policy: PromotionPolicy, scratch: Path
) -> list[GateCheck]:
    candidate_card = read_card(store, run_id, scratch / "candidate")
    checks = [_minimum_check(candidate_card, metric, minimum) for metric, minimum in policy.min_metrics.items()]
    if champion is not None:
        checks.append(_champion_check(store, name, run_id, candidate_card, champion, policy, scratch))
    return checks


def _minimum_check(card: ModelCard, metric: str, minimum: float) -> GateCheck:
    value = card.metrics.get(metric)
    if value is None:
        return GateCheck(f"min {metric}", False, f"the candidate has no {metric} metric, which the gate requires")
    passed = value >= minimum
    relation = ">=" if passed else "<"
    return GateCheck(f"min {metric}", passed, f"holdout {metric} {value:.4f} {relation} minimum {minimum:.4f}")


def _champion_check(
    store: TrackingStore,
    name: str,
    run_id: str,
    candidate_card: ModelCard,
    champion: str,
    policy: PromotionPolicy,
    scratch: Path,
) -> GateCheck:
    metric = policy.compare_metric
    label = f"vs champion v{champion}"
    champion_run = _run_of(get_version(store, name, champion))
    champion_card = read_card(store, champion_run, scratch / "champion")
    if champion_card.classes != candidate_card.classes:
        return GateCheck(label, False, f"champion v{champion} predicts other classes, so the two cannot be compared")
    if {f.name for f in champion_card.features} - {f.name for f in candidate_card.features}:
        return GateCheck(label, False, f"champion v{champion} needs features the candidate's data lacks")
    holdout = pd.read_parquet(
        download_run_artifact(store, run_id, f"{SPLIT_DIR}/{HOLDOUT_FILE}", scratch / "candidate")
    )
    seen_by_champion = np.load(
        download_run_artifact(store, champion_run, f"{SPLIT_DIR}/{TRAIN_ROWS_FILE}", scratch / "champion")
    )
    shared = holdout[~np.isin(hash_rows(holdout), seen_by_champion)]
    truth = shared[TARGET_COLUMN].to_numpy()
    if len(shared) < policy.min_shared_rows or len(np.unique(truth)) < len(candidate_card.classes):
        return GateCheck(
            label, False, f"only {len(shared)} holdout rows are unseen by both models, too few to compare them fairly"
        )
    scores = {}
    for role, card, run in (("candidate", candidate_card, run_id), ("champion", champion_card, champion_run)):
        onnx_path = download_run_artifact(store, run, f"{BUNDLE_DIR}/{ONNX_FILE}", scratch / role)
        proba = OnnxClassifier(onnx_path, card.features).predict_proba(shared)
        threshold = card.threshold.value if card.threshold else None
        scores[role] = evaluate(truth, proba, card.classes, threshold).metrics[metric]
    if metric in LOWER_IS_BETTER:
        passed = scores["candidate"] <= scores["champion"] + policy.tolerance
    else:
        passed = scores["candidate"] >= scores["champion"] - policy.tolerance
    detail = (
        f"{metric} {scores['candidate']:.4f} against champion v{champion}'s {scores['champion']:.4f} "
        f"on {len(shared)} rows neither trained on (tolerance {policy.tolerance})"
    )
    return GateCheck(label, passed, detail)


def _run_of(version: ModelVersion) -> str:
    if not version.run_id:
        raise RegistryError(
            f"version {version.version} of {version.name!r} has no training run; it was not made by mct"
        )
    return version.run_id


def _check_policy(policy: PromotionPolicy) -> None:
    for metric in policy.min_metrics:
        if metric in LOWER_IS_BETTER:
            raise ConfigError(f"promotion minimum on {metric} makes no sense: lower is better for it")


def _alias_target(store: TrackingStore, name: str, alias: str) -> str | None:
    try:
        return str(store.client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _pointer_stack(events: list[AliasEvent]) -> list[str]:
    """Replay the history: a promotion pushes a version, a rollback pops back to the one before."""
    stack: list[str] = []
    for event in events:
        if event.action == "rollback":
            while stack and stack[-1] != event.version:
                stack.pop()
            if not stack:
                stack.append(event.version)
        elif not stack or stack[-1] != event.version:
            stack.append(event.version)
    return stack


def _append_history(store: TrackingStore, name: str, alias: str, event: AliasEvent) -> None:
    events = [*alias_history(store, name, alias), event][-HISTORY_LIMIT:]
    payload = json.dumps([vars(item) for item in events], separators=(",", ":"))
    store.client.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), payload)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
