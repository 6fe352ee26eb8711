"""What a GPU machine decides, checked against a recorded one (tests/trainer/gpu_standin.py):
memory growth on every visible GPU (training and extraction), the effective precision and
its cache key, bfloat16 only where the GPU has it, and `train.gpus: auto`."""

import keras
import pytest

from tests.trainer.gpu_standin import RecordedGPUs
from trainer import runtime
from trainer.errors import UsageError


@pytest.fixture
def float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_one_gpu_of_two_sets_the_same_memory_growth_on_both(monkeypatch, float32_after):
    gpus = RecordedGPUs(monkeypatch, count=2)
    rt = runtime.setup(gpus_wanted=1, mixed_precision=True)
    assert rt.replicas == 1 and rt.devices == ["/gpu:0"]
    # TF starts its context with one memory-growth setting for every VISIBLE GPU; setting it
    # on the used one only is the "Memory growth cannot differ between GPU devices" crash
    assert gpus.memory_growth == {"/physical_device:GPU:0": True, "/physical_device:GPU:1": True}
    gpus.initialise()
    assert rt.mixed_precision and keras.mixed_precision.global_policy().name == "mixed_float16"


def test_all_gpus_and_a_forced_count_above_the_visible_one(monkeypatch, float32_after):
    gpus = RecordedGPUs(monkeypatch, count=2)
    rt = runtime.setup(gpus_wanted=0, mixed_precision=False)
    assert rt.replicas == 2 and rt.devices == ["/gpu:0", "/gpu:1"]
    assert set(gpus.memory_growth.values()) == {True}
    with pytest.raises(UsageError, match="--gpus 3 asked for, but 2 GPU"):
        runtime.setup(gpus_wanted=3, mixed_precision=False)


def test_mixed_precision_only_with_tensor_cores(monkeypatch, float32_after):
    RecordedGPUs(monkeypatch, count=1, capability=(6, 1), name="Tesla P100")
    rt = runtime.setup(gpus_wanted=0, mixed_precision=True)
    assert not rt.mixed_precision and "6.1" in rt.mixed_precision_reason
    assert keras.mixed_precision.global_policy().name == "float32"


def test_extraction_sets_memory_growth_on_every_gpu_even_when_it_uses_one(monkeypatch):
    from trainer.backbone_settings import feature_settings
    from trainer.feeder import extraction_devices

    gpus = RecordedGPUs(monkeypatch, count=2)
    settings = feature_settings({"backbone": "efficientnetv2b0", "weights": "none", "frames": 4, "image_size": 32})
    assert extraction_devices(settings, gpus=1) == ["/device:GPU:0"]
    assert gpus.memory_growth == {"/physical_device:GPU:0": True, "/physical_device:GPU:1": True}
    gpus.initialise()


# ---- the effective precision of extraction: part of the cache key ----------------------------------

def _settings(**data):
    from trainer.backbone_settings import feature_settings

    return feature_settings({"backbone": "convnext_tiny", "weights": "none", "frames": 4, "image_size": 32, **data})


def test_precision_auto_is_in_the_cache_key(monkeypatch):
    from trainer.cache import settings_fingerprint

    cpu = _settings()
    assert cpu["precision"] == "float32"
    # a CPU's float32 features keep the key they had before precision was recorded
    legacy = settings_fingerprint({k: cpu[k] for k in ("backbone", "weights_id", "image_size", "frames", "sampler")})
    assert cpu["fingerprint"] == legacy
    RecordedGPUs(monkeypatch, count=1, capability=(8, 9))
    gpu = _settings()
    assert gpu["precision"] == "float16" and gpu["fingerprint"] != cpu["fingerprint"]
    assert _settings(precision="bfloat16")["fingerprint"] not in (cpu["fingerprint"], gpu["fingerprint"])


def test_bfloat16_backbones_only_on_compute_capability_8(monkeypatch):
    gpus = RecordedGPUs(monkeypatch, count=1, capability=(7, 5), name="Tesla T4")
    with pytest.raises(UsageError, match=r"data.precision bfloat16 needs a GPU of compute capability 8.0 or newer; "
                                         r"GPU 0 \(Tesla T4\) is 7.5") as err:
        _settings(precision="bfloat16")
    assert "\n" not in str(err.value)
    gpus.capability = (8, 0)
    assert _settings(precision="bfloat16")["precision"] == "bfloat16"


def test_the_backbone_is_built_in_the_recorded_precision(monkeypatch, float32_after):
    """A model trained on float32 features predicts with a float32 backbone, even on a GPU."""
    from trainer.backbone import KerasBackbone
    from trainer.backbone_settings import backbone_policy

    assert backbone_policy("float32", on_gpu=True) == "float32"
    assert backbone_policy("float16", on_gpu=True) == "mixed_float16"
    assert backbone_policy("float16", on_gpu=False) == "float32"  # float16 is emulated on CPUs
    assert backbone_policy("bfloat16", on_gpu=False) == "mixed_bfloat16"
    assert backbone_policy(None, on_gpu=True) == "mixed_float16"  # caches from before it was recorded
    backbone = KerasBackbone(_settings(), batch_size=2)
    assert backbone.model.get_layer("convnext_tiny").dtype_policy.name == "float32"


# ---- train.gpus auto: the faster of one GPU and all of them -----------------------------------------

def test_auto_on_a_cpu_only_machine_means_the_cpu_and_times_nothing(float32_after):
    def never(visible):
        raise AssertionError("nothing to measure without GPUs")

    rt = runtime.setup(gpus_wanted="auto", mixed_precision=True, choose=never)
    assert rt.devices == ["/cpu:0"] and rt.replicas == 1 and rt.choice is None
    assert rt.devices_reason == "no GPU visible, so the CPU trains (train.gpus auto: nothing to measure)"


def test_auto_times_one_gpu_against_all_and_keeps_the_faster(monkeypatch, float32_after):
    from trainer import device_choice

    gpus = RecordedGPUs(monkeypatch, count=2)
    rates = {1: 900.0, 2: 1500.0}
    timed = []

    def fake_timing(devices):  # what time_training measures on a real machine
        timed.append(list(devices))
        return device_choice.Timing(rates[len(devices)], 200, 3.0)

    rt = runtime.setup(gpus_wanted="auto", mixed_precision=True,
                       choose=lambda visible: device_choice.choose(visible, 64, fake_timing))
    assert timed == [["/gpu:0"], ["/gpu:0", "/gpu:1"]]
    assert rt.devices == ["/gpu:0", "/gpu:1"] and rt.replicas == 2
    assert set(gpus.memory_growth.values()) == {True}
    assert rt.devices_reason.startswith("train.gpus auto: 2 GPUs (measured in ")
    assert "1 GPU 900 samples/s (200 steps), 2 GPUs 1,500 samples/s (200 steps); the faster, 1.67x)" in rt.devices_reason
    record = rt.choice.record()
    assert record["samples_per_s"] == {"1": 900.0, "2": 1500.0} and record["chosen"] == 2
    # the policy is set before timing (what is timed is what trains) and again after
    assert keras.mixed_precision.global_policy().name == "mixed_float16"

    rates[1] = 2000.0  # one GPU faster: one GPU
    rt = runtime.setup(gpus_wanted="auto", mixed_precision=True,
                       choose=lambda visible: device_choice.choose(visible, 64, fake_timing))
    assert rt.devices == ["/gpu:0"] and rt.replicas == 1

    # a resumed run reuses the recorded figures and times nothing
    timed.clear()
    again = device_choice.choose(["/gpu:0", "/gpu:1"], 64, fake_timing, recorded=record)
    assert timed == [] and again.devices == ["/gpu:0", "/gpu:1"] and again.reused
    assert "measured when the run started: 1 GPU 900 samples/s (200 steps), 2 GPUs 1,500" in again.reason
    # ... unless the machine changed under it
    assert not device_choice.choose(["/gpu:0", "/gpu:1", "/gpu:2"], 64, fake_timing, recorded=record).reused
    # a count that cannot split the global batch evenly is not a candidate
    assert device_choice.candidate_counts(4, 64) == [1, 4]
    assert device_choice.candidate_counts(3, 64) == [1, 2]
    assert device_choice.candidate_counts(2, 17) == [1]
    timed.clear()
    odd = device_choice.choose(["/gpu:0", "/gpu:1"], 17, fake_timing)
    assert timed == [] and odd.devices == ["/gpu:0"] and "does not split evenly" in odd.reason
