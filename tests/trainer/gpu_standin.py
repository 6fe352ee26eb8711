"""A recording stand-in for the `tf.config` calls that only a GPU machine answers.

No GPU exists where the tests run, so what a GPU alone decides (the device list, the
compute capability, the memory-growth settings) is recorded instead of performed. The
shapes are TensorFlow's own (tensorflow/python/framework/config.py docstrings):
`list_physical_devices("GPU")` gives `PhysicalDevice(name='/physical_device:GPU:0',
device_type='GPU')`, `list_logical_devices("GPU")` gives `LogicalDevice(name='/device:GPU:0',
device_type='GPU')`, and `experimental.get_device_details` gives
`{'device_name': ..., 'compute_capability': (major, minor)}`.

`initialise()` applies the rule TensorFlow applies when its context starts
(tensorflow/python/eager/context.py, `_compute_gpu_options`): the memory-growth setting
of every visible GPU must be the same, else `ValueError("Memory growth cannot differ
between GPU devices")`. A device never set counts as None, as there.
"""

from __future__ import annotations


class RecordedGPUs:
    def __init__(self, monkeypatch, count: int = 2, capability: tuple[int, int] = (8, 9),
                 name: str = "NVIDIA RTX 5000 Ada Generation"):
        import tensorflow as tf

        self.gpus = [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU")
                     for i in range(count)]
        self.logical = [tf.config.LogicalDevice(name=f"/device:GPU:{i}", device_type="GPU") for i in range(count)]
        self.memory_growth: dict[str, bool | None] = {d.name: None for d in self.gpus}
        self.calls: list[tuple] = []
        self.capability = capability
        self.name = name
        real_physical = tf.config.list_physical_devices
        real_logical = tf.config.list_logical_devices

        def list_physical_devices(device_type=None):
            if device_type == "GPU":
                return list(self.gpus)
            return real_physical(device_type) + (list(self.gpus) if device_type is None else [])

        def list_logical_devices(device_type=None):
            if device_type == "GPU":
                return list(self.logical)
            return real_logical(device_type) + (list(self.logical) if device_type is None else [])

        def set_memory_growth(device, enable):
            self.calls.append(("set_memory_growth", device.name, enable))
            if device.name not in self.memory_growth:
                raise ValueError(f"Unrecognized device: {device!r}")
            self.memory_growth[device.name] = enable

        def get_device_details(device):
            self.calls.append(("get_device_details", device.name))
            return {"device_name": self.name, "compute_capability": self.capability}

        monkeypatch.setattr(tf.config, "list_physical_devices", list_physical_devices)
        monkeypatch.setattr(tf.config, "list_logical_devices", list_logical_devices)
        monkeypatch.setattr(tf.config.experimental, "set_memory_growth", set_memory_growth)
        monkeypatch.setattr(tf.config.experimental, "get_device_details", get_device_details)

    def initialise(self) -> None:
        """What TensorFlow checks when its context starts on these GPUs."""
        growths = set(self.memory_growth.values())
        if len(growths) > 1:
            raise ValueError("Memory growth cannot differ between GPU devices")
