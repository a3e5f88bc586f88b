"""object_track: gives every region of a detector an ``object_id`` that follows the object
from frame to frame (:mod:`torchstream.decode.tracking`), placed after ``object_detect``.

A frame the detector ran on (its results name a model), or one carrying regions anyway
(``repeat-metadata``), updates the tracks with its regions; a frame it skipped
(``inference-interval``) gets the predicted regions of the tracks with
``short-term-imageless``. The ids go into the results metadata (``Region.object_id``), the
``GstVideoRegionOfInterestMeta`` mirror (its ``id``), ``meta_publish``'s JSON (``id``) and
``meta_overlay``'s labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from torchstream.decode.tracking import SHORT_TERM, TRACKING_TYPES, Tracker, TrackerSettings
from torchstream.elements._base import (
    FLOW_ERROR,
    FactoryMade,
    PropertyStore,
    bool_prop,
    double_prop,
    gproperties,
    guarded,
    pad_templates,
    string_prop,
    uint_prop,
)
from torchstream.errors import ConfigError, TorchstreamError
from torchstream.gst import GLib, Gst, GstBase, GstVideo
from torchstream.gst.log import DebugCategory
from torchstream.gst.meta import read_results, write_results
from torchstream.props import parse_class_set
from torchstream.results.data import Region

CAT = DebugCategory("torchstream-track", "object_track: tracks started, ended, predicted")
FRAMES_TO_SEE_A_DETECTOR = 30  # frames without any detector's results: not after a detector


class ObjectTrack(FactoryMade, PropertyStore, GstBase.BaseTransform):
    __gtype_name__ = "object_track"
    __gstmetadata__ = (
        "Object tracker",
        "Filter/Analyzer/Video",
        "Gives each detected region an object id that follows the object across frames "
        "(IoU association, optional Kalman motion model that also fills the frames without "
        "detections)",
        "torchstream",
    )
    __gsttemplates__ = pad_templates(None)
    PROPERTIES = {
        "tracking-type": string_prop(
            "Tracking type", f"One of {', '.join(TRACKING_TYPES)}: IoU matching only, or a "
            "Kalman motion model that predicts boxes (and fills frames without detections)",
            SHORT_TERM,
            doc=(
                '`zero-term-imageless`: a detection takes the id of the track whose last box it '
                'overlaps most (optimal assignment on IoU), no motion model; `short-term-'
                'imageless`: a constant-velocity Kalman filter per track, matched on its '
                'predicted box, which also gives the frames without detections their regions'),
        ),
        "max-age": uint_prop("Max age", "Frames a track lives on without a matching "
                             "detection", 0, GLib.MAXINT32, 30,
            doc=(
                'frames a track lives on without a matching detection (an object hidden that long'
                ' keeps its id when it comes back)'),
        ),
        "max-predicted": uint_prop(
            "Max predicted", "short-term: detection frames on which a track the detector "
            "missed is still reported with its predicted box", 0, GLib.MAXINT32, 2),
        "n-init": uint_prop("N init", "Matches a track needs before it gets its id", 1,
                            GLib.MAXINT32, 1,
            doc=(
                'matches a track needs before it gets its id (a detection of a track not yet '
                'confirmed has no id)'),
        ),
        "iou-threshold": double_prop("IoU threshold", "Least IoU between a track's box and "
                                     "a detection for them to match", 0.0, 1.0, 0.3,
            doc=(
                "least IoU between a track's (predicted) box and a detection for them to match"),
        ),
        "tracking-per-class": bool_prop("Tracking per class", "A detection matches only a "
                                        "track of its own label", True),
        "high-threshold": double_prop(
            "High threshold", "Detections at or above it are matched first and start tracks; "
            "those below (down to low-threshold) only keep tracks alive (ByteTrack's two "
            "passes; 0: one pass)", 0.0, 1.0, 0.0,
            doc=(
                'detections at or above it are matched first and start tracks; those below it '
                '(down to `low-threshold`) only keep tracks alive, as ByteTrack does; 0: one pass'
                ' (every detection may start a track). E.g. `high-threshold=0.5 low-'
                'threshold=0.1` after a detector at `threshold=0.1`'),
        ),
        "low-threshold": double_prop("Low threshold", "Detections below it are not tracked",
                                     0.0, 1.0, 0.0),
        "object-class": string_prop("Object class", "Labels to track, <car,person> or "
                                    "car,person; empty: every region", "",
            doc=(
                'labels to track, `<car,person>` or `car,person`; the other regions pass without '
                'an id; empty: every region'),
        ),
    }
    __gproperties__ = gproperties(PROPERTIES)

    def __init__(self) -> None:
        super().__init__()
        self._init_metadata_writer()
        self.run: _Run | None = None

    @guarded(False)
    def do_set_caps(self, incaps, outcaps):
        info = GstVideo.VideoInfo.new_from_caps(incaps)
        self.run.size = (info.width, info.height) if info is not None and info.width else None
        return True

    @guarded(False)
    def do_start(self):
        self.check_ranges()
        s = self.settings
        settings = TrackerSettings(
            tracking_type=(s.tracking_type or "").strip().lower(),
            max_age=s.max_age, max_predicted=s.max_predicted, n_init=s.n_init,
            iou_threshold=s.iou_threshold, per_class=s.tracking_per_class,
            high_threshold=s.high_threshold, low_threshold=s.low_threshold)
        classes = parse_class_set(s.object_class, "object-class")
        self.run = _Run(Tracker(settings), classes)
        CAT.info(self, f"{settings}; classes: {sorted(classes) or 'all'}")
        return True

    def do_sink_event(self, event):
        if event.type == Gst.EventType.FLUSH_STOP and self.run is not None:
            fresh = Tracker(self.run.tracker.settings)  # after a seek: new tracks, new ids
            fresh.next_id = self.run.tracker.next_id
            self.run.tracker = fresh
        return GstBase.BaseTransform.do_sink_event(self, event)

    @guarded(FLOW_ERROR)
    def do_transform_ip(self, buf):
        results, run = read_results(buf), self.run
        run.frames += 1
        run.detector_seen = run.detector_seen or bool(results.models)
        if not run.detector_seen and run.frames >= FRAMES_TO_SEE_A_DETECTOR:
            raise ConfigError(f"object_track: no detector results on the first {run.frames} "
                              "frames; it tracks the regions of a detector upstream "
                              "(object_detect ... ! object_track)")
        tracked = [r for r in results.regions if not run.classes or r.label in run.classes]
        if run.tracker.settings.per_class:
            unlabelled = [r.region_id for r in tracked if not r.label]
            if unlabelled:
                raise TorchstreamError(f"object_track: regions {unlabelled} have no label; "
                                       "tracking per class needs labels (or set "
                                       "tracking-per-class=false)")
        for r in tracked:
            run.label_names.setdefault(r.label_id, r.label)
        # a frame the detector ran on, or one that carries regions anyway (repeat-metadata
        # repeats the last ones): those regions are the detections; else the frame was skipped
        if results.models or tracked:
            boxes = np.array([[r.x_min, r.y_min, r.x_max, r.y_max] for r in tracked])
            reported = run.tracker.update(boxes, [r.label_id for r in tracked],
                                           [r.confidence for r in tracked])
        else:
            reported = run.tracker.predict()
        next_id = results.next_region_id()
        predicted = 0
        for item in reported:
            if item.index >= 0:
                tracked[item.index].object_id = item.track_id
                continue
            x0, y0, x1, y1 = (float(v) for v in np.clip(item.box, 0.0, 1.0))
            if x1 <= x0 or y1 <= y0:
                continue  # predicted off the frame
            results.regions.append(Region(
                x0, y0, x1, y1, run.label_names.get(item.label_id, str(item.label_id)),
                item.label_id, item.score, next_id, object_id=item.track_id))
            next_id += 1
            predicted += 1
        CAT.log(self, lambda: f"{len(tracked)} regions, {len(run.tracker)} tracks, "
                              f"{predicted} predicted")
        write_results(buf, results, *(run.size or (None, None)))
        return Gst.FlowReturn.OK

    def do_stop(self):
        run, self.run = self.run, None
        if run is not None:
            CAT.info(self, f"{run.tracker.next_id - 1} object ids given over {run.frames} "
                           "frames")
        return True


@dataclass
class _Run:
    """The tracks and counters of one run (start to stop)."""

    tracker: Tracker
    classes: frozenset[str]  # object-class: the labels tracked (empty: all)
    label_names: dict[int, str] = field(default_factory=dict)
    frames: int = 0
    detector_seen: bool = False
    size: tuple[int, int] | None = None  # the frame size from the caps, for the ROI mirrors
