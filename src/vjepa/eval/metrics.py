"""Probe scores: multi-view aggregation, top-1, confusion matrices, class names, one-line summaries.

Shape legend: M clips, G view groups per clip, K classes.
"""

from __future__ import annotations

from typing import Any

import torch


def aggregate_views(logits: torch.Tensor) -> torch.Tensor:
    """A clip's prediction from its view groups' logits: mean of softmax probabilities.

    Args:
        logits: [M, G, K].

    Returns:
        probabilities [M, K].
    """
    return logits.float().softmax(dim=-1).mean(dim=1)


def top1(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent of predictions [M, K] against labels [M]."""
    return 100.0 * (probs.argmax(dim=-1) == labels).float().mean().item()


def confusion_matrix(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [K, K]: row = true class, column = predicted class (argmax of probs [M, K])."""
    index = labels.long() * num_classes + probs.argmax(dim=-1)
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_top1(confusion: torch.Tensor) -> list[float | None]:
    """Top-1 in percent of each true class (a row of `confusion`); None for a class with no clips."""
    totals = confusion.sum(dim=1)
    return [100.0 * confusion[k, k].item() / n if n else None for k, n in enumerate(totals.tolist())]


def direction_given_type(confusion: list[list[int]] | torch.Tensor) -> dict[str, float | None]:
    """Built-in motion task: per motion type (`MOTION_TYPES`), of the clips of that type that the
    probe put in one of the type's two classes, the share with the right direction (percent,
    chance 50; None where there were none). Separates "which kind of motion" from "which way"."""
    from vjepa.data.synthetic import MOTION_CLASSES, MOTION_TYPES

    confusion = torch.as_tensor(confusion)
    index = {name: k for k, name in enumerate(MOTION_CLASSES)}
    out: dict[str, float | None] = {}
    for kind, (negative, positive) in MOTION_TYPES.items():
        a, b = index[negative], index[positive]
        right = int(confusion[a, a] + confusion[b, b])
        within = right + int(confusion[a, b] + confusion[b, a])
        out[kind] = 100.0 * right / within if within else None
    return out


def class_names(task: str, num_classes: int, known: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`num_classes` labels for `task`: `known` names if given (a real dataset's class folders),
    else the built-in set's class names (motion, appearance); the class index as a string for
    classes beyond the names."""
    from vjepa.data.synthetic import APPEARANCE_CLASSES, MOTION_CLASSES

    names = list(known) or {"motion": MOTION_CLASSES, "appearance": APPEARANCE_CLASSES}.get(task, [])
    return [names[k] if k < len(names) else str(k) for k in range(num_classes)]



def describe_classes(result: dict[str, Any]) -> str:
    """One line of per-class top-1, labelled by the result's class_names (folder names, the built-in
    set's names, or indices)."""
    accuracies = result.get("per_class_top1", [])
    names = class_names(result["task"], len(accuracies), result.get("class_names", ()))
    return "per class: " + ", ".join(f"{name} {'-' if acc is None else f'{acc:.1f}'}"
                                     for name, acc in zip(names, accuracies))


def describe(result: dict[str, Any]) -> str:
    """One line: task, probe, label share, top-1 on the scored split, and the time taken."""
    seconds = result.get("feature_seconds", 0.0) + result.get("probe_seconds", 0.0)
    train = "" if result.get("train_top1") is None else f"; train {result['train_top1']:.1f}%"
    if result.get("folds"):
        where = f"{result['folds']}-fold cross-validation (+-{result['top1_std']:.1f}) on {result['num_test']} clips"
    else:
        where = f"{result['eval_split']} ({result['num_test']} clips{train})"
    return (f"{result['task']:<10} {result['probe']:<9} labels {100 * result['label_fraction']:>5.1f}%  "
            f"top-1 {result['top1']:5.1f}% on {where}  {seconds:.0f}s")



def format_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table of probe results: task, probe, labels, top-1, train top-1, clips."""
    lines = ["| task | probe | labels | top-1 (%) | train top-1 (%) | train clips | test clips |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['task']} | {r['probe']} | {100 * r['label_fraction']:g}% | {r['top1']:.1f} | "
                     f"{r['train_top1']:.1f} | {r['num_train']} | {r['num_test']} |")
    return "\n".join(lines)

