"""Keras weight initializers by name, in NumPy, with Keras 3's defaults.

They give a freshly built model sensible weights (the same distributions as
Keras, not the same random draws: Keras's RNG streams are its own). ``get``
accepts a name (``"glorot_uniform"`` or ``"GlorotUniform"``), a Keras config
dict, an ``Initializer`` instance or a callable ``f(shape, dtype)``.
"""
import math

import numpy as np


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class: ``init(shape, dtype) -> np.ndarray``."""

    def __init__(self, seed=None):
        self.seed = seed
        self._own_rng = None if seed is None else np.random.default_rng(seed)

    @property
    def _rng(self):
        """The initializer's own generator when seeded, else the process-wide one
        that ``rnnengine.training.set_random_seed`` seeds (as Keras's global seed)."""
        if self._own_rng is not None:
            return self._own_rng
        from ..training import random as _random

        return _random.generator()

    def __call__(self, shape, dtype="float32"):
        return np.asarray(self.sample(tuple(shape)), dtype=dtype)

    def get_config(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class Zeros(Initializer):
    def sample(self, shape):
        return np.zeros(shape)


class Ones(Initializer):
    def sample(self, shape):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value=0.0):
        super().__init__()
        self.value = value

    def sample(self, shape):
        return np.full(shape, self.value)


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def sample(self, shape):
        return self._rng.normal(self.mean, self.stddev, shape)


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = minval, maxval

    def sample(self, shape):
        return self._rng.uniform(self.minval, self.maxval, shape)


def _truncated_normal(rng, stddev, shape):
    # Redraw values beyond two standard deviations, as Keras's truncated normal does.
    out = rng.normal(0.0, stddev, shape)
    bad = np.abs(out) > 2 * stddev
    while bad.any():
        out[bad] = rng.normal(0.0, stddev, int(bad.sum()))
        bad = np.abs(out) > 2 * stddev
    return out


class TruncatedNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def sample(self, shape):
        return self.mean + _truncated_normal(self._rng, self.stddev, shape)


class VarianceScaling(Initializer):
    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if scale <= 0:
            raise ValueError(f"Argument `scale` must be positive float. Received: scale={scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"Invalid `mode` argument: {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform", "normal"):
            raise ValueError(f"Invalid `distribution` argument: {distribution!r}")
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def sample(self, shape):
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * scale)
            return self._rng.uniform(-limit, limit, shape)
        if self.distribution == "truncated_normal":
            # 0.879... is the stddev of a unit normal truncated to [-2, 2].
            return _truncated_normal(self._rng, math.sqrt(scale) / 0.87962566103423978, shape)
        return self._rng.normal(0.0, math.sqrt(scale), shape)


def _scaling(scale, mode, distribution):
    class _Preset(VarianceScaling):
        def __init__(self, seed=None):
            super().__init__(scale, mode, distribution, seed)

        def get_config(self):
            return {"seed": self.seed}

    return _Preset


class GlorotUniform(_scaling(1.0, "fan_avg", "uniform")):
    pass


class GlorotNormal(_scaling(1.0, "fan_avg", "truncated_normal")):
    pass


class HeUniform(_scaling(2.0, "fan_in", "uniform")):
    pass


class HeNormal(_scaling(2.0, "fan_in", "truncated_normal")):
    pass


class LecunUniform(_scaling(1.0, "fan_in", "uniform")):
    pass


class LecunNormal(_scaling(1.0, "fan_in", "truncated_normal")):
    pass


class Orthogonal(Initializer):
    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = gain

    def sample(self, shape):
        if len(shape) < 2:
            raise ValueError(f"The Orthogonal initializer needs a shape of rank >= 2. Received: {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        flat = self._rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(flat)
        q = q * np.sign(np.diag(r))  # make the decomposition unique, as Keras does
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)


class Identity(Initializer):
    def __init__(self, gain=1.0):
        super().__init__()
        self.gain = gain

    def sample(self, shape):
        if len(shape) != 2:
            raise ValueError(f"The Identity initializer needs a 2-D shape. Received: {shape}")
        return self.gain * np.eye(*shape)


_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant,
    "random_normal": RandomNormal, "random_uniform": RandomUniform,
    "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal,
    "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
    "orthogonal": Orthogonal, "identity": Identity,
    # Keras's short aliases
    "uniform": RandomUniform, "normal": RandomNormal,
}
_BY_CLASS = {cls.__name__.lower(): cls for cls in _BY_NAME.values()}


def get(identifier):
    """An initializer callable for ``identifier`` (name, config dict, object)."""
    if isinstance(identifier, Initializer) or (callable(identifier) and not isinstance(identifier, type)):
        return identifier
    config = {}
    if isinstance(identifier, dict):
        config = dict(identifier.get("config") or {})
        identifier = identifier.get("class_name")
    if isinstance(identifier, str):
        key = identifier.lower()
        cls = _BY_NAME.get(key) or _BY_CLASS.get(key.replace("_", ""))
        if cls is not None:
            config.pop("dtype", None)
            return cls(**config)
    raise ValueError(f"Could not interpret initializer identifier: {identifier!r}")
