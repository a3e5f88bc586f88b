"""torchstream.model.loading.load_model: weights loaded without a second copy, and shared
while loaded."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import torch
import torchvision

from torchstream.model.loading import _meta_tensors, _module_with_state, load_model

MOBILENET = "torchvision.models.mobilenet_v2"
REPO = Path(__file__).resolve().parents[1]


def test_weights_loaded_into_a_meta_built_module_give_the_pytorch_outputs(
        bikes_frames, mobilenet_weights):
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(mobilenet_weights, weights_only=True))
    reference.eval()
    module = load_model(MOBILENET, str(mobilenet_weights)).module
    assert module is not reference and not _meta_tensors(module)
    frame = torch.from_numpy(bikes_frames[3][:224, 100:324].transpose(2, 0, 1).copy())
    x = (frame.float() / 255 - 0.45)[None] / 0.22
    with torch.inference_mode():
        got, want = module(x), reference(x)
    assert torch.equal(got, want)
    assert got.argmax().item() == want.argmax().item()


def test_half_precision_weights_are_loaded_as_the_module_s_float32(tmp_path, mobilenet_weights):
    state = torch.load(mobilenet_weights, weights_only=True)
    half = tmp_path / "mobilenet_v2_half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, half)
    module = load_model(MOBILENET, str(half)).module
    weight = module.features[0][0].weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, state["features.0.0.weight"].half().float())


class KeepsATensor(torch.nn.Module):
    """Code that keeps a tensor made in __init__ outside the state dict: a meta build leaves
    it empty, so the module must be built the usual way."""

    def __init__(self, weights=None) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.offsets = [torch.arange(2.0)]

    def forward(self, x):
        return self.linear(x) + self.offsets[0]


def test_a_module_keeping_tensors_outside_its_state_is_built_the_usual_way():
    state = {"linear.weight": torch.ones(2, 4), "linear.bias": torch.zeros(2)}
    module = _module_with_state(KeepsATensor, {}, state, "KeepsATensor", "state.pth")
    assert not _meta_tensors(module)
    assert torch.equal(module(torch.ones(1, 4)), torch.tensor([[4.0, 5.0]]))
    with torch.device("meta"):
        assert set(_meta_tensors(KeepsATensor())) == {"linear.weight", "linear.bias", "offsets[0]"}


def test_the_same_model_is_shared_while_loaded_and_loaded_again_when_its_file_changes(
        tmp_path, mobilenet_weights):
    path = tmp_path / "mobilenet_v2-b0353104.pth"
    path.write_bytes(mobilenet_weights.read_bytes())
    first = load_model(MOBILENET, str(path))
    assert load_model(MOBILENET, str(path)) is first
    params = {p.data_ptr() for p in first.module.parameters()}
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = load_model(MOBILENET, str(path))
    assert changed is not first
    assert not params & {p.data_ptr() for p in changed.module.parameters()}
    gone = weakref.ref(changed)
    del first, changed
    gc.collect()
    assert gone() is None  # sharing keeps nothing alive by itself
    assert load_model(MOBILENET, str(path)).identity[1][0][0] == str(path.resolve())


PEAK_SCRIPT = textwrap.dedent("""
    import sys, torch, torchvision
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), sys.argv[1])
    from bench.measure import current_rss_mb, peak_rss_mb, start_memory_window
    from torchstream.model.loading import load_model
    start_memory_window()
    before = current_rss_mb()
    model = load_model("torchvision.models.resnet50", sys.argv[1])
    print(peak_rss_mb() - before, current_rss_mb() - before)
""")



def test_loading_a_state_dict_costs_one_copy_of_the_weights(tmp_path):
    """resnet50's weights are 98 MB: building the module with initialised weights before
    copying the file's in held two copies at once."""
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "r50.pth")],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    peak, held = (float(v) for v in out.stdout.split())
    weights_mb = 25_557_032 * 4 / 2**20
    assert weights_mb * 0.9 < held < weights_mb * 1.3, (peak, held)
    assert peak < weights_mb * 1.4, (peak, held)


def test_loading_a_torchscript_file_prints_no_deprecation_notice(tmp_path):
    """torch 2.14 deprecates torch.jit.load with a FutureWarning a pipeline user cannot act on."""
    import warnings

    import torch

    from torchstream.model.loading import load_model

    path = tmp_path / "tiny.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2).eval()), str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(str(path))
    assert model.source == "torchscript"
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], caught
