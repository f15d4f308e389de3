"""A stand-in for NVIDIA's ``tensorrt`` module (which cannot be installed on the CPU machines): just
enough of the Python bindings' surface, with their documented failure modes, to run the build and
open paths of :mod:`perception.backends.engine_build` / :mod:`perception.backends.tensorrt` on a CPU.

It stands in only for TensorRT; none of the project's own components is replaced. Failure modes
copied from the bindings: ``Builder``/``Runtime`` raise ``TypeError`` when their factory returns
null, ``IOptimizationProfile.set_shape`` raises ``RuntimeError`` on bad dimensions,
``create_timing_cache`` may return ``None``, and ``nptype`` raises ``TypeError`` for BF16/FP8.
TensorRT 11 has no ``BuilderFlag.FP16``/``INT8`` nor ``IInt8EntropyCalibrator2``.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field

import numpy as np


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


class LayerType(enum.IntEnum):
    CONVOLUTION = 0
    CONSTANT = 1
    QUANTIZE = 2
    DEQUANTIZE = 3


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...] = (-1, 3, -1, -1)
    dtype: DataType = DataType.FLOAT


@dataclass
class Layer:
    type: LayerType
    outputs: list[Tensor]

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, i: int) -> Tensor:
        return self.outputs[i]


@dataclass
class Network:
    flags: int
    inputs: list[Tensor] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> Tensor:
        return self.inputs[i]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> Layer:
        return self.layers[i]


class Profile:
    def set_shape(self, name, lo, opt, hi) -> None:
        if any(not 0 < a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise RuntimeError(f"set_shape: invalid dimensions for {name}")
        self.shape = (name, tuple(lo), tuple(opt), tuple(hi))


class TimingCache:
    def serialize(self) -> bytes:
        return b"timing"


class Config:
    def __init__(self, module) -> None:
        self.module = module
        self.flags: list = []
        self.profiles: list[Profile] = []
        self.int8_calibrator = None

    def set_memory_pool_limit(self, pool, size) -> None:
        self.workspace = size

    def set_flag(self, flag) -> None:
        self.flags.append(flag)

    def add_optimization_profile(self, profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile) -> bool:
        self.calibration_profile = profile
        return True

    def create_timing_cache(self, blob):
        return self.module.timing_cache_factory(blob)

    def set_timing_cache(self, cache, ignore_mismatch) -> bool:
        if cache is None:
            raise TypeError("set_timing_cache(): incompatible function arguments (None)")
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache


class Builder:
    def __init__(self, logger) -> None:
        module = _MODULES[-1]
        if module.builder_fails:
            raise TypeError("pybind11::init(): factory function returned nullptr")
        self.module = module
        self.networks: list[Network] = []
        module.builders.append(self)

    def create_network(self, flags: int = 0) -> Network:
        net = Network(flags=flags)
        self.networks.append(net)
        return net

    def create_builder_config(self) -> Config:
        self.config = Config(self.module)
        return self.config

    def create_optimization_profile(self):
        return self.module.profile_factory()

    def build_serialized_network(self, network, config):
        self.built = (network, config)
        return b"serialized-engine"


class OnnxParser:
    def __init__(self, network: Network, logger) -> None:
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path: str) -> bool:
        """Fills the network as the real parser would for the module's ``model`` kind."""
        module = _MODULES[-1]
        self.network.inputs = [Tensor("image")]
        dtype = DataType.HALF if module.model == "fp16" else DataType.FLOAT
        layers = [Layer(LayerType.CONSTANT, [Tensor("w", (8, 3, 1, 1), dtype)]),
                  Layer(LayerType.CONVOLUTION, [Tensor("conv", dtype=dtype)])]
        if module.model == "int8":
            layers.insert(0, Layer(LayerType.QUANTIZE, [Tensor("q", dtype=DataType.INT8)]))
        self.network.layers = layers
        return True


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass


class Runtime:
    def __init__(self, logger) -> None:
        if _MODULES[-1].runtime_fails:
            raise TypeError("pybind11::init(): factory function returned nullptr")


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class Context:
    """``IExecutionContext``: shapes and addresses, ``fail_on`` a tensor name refuses its address."""

    def __init__(self, out_channels: dict[str, int]) -> None:
        self.out_channels = out_channels
        self.input_shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}
        self.fail_on: str | None = None

    def set_input_shape(self, name, shape) -> bool:
        self.input_shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        n, _, h, w = self.input_shape
        return (n, self.out_channels[name], h // 4, w // 4)

    def set_tensor_address(self, name, ptr) -> bool:
        if name == self.fail_on:
            return False
        self.addresses[name] = ptr
        return True


_MODULES: list[types.ModuleType] = []


def make(version: str = "10.3.0", *, model: str = "fp32") -> types.ModuleType:
    """A fresh fake ``tensorrt`` module of ``version`` whose parser yields a ``model`` network
    (``fp32``, ``fp16`` or ``int8`` = Q/DQ). Attributes ``builder_fails``, ``runtime_fails``,
    ``timing_cache_factory`` and ``profile_factory`` steer its failure modes."""
    major = int(version.split(".")[0])
    m = types.ModuleType("tensorrt")
    m.__version__ = version
    m.model = model
    m.builder_fails = m.runtime_fails = False
    m.builders = []
    m.timing_cache_factory = lambda blob: TimingCache()
    m.profile_factory = Profile
    flags = {"GPU_FALLBACK": 2}
    if major < 11:
        flags.update(FP16=0, INT8=1)

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        m.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    m.BuilderFlag = types.SimpleNamespace(**flags)
    m.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    for name in ("DataType", "LayerType", "ILogger", "Builder", "OnnxParser", "Runtime", "MemoryPoolType"):
        setattr(m, name, globals()[name])

    def nptype(dtype):
        table = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                 DataType.INT32: np.int32, DataType.UINT8: np.uint8, DataType.BOOL: np.bool_,
                 DataType.INT64: np.int64}
        if dtype not in table:
            raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype. {dtype}")
        return table[dtype]

    m.nptype = nptype
    _MODULES.append(m)
    return m
