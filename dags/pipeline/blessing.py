"""The blessing policy: whether a trained candidate may replace the serving model, and why.

A candidate is rejected (a result with a reason, never an exception) for: non-finite test metrics or training
losses, an export without a `serving_default` signature, a signature that differs from the serving model's
(unless a change is allowed), a test AUC below the absolute floor, or one trailing the serving model's AUC on
the same test split by more than the tolerance; and at the job the stack serves, a full-catalogue NDCG@10 of
what `recommend` returns below the popularity rival's in the same run by more than its tolerance (none by
default) and beyond the noise (the paired bootstrap interval of the difference over the same users lies below
zero: on a few hundred users two rankers a hundredth apart swap places from one resample to the next, and a gate
on the point estimates would block or pass releases by chance), or a whole-catalogue NDCG@10 trailing the serving
model's on the same users and candidates by more than its tolerance and beyond the noise. The first model needs
only the floors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deepfm_model.layout import LIKE_TOWER
from deepfm_model.signature import Signature, describe_diff


@dataclass(frozen=True)
class Candidate:
    """What the rules read of a trained candidate.

    Attributes:
        auc: test AUC (`None` or NaN when missing or undefined).
        logloss: test logloss.
        non_finite_epochs: 0-based epochs whose training loss was not finite.
        signature: its `serving_default` signature (`export_signature`), `None` when unreadable.
        ndcg: full-catalogue NDCG@10 of `recommend` (retrieval, then the candidate); `None` when not evaluated.
        whole_catalogue_ndcg: full-catalogue NDCG@10 of the candidate ranking every movie (`deepfm`).
        popularity_ndcg: the tuned popularity rival's, on the same users and candidates.
        popularity_gap_ci: the paired bootstrap 95% interval of `ndcg - popularity_ndcg` over the same users.
    """

    auc: float | None
    logloss: float | None
    non_finite_epochs: list[int]
    signature: Signature | None
    ndcg: float | None = None
    whole_catalogue_ndcg: float | None = None
    popularity_ndcg: float | None = None
    popularity_gap_ci: tuple[float, float] | None = None


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def decide(
    candidate: Candidate,
    *,
    serving_version: int | None,
    serving_auc: float | None,
    signature_changed: dict | None,
    serving_ndcg: float | None = None,
    ndcg_tolerance: float = 0.01,
    popularity_tolerance: float = 0.0,
    serving_gap_ci: tuple[float, float] | None = None,
    auc_floor: float,
    auc_tolerance: float,
    allow_signature_change: bool,
) -> tuple[bool, str]:
    """`(blessed, reason)` for `candidate` against the serving model.

    Args:
        serving_version: the version applications get now, `None` before the first push.
        serving_auc: its AUC on the candidate's test split; `None` when not compared (no serving model, or a
            changed signature).
        serving_ndcg: its whole-catalogue NDCG@10 on the candidate's ranking users and candidates; `None` when not
            compared.
        ndcg_tolerance: how far the candidate's whole-catalogue NDCG@10 may trail `serving_ndcg`.
        popularity_tolerance: how far the candidate's NDCG@10 (`recommend`) may trail the popularity rival's.
        serving_gap_ci: the paired 95% interval of the candidate's minus the serving model's per-user NDCG@10;
            trailing by more than the tolerance is a rejection only when it lies below zero (beyond the noise).
        signature_changed: `signature_diff(serving, candidate)` when not empty (or `{"serving": why}` when the
            serving model's signature is unreadable), else `None`.
    """
    auc = candidate.auc
    if not _finite(auc) or not _finite(candidate.logloss):
        return False, f"candidate metrics are not finite: auc={auc}, logloss={candidate.logloss}"
    if candidate.non_finite_epochs:
        return False, (
            f"candidate training loss is not finite in epoch(s) {candidate.non_finite_epochs} of model/history.json"
        )
    if candidate.signature is None:
        return False, "candidate export has no readable serving_default signature"
    if signature_changed is not None and not allow_signature_change:
        detail = signature_changed.get("serving") or describe_diff(signature_changed)
        return False, (
            f"candidate serving signature differs from serving version {serving_version}: {detail} "
            "(set allow_signature_change / DEEPFM_ALLOW_SIGNATURE_CHANGE to push a deliberate change)"
        )
    if auc < auc_floor:
        return False, f"candidate AUC {auc:.4f} is below the floor {auc_floor:.4f}"
    if serving_auc is not None and auc < serving_auc - auc_tolerance:
        return False, (
            f"candidate AUC {auc:.4f} trails serving version {serving_version} ({serving_auc:.4f}) by more than "
            f"{auc_tolerance:.4f}"
        )
    if _losing_to_popularity(candidate, popularity_tolerance):
        gap = candidate.popularity_gap_ci
        interval = f" (paired 95% interval of the difference [{gap[0]:.4f}, {gap[1]:.4f}])" if gap else ""
        return False, (
            f"candidate full-catalogue NDCG@10 {candidate.ndcg:.4f} (recommend) is below popularity's "
            f"{candidate.popularity_ndcg:.4f} in the same run{interval}{_beyond(popularity_tolerance)}"
        )
    whole = candidate.whole_catalogue_ndcg
    beyond_noise = serving_gap_ci is None or serving_gap_ci[1] < 0
    if _finite(whole) and _finite(serving_ndcg) and whole < serving_ndcg - ndcg_tolerance and beyond_noise:
        return False, (
            f"candidate full-catalogue NDCG@10 {whole:.4f} trails serving version {serving_version} "
            f"({serving_ndcg:.4f}) by more than {ndcg_tolerance:.4f}"
        )
    if serving_version is None:
        baseline = "no model serving yet"
    elif serving_auc is None:
        baseline = f"signature change allowed, so serving version {serving_version} was not compared"
    else:
        baseline = f"serving version {serving_version} has {serving_auc:.4f}"
    ranking = ""
    if _finite(candidate.ndcg) and _finite(candidate.popularity_ndcg):
        gap = candidate.popularity_gap_ci
        if candidate.ndcg >= candidate.popularity_ndcg:
            relation = ">="
        elif gap is not None and gap[1] >= 0:
            relation = "< (within the interval)"
        else:
            relation = f"< (within the tolerance {popularity_tolerance:.4f})"
        ranking = (
            f"; full-catalogue NDCG@10 {candidate.ndcg:.4f} {relation} popularity's {candidate.popularity_ndcg:.4f}"
        )
    if _finite(whole) and _finite(serving_ndcg):
        ranking += f"; whole-catalogue NDCG@10 {whole:.4f} vs serving {serving_ndcg:.4f}"
    return True, f"candidate AUC {auc:.4f} clears the floor {auc_floor:.4f}; {baseline}{ranking}"


def _losing_to_popularity(candidate: Candidate, tolerance: float) -> bool:
    """Below popularity by more than `tolerance` and the noise: the paired interval of the difference lies under zero
    (without an interval, below by more than `tolerance` at all)."""
    if (
        not (_finite(candidate.ndcg) and _finite(candidate.popularity_ndcg))
        or candidate.ndcg >= candidate.popularity_ndcg - tolerance
    ):
        return False
    return candidate.popularity_gap_ci is None or candidate.popularity_gap_ci[1] < 0


def _beyond(tolerance: float) -> str:
    return f", by more than the tolerance {tolerance:.4f}" if tolerance else ""


def non_finite_losses(history: dict) -> list[int]:
    """Epochs (0-based) whose training loss in a Keras history (`{"loss": [...]}`, and the like tower's
    `like_tower_loss`) is not finite."""
    losses = [history.get(name) or [] for name in ("loss", f"{LIKE_TOWER}_loss")]
    return sorted({epoch for values in losses for epoch, loss in enumerate(values) if not _finite(loss)})
