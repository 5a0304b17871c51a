"""An independent re-implementation of WIDER FACE's official evaluation (the eval_tools algorithm).

It follows the official MATLAB ``wider_eval`` and its Python port (``evaluation.py`` as shipped with
e.g. Pytorch_Retinaface's ``widerface_evaluate``) step by step, and shares no code with
:mod:`faceveil.eval.detection`, so the two can check each other:

- ground truth comes from the official ``.mat`` files: ``wider_face_val.mat`` (``event_list``,
  ``file_list``, ``face_bbx_list``) and ``wider_{easy,medium,hard}_val.mat`` (``gt_list``: the 1-based
  indices of the faces that count in that set; every other face is ignored);
- each image's predictions are sorted by score, high first (``read_pred.m``), and every score is
  normalised to [0, 1] with the minimum and maximum over **all** predictions (``norm_score``);
- per image and prediction, in score order: the ground-truth box of highest IoU (pixel-inclusive
  boxes, ``+1`` on width and height) is taken; at IoU >= 0.5 a face outside the set makes the
  prediction vanish (neither proposal nor hit), a face in the set not yet found counts as found, a face
  already found leaves the prediction a false positive;
- 1000 score thresholds ``1 - t/1000`` (t = 1..1000): proposals and found faces are summed over the
  images, precision = found / proposals, recall = found / faces in the set (faces of images without
  predictions count too, as the official tool counts every listed image);
- AP is the VOC all-point area under the monotone precision envelope (``VOCap``).

The official tool evaluates the whole validation set; here only the images that predictions are given
for are evaluated (pass an empty array for an image with none), which is what running the official tool
on ground truth cut down to those images gives.

Usage as a script, on predictions in the official layout (``EVENT/IMAGE.txt``: name, count, then
``x y w h score`` lines)::

    python -m faceveil.eval.wider_official -p predictions/ -g ground_truth/
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceveil.errors import MissingExtraError, UsageError

SETTINGS = ("easy", "medium", "hard")
THRESH_NUM = 1000
IOU = 0.5


@dataclass
class OfficialImage:
    """One image of the official ground truth: boxes x, y, w, h and, per set, the 1-based kept indices."""

    event: str
    stem: str
    boxes: np.ndarray
    keep: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class OfficialGroundTruth:
    """The official .mat ground truth by (event, file stem), in the files' order."""

    images: dict[tuple[str, str], OfficialImage]


@dataclass
class OfficialResult:
    """AP of one setting, with the 1000-point curve it came from."""

    ap: float
    precision: np.ndarray
    recall: np.ndarray
    faces: int


def load_gt(folder: Path) -> OfficialGroundTruth:
    """Read ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``folder``."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise MissingExtraError("reading WIDER FACE's official .mat ground truth", "eval") from exc
    folder = Path(folder)

    def load(name: str) -> dict:
        path = folder / name
        try:
            return loadmat(str(path))
        except FileNotFoundError as exc:
            raise UsageError(f"{path}: official WIDER FACE ground truth file not found") from exc
        except Exception as exc:
            raise UsageError(f"{path}: cannot read it as a MATLAB file ({exc})") from exc

    face = load("wider_face_val.mat")
    gt_lists = {s: load(f"wider_{s}_val.mat")["gt_list"] for s in SETTINGS}
    events, files, boxes = face["event_list"], face["file_list"], face["face_bbx_list"]
    images: dict[tuple[str, str], OfficialImage] = {}
    for i in range(len(events)):
        event = str(events[i][0][0])
        for j in range(len(files[i][0])):
            stem = str(files[i][0][j][0][0])
            keep = {s: np.asarray(gt_lists[s][i][0][j][0], np.int64).reshape(-1) for s in SETTINGS}
            images[(event, stem)] = OfficialImage(
                event, stem, np.asarray(boxes[i][0][j][0], np.float64).reshape(-1, 4), keep
            )
    return OfficialGroundTruth(images)


def read_predictions(folder: Path) -> dict[tuple[str, str], np.ndarray]:
    """Predictions in the official layout: ``folder/EVENT/STEM.txt`` → {(event, stem): (N, 5) array}."""
    out = {}
    for path in sorted(Path(folder).glob("*/*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = []
        for n, line in enumerate(lines[2:], start=3):
            if not line.strip():
                continue
            try:
                rows.append([float(v) for v in line.split()[:5]])
            except ValueError as exc:
                raise UsageError(f"{path}:{n}: expected 'x y w h score', got {line!r}") from exc
            if len(rows[-1]) != 5:
                raise UsageError(f"{path}:{n}: expected 'x y w h score', got {line!r}")
        out[(path.parent.name, path.stem)] = np.asarray(rows, np.float64).reshape(-1, 5)
    return out


def write_predictions(folder: Path, predictions: dict[tuple[str, str], np.ndarray]) -> None:
    """Write predictions in the official layout (the inverse of :func:`read_predictions`)."""
    for (event, stem), pred in predictions.items():
        path = Path(folder) / event / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{stem}.jpg", str(len(pred))]
        lines += [f"{x:.2f} {y:.2f} {w:.2f} {h:.2f} {s:.6f}" for x, y, w, h, s in pred]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def evaluate(
    predictions: dict[tuple[str, str], np.ndarray], gt: OfficialGroundTruth, iou_thresh: float = IOU
) -> dict[str, OfficialResult]:
    """The official AP for easy, medium and hard over the images in ``predictions``.

    ``predictions`` maps (event, file stem) to an (N, 5) array of x, y, w, h, score.
    """
    unknown = [k for k in predictions if k not in gt.images]
    if unknown:
        event, stem = unknown[0]
        raise UsageError(f"{event}/{stem}: not in the official ground truth ({len(unknown)} such images)")
    preds = {k: _sorted(np.asarray(v, np.float64).reshape(-1, 5)) for k, v in predictions.items()}
    _normalise_scores(preds)
    results = {}
    for setting in SETTINGS:
        pr_curve = np.zeros((THRESH_NUM, 2))
        count_face = 0
        for key, image in gt.images.items():
            if key not in preds:
                continue
            pred = preds[key]
            keep_index = image.keep[setting]
            count_face += len(keep_index)
            if len(image.boxes) == 0 or len(pred) == 0:
                continue
            counted = np.zeros(len(image.boxes))
            if len(keep_index):
                counted[keep_index - 1] = 1
            pred_recall, proposal_list = _image_eval(pred, image.boxes, counted, iou_thresh)
            pr_curve += _image_pr_info(pred[:, 4], proposal_list, pred_recall)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = pr_curve[:, 1] / pr_curve[:, 0]
            recall = pr_curve[:, 1] / count_face
        results[setting] = OfficialResult(_voc_ap(recall, precision), precision, recall, count_face)
    return results


def _sorted(pred: np.ndarray) -> np.ndarray:
    """An image's predictions, highest score first (the official ``read_pred`` sorts them so)."""
    return pred[np.argsort(-pred[:, 4], kind="stable")] if len(pred) else pred


def _normalise_scores(preds: dict[tuple[str, str], np.ndarray]) -> None:
    """Min-max normalise every score in place, with the extremes over all predictions (``norm_score``)."""
    nonempty = [p for p in preds.values() if len(p)]
    if not nonempty:
        return
    lo = min(float(p[:, 4].min()) for p in nonempty)
    hi = max(float(p[:, 4].max()) for p in nonempty)
    # The official code starts from max 0 and min 1; with scores in [0, 1] that is the same.
    lo, hi = min(lo, 1.0), max(hi, 0.0)
    diff = hi - lo
    for p in nonempty:
        p[:, 4] = (p[:, 4] - lo) / diff if diff > 0 else 1.0


def _overlaps(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of pixel-inclusive x1, y1, x2, y2 boxes (``+1`` on sides), as the official ``bbox_overlaps``."""
    iw = np.minimum(pred[:, None, 2], gt[None, :, 2]) - np.maximum(pred[:, None, 0], gt[None, :, 0]) + 1
    ih = np.minimum(pred[:, None, 3], gt[None, :, 3]) - np.maximum(pred[:, None, 1], gt[None, :, 1]) + 1
    gt_area = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    pred_area = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)
    inter = iw * ih
    ua = pred_area[:, None] + gt_area[None, :] - inter
    ok = (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, inter / np.where(ok, ua, 1.0), 0.0)


def _image_eval(
    pred: np.ndarray, gt: np.ndarray, counted: np.ndarray, iou_thresh: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction (in score order): faces found so far, and 1 for a proposal / -1 for one ignored."""
    p = pred[:, :4].copy()
    g = gt.copy()
    p[:, 2:4] += p[:, 0:2]
    g[:, 2:4] += g[:, 0:2]
    overlaps = _overlaps(p, g)
    best = np.argmax(overlaps, axis=1)  # the first of equal maxima, as max() in MATLAB and numpy
    best_overlap = overlaps[np.arange(len(pred)), best]
    pred_recall = np.zeros(len(pred))
    proposal_list = np.ones(len(pred))
    recall_list = np.zeros(len(gt))
    found = 0  # faces with recall_list == 1: a face only ever goes 0 -> 1 or 0 -> -1
    for h in range(len(pred)):
        idx = best[h]
        if best_overlap[h] >= iou_thresh:
            if counted[idx] == 0:
                recall_list[idx] = -1
                proposal_list[h] = -1
            elif recall_list[idx] == 0:
                recall_list[idx] = 1
                found += 1
        pred_recall[h] = found
    return pred_recall, proposal_list


def _image_pr_info(scores: np.ndarray, proposal_list: np.ndarray, pred_recall: np.ndarray) -> np.ndarray:
    """(proposals, faces found) at each of the 1000 thresholds, for one image.

    At threshold ``1 - t/1000`` the official code takes the last prediction scoring at least that; the
    scores are sorted high first, so that is the number of such scores, less one.
    """
    out = np.zeros((THRESH_NUM, 2))
    thresholds = 1 - (np.arange(THRESH_NUM) + 1) / THRESH_NUM
    above = np.searchsorted(-scores, -thresholds, side="right")
    has = above > 0
    last = above[has] - 1
    out[has, 0] = np.cumsum(proposal_list == 1)[last]
    out[has, 1] = pred_recall[last]
    return out


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope, summed where recall changes (``VOCap``)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m faceveil.eval.wider_official",
        description="WIDER FACE's official evaluation (re-implemented) on prediction files.",
    )
    parser.add_argument(
        "-p", "--pred", type=Path, required=True, help="folder of EVENT/IMAGE.txt predictions"
    )
    parser.add_argument("-g", "--gt", type=Path, required=True, help="folder with the official .mat files")
    args = parser.parse_args(argv)
    try:
        results = evaluate(read_predictions(args.pred), load_gt(args.gt))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for setting in SETTINGS:
        print(
            f"{setting.capitalize():<6} Val AP: {results[setting].ap:.4f}  ({results[setting].faces} faces)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
