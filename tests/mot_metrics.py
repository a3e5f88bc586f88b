"""CLEAR MOT (MOTA, MOTP, FP, FN, ID switches) and IDF1, the MOTChallenge way, for the
tracking tests: per frame, a ground-truth object keeps its previous hypothesis while their IoU
is at least 0.5, the others are matched by an optimal assignment on 1 - IoU; IDF1 matches
whole trajectories (one hypothesis id per ground-truth id) to maximise the frames they share.
MOTP is given as the devkit prints it: the mean IoU of the matches."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from torchstream.decode.tracking import iou_matrix

THRESHOLD = 0.5  # IoU a match needs

Frames = dict[int, list[tuple[int, np.ndarray]]]  # frame -> [(id, [x1, y1, x2, y2])]


def load_mot(path: Path) -> Frames:
    """A MOTChallenge text file (frame, id, x, y, w, h, ...) as boxes per frame."""
    frames: Frames = defaultdict(list)
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        f, i, x, y, w, h = (float(v) for v in line.split(",")[:6])
        frames[int(f)].append((int(i), np.array([x, y, x + w, y + h])))
    return dict(frames)


@dataclass
class Scores:
    mota: float
    motp: float
    fp: int
    fn: int
    switches: int
    idf1: float
    objects: int


def _ious(gt, hyp) -> np.ndarray:
    return iou_matrix(np.array([b for _, b in gt]).reshape(-1, 4),
                      np.array([b for _, b in hyp]).reshape(-1, 4))


def evaluate(gt: Frames, hyp: Frames) -> Scores:
    last: dict[int, int] = {}  # ground-truth id -> hypothesis id of its last match
    fp = fn = switches = matches = 0
    overlap = 0.0
    shared: dict[tuple[int, int], int] = defaultdict(int)  # (gt, hyp) -> frames within 0.5
    objects = hypotheses = 0
    for frame in sorted(set(gt) | set(hyp)):
        g, h = gt.get(frame, []), hyp.get(frame, [])
        objects += len(g)
        hypotheses += len(h)
        iou = _ious(g, h)
        valid = iou >= THRESHOLD
        for i, j in zip(*np.nonzero(valid), strict=True):
            shared[(g[i][0], h[j][0])] += 1
        pairs: list[tuple[int, int]] = []
        for i, (oid, _) in enumerate(g):  # keep the previous correspondences that still hold
            if oid in last:
                for j, (hid, _) in enumerate(h):
                    if hid == last[oid] and valid[i, j] and j not in {p[1] for p in pairs}:
                        pairs.append((i, j))
                        break
        free_g = [i for i in range(len(g)) if i not in {p[0] for p in pairs}]
        free_h = [j for j in range(len(h)) if j not in {p[1] for p in pairs}]
        if free_g and free_h:
            sub = iou[np.ix_(free_g, free_h)]
            cost = np.where(sub >= THRESHOLD, 1 - sub, 1e6)
            for r, c in zip(*linear_sum_assignment(cost), strict=True):
                if sub[r, c] >= THRESHOLD:
                    i, j = free_g[r], free_h[c]
                    oid, hid = g[i][0], h[j][0]
                    if oid in last and last[oid] != hid:
                        switches += 1
                    pairs.append((i, j))
        for i, j in pairs:
            last[g[i][0]] = h[j][0]
            overlap += iou[i, j]
        matches += len(pairs)
        fp += len(h) - len(pairs)
        fn += len(g) - len(pairs)
    return Scores(
        mota=1 - (fn + fp + switches) / objects,
        motp=overlap / max(matches, 1),
        fp=fp, fn=fn, switches=switches,
        idf1=_idf1(shared, objects, hypotheses), objects=objects,
    )


def _idf1(shared: dict[tuple[int, int], int], objects: int, hypotheses: int) -> float:
    """2 IDTP / (ground-truth boxes + hypothesis boxes), IDTP from the optimal one-to-one
    matching of trajectories."""
    if not shared:
        return 0.0
    gids = sorted({g for g, _ in shared})
    hids = sorted({h for _, h in shared})
    counts = np.zeros((len(gids), len(hids)))
    for (g, h), n in shared.items():
        counts[gids.index(g), hids.index(h)] = n
    rows, cols = linear_sum_assignment(-counts)
    idtp = counts[rows, cols].sum()
    return 2 * idtp / (objects + hypotheses)
