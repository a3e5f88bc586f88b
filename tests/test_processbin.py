"""processbin on real frames with the real pretrained classifier: the SPEC's classification
pipeline, element by element, checked frame by frame against torchvision called directly; every
queue-size mode with and without aggregate; configuration errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import _padded_rows, run_pipeline
from tests.results_helpers import run_results
from torchstream.environment import LABELS_DIR
from torchstream.gst import Gst

REPO = Path(__file__).resolve().parents[1]
IMAGENET = LABELS_DIR / "imagenet_2012.txt"
NAMES = IMAGENET.read_text().splitlines()
SIZE = 256  # what pytorch_tensor_inference proposes for mobilenet_v2's IMAGENET1K_V1 file
PREPROCESS = (
    "videoscale ! videoconvert ! video/x-raw,format=RGBP ! tensor_convert ! "
    f"opencv_tensor_normalize range=<0,1> mean={IMAGENET_MEAN} std={IMAGENET_STD}"
)
POSTPROCESS = f"tensor_postproc_label method=softmax labels-file={IMAGENET}"


def processbin(weights, *extra: str) -> str:
    return (
        f'processbin name=pb preprocess="{PREPROCESS}" '
        f'process="pytorch_tensor_inference model=torchvision.models.mobilenet_v2 '
        f'model-weights={weights}" postprocess="{POSTPROCESS}" ' + " ".join(extra)
    )


@pytest.fixture(scope="module")
def reference(bikes_frames, mobilenet_weights):
    """(label id, probability) per frame: torchvision's mobilenet_v2 on the frame scaled by
    videoscale (as the preprocess does), normalised with torch."""
    scaled = run_pipeline(
        f"appsrc name=src ! videoscale ! video/x-raw,width={SIZE},height={SIZE} ! "
        "appsink name=sink", bikes_frames)
    assert scaled.result.ok, scaled.error
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    model.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    answers = []
    for out in scaled.outputs:
        assert video_caps(out.caps) == ("RGB", SIZE, SIZE)
        hwc = torch.from_numpy(out.arrays[0].reshape(SIZE, SIZE, 3).copy())
        x = (hwc.permute(2, 0, 1).float() / 255 - mean) / std
        with torch.inference_mode():
            p = torch.softmax(model(x[None])[0].double(), 0)
        answers.append((int(p.argmax()), float(p.max())))
    # a street scene: the classes vary from frame to frame, so a shifted match would show
    assert len({a[0] for a in answers}) > 1, answers
    return answers


def video_caps(text: str) -> tuple[str, int, int]:
    s = Gst.Caps.from_string(text).get_structure(0)
    assert s.get_name() == "video/x-raw"
    return s.get_value("format"), s.get_value("width"), s.get_value("height")


def check_classified(outputs, frames, reference, fmt="RGB", size=(640, 272), pts=None):
    if pts is None:
        pts = [i * Gst.SECOND // 25 for i in range(len(frames))]
    assert [o.pts for o in outputs] == pts
    for out, (label_id, p) in zip(outputs, reference, strict=True):
        assert video_caps(out.caps) == (fmt, *size)
        c = out.results.classification("classification")
        assert c.label_id == label_id and c.label == NAMES[label_id]
        assert abs(c.confidence - p) <= 1e-4


@pytest.fixture(scope="module")
def classified(bikes_frames, mobilenet_weights):
    run = run_results(
        "appsrc name=src ! " + processbin(mobilenet_weights, "aggregate=meta_aggregate") +
        " ! tee name=o ! queue ! appsink name=sink "
        "o. ! videoconvert ! video/x-raw,format=I420 ! videoscale ! "
        "video/x-raw,width=320,height=136 ! queue ! appsink name=small",
        bikes_frames, sinks=("sink", "small"), timeout=60,
    )
    assert run.result.ok, run.error
    return run


def test_every_frame_once_in_order_with_its_own_classification(classified, bikes_frames,
                                                                reference):
    outputs = classified.per_sink["sink"]
    check_classified(outputs, bikes_frames, reference)
    for out, frame in zip(outputs, bikes_frames, strict=True):
        assert out.arrays[0].tobytes() == _padded_rows(frame)  # the original frame, untouched
        assert [m.name for m in out.results.models] == ["torchvision.models.mobilenet_v2"]


def test_results_survive_convert_scale_and_queue_after_aggregate(classified, bikes_frames,
                                                                 reference):
    small = classified.per_sink["small"]
    check_classified(small, bikes_frames, reference, fmt="I420", size=(320, 136))
    for out, big in zip(small, classified.per_sink["sink"], strict=True):
        assert out.results == big.results
        assert out.arrays[0].size == 320 * 136 * 3 // 2


@pytest.mark.parametrize("queue_size", [-1, 0, 2])
@pytest.mark.parametrize("aggregate", [True, False], ids=["aggregate", "linear"])
def test_queue_size_modes(queue_size, aggregate, bikes_frames, mobilenet_weights, reference):
    frames = bikes_frames[:4]
    sizes = " ".join(f"{stage}-queue-size={queue_size}"
                     for stage in ("preprocess", "process", "postprocess", "aggregate"))
    description = processbin(mobilenet_weights, sizes,
                             "aggregate=meta_aggregate" if aggregate else "")
    pipeline = Gst.parse_launch(description)
    try:
        assert pipeline.set_state(Gst.State.READY) == Gst.StateChangeReturn.SUCCESS
        queues = {e.get_name(): e.get_property("max-size-buffers")
                  for e in pipeline.iterate_elements()
                  if e.get_factory().get_name() == "queue"}
        tees = [e for e in pipeline.iterate_elements() if e.get_factory().get_name() == "tee"]
    finally:
        pipeline.set_state(Gst.State.NULL)
    stages = ["preprocess", "process", "postprocess"] + (["aggregate"] if aggregate else [])
    expected = {} if queue_size < 0 else {f"{s}_queue": queue_size for s in stages}
    assert queues == expected
    assert len(tees) == (1 if aggregate else 0)

    run = run_results(f"appsrc name=src ! {description} ! appsink name=sink", frames,
                      timeout=60)
    assert run.result.ok, run.error
    outputs = run.per_sink["sink"]
    if aggregate:
        check_classified(outputs, frames, reference[:4])
    else:  # linear: what comes out is postprocess's output, the labelled tensors
        assert [o.pts for o in outputs] == [i * Gst.SECOND // 25 for i in range(4)]
        for out, (label_id, p) in zip(outputs, reference, strict=False):
            assert out.caps.startswith("other/tensors")
            assert out.arrays[0].shape == (1000,) and int(np.argmax(out.arrays[0])) == label_id
            c = out.results.classification("classification")
            assert c.label_id == label_id and abs(c.confidence - p) <= 1e-4


def test_postaggregate_description_is_ghosted_and_runs_last(bikes_frames, mobilenet_weights,
                                                            reference):
    frames = bikes_frames[:3]
    run = run_results(
        "appsrc name=src ! " + processbin(
            mobilenet_weights, "aggregate=meta_aggregate",
            # caps in a description filter a link: they need an element after them
            'postaggregate="videoconvert ! videoscale ! video/x-raw,format=BGRx,width=160,'
            'height=68 ! identity"') + " ! appsink name=sink",
        frames, timeout=60,
    )
    assert run.result.ok, run.error
    check_classified(run.per_sink["sink"], frames, reference[:3], fmt="BGRx", size=(160, 68))


def state_change_error(description: str) -> str:
    pipeline = Gst.parse_launch(description)
    try:
        assert pipeline.set_state(Gst.State.READY) == Gst.StateChangeReturn.FAILURE
        msg = pipeline.get_bus().timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
        assert msg is not None, "no error message posted"
        assert msg.src.get_name() == "pb"
        return msg.parse_error()[0].message
    finally:
        pipeline.set_state(Gst.State.NULL)


def test_missing_process_is_an_error():
    message = state_change_error(
        f'fakesrc ! processbin name=pb preprocess="{PREPROCESS}" ! fakesink')
    assert "property 'process' is not set" in message


def test_elements_that_cannot_link_are_an_error():
    message = state_change_error(
        'videotestsrc ! processbin name=pb preprocess="videoconvert" '
        'process="tensor_postproc_label" ! fakesink')
    assert "cannot link" in message and "before process" in message


def test_aggregate_without_tensor_pads_is_an_error():
    message = state_change_error(
        'videotestsrc ! processbin name=pb process="identity" aggregate=identity ! fakesink')
    assert "no tensor_%u request pad" in message


@pytest.mark.slow
def test_gst_launch_builds_the_spec_pipeline_from_descriptions(mobilenet_weights):
    """The classification pipeline of the SPEC, as a user types it (plugin loader, element
    properties built from description strings), on 10 frames of a real video."""
    from tests.conftest import BIKES
    from tests.test_cli import TORCHSTREAM, clean_shell

    pipeline = (
        f"filesrc location={BIKES} ! decodebin3 ! identity eos-after=10 ! "
        f"processbin name=pb preprocess='{PREPROCESS}' "
        "process='pytorch_tensor_inference model=torchvision.models.mobilenet_v2 "
        f"model-weights={mobilenet_weights}' postprocess='{POSTPROCESS}' "
        "aggregate=meta_aggregate ! videoconvert ! fakesink sync=false"
    )
    done = clean_shell(f'eval "$({TORCHSTREAM} env)" && export OMP_NUM_THREADS=1 && '
                       f'cd {REPO} && gst-launch-1.0 -v {pipeline} && '
                       "gst-inspect-1.0 processbin && gst-inspect-1.0 meta_aggregate",
                       timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Got EOS" in done.stdout
    assert "/GstPipeline:pipeline0/processbin:pb.GstGhostPad:src: caps = video/x-raw" in (
        done.stdout)
    for prop in ("preprocess", "process", "postprocess", "aggregate", "postaggregate",
                 "process-queue-size"):
        assert f"  {prop} " in done.stdout
    assert "aggregate-queue-size: Buffers in the queue on the frames' branch" in done.stdout


def test_the_logits_stay_on_the_frame(bikes_frames, mobilenet_weights, reference):
    """meta_aggregate's attach-tensor-data (default on): each frame carries its own logits,
    whose softmax is the classification's probability."""
    from tests.test_meta_aggregate import kept_tensors

    frames = bikes_frames[:3]
    store: list = []
    run = run_results(
        "appsrc name=src ! " + processbin(mobilenet_weights, "aggregate=meta_aggregate") +
        " ! test_meta_writer name=probe ! appsink name=sink",
        frames, writers={"probe": kept_tensors(store)}, timeout=60,
    )
    assert run.result.ok, run.error
    check_classified(run.per_sink["sink"], frames, reference[:3])
    for kept, (label_id, p) in zip(store, reference, strict=False):
        [(source, _pts, [logits], record)] = kept
        assert source == "tensor_0" and logits.shape == (1000,)
        # the kept buffer still carries what the inference element said about it
        assert record.model == "torchvision.models.mobilenet_v2" and record.names == ("output",)
        e = np.exp(logits.astype(np.float64) - logits.max())
        assert int(np.argmax(logits)) == label_id and abs(e.max() / e.sum() - p) <= 1e-4


@pytest.mark.parametrize("frames_queue", [0, 2])
def test_preprocess_that_skips_frames(bikes_frames, mobilenet_weights, reference, frames_queue):
    """A preprocess that infers 5 frames a second of a 25 fps video: the frames it skipped pass
    without results (in order, none lost), the others carry their own classification."""
    run = run_results(
        "appsrc name=src ! " + processbin(mobilenet_weights, "aggregate=meta_aggregate",
                                          f"aggregate-queue-size={frames_queue}").replace(
            'preprocess="', 'preprocess="videorate drop-only=true max-rate=5 ! ') +
        " ! appsink name=sink",
        bikes_frames, timeout=60,
    )
    assert run.result.ok, run.error
    outputs = run.per_sink["sink"]
    assert [o.pts for o in outputs] == [i * Gst.SECOND // 25 for i in range(10)]
    labelled = [i for i, o in enumerate(outputs) if o.results]
    assert 2 <= len(labelled) <= 3, labelled
    assert all(labelled[k + 1] - labelled[k] == 5 for k in range(len(labelled) - 1))
    check_classified([outputs[i] for i in labelled], [bikes_frames[i] for i in labelled],
                     [reference[i] for i in labelled], pts=[outputs[i].pts for i in labelled])


def test_a_bin_made_in_python_gets_its_free_pads_ghosted(bikes_frames, mobilenet_weights,
                                                        reference):
    """preprocess as a Gst.Bin built in Python with no pads of its own."""
    frames = bikes_frames[:2]
    preprocess = Gst.parse_bin_from_description(PREPROCESS, False)
    assert not preprocess.sinkpads and not preprocess.srcpads
    description = processbin(mobilenet_weights, "aggregate=meta_aggregate").replace(
        f'preprocess="{PREPROCESS}" ', "")
    original = Gst.parse_launch

    def parse_launch(text):  # the preprocess is set on the bin before the pipeline starts
        pipeline = original(text)
        pipeline.get_by_name("pb").set_property("preprocess", preprocess)
        return pipeline

    Gst.parse_launch = parse_launch
    try:
        run = run_results(f"appsrc name=src ! {description} ! appsink name=sink", frames,
                          timeout=60)
    finally:
        Gst.parse_launch = original
    assert run.result.ok, run.error
    check_classified(run.per_sink["sink"], frames, reference[:2])
    assert [p.get_name() for p in preprocess.pads] == ["sink", "src"]


def test_an_element_inside_another_bin_is_an_error():
    other = Gst.Bin.new("other")
    identity = Gst.ElementFactory.make("identity", "taken")
    other.add(identity)
    pipeline = Gst.parse_launch("videotestsrc ! processbin name=pb ! fakesink")
    pipeline.get_by_name("pb").set_property("process", identity)
    try:
        assert pipeline.set_state(Gst.State.READY) == Gst.StateChangeReturn.FAILURE
        msg = pipeline.get_bus().timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
        assert "'taken' is already inside another bin" in msg.parse_error()[0].message
    finally:
        pipeline.set_state(Gst.State.NULL)
