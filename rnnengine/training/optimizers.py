"""Keras 3's optimizers, over one flat parameter array.

Each optimizer's ``update`` is the ``update_step`` of its Keras 3 class
(``keras/src/optimizers/<name>.py``), line for line, in the variables' dtype and
in Keras's order of operations, applied to all trainable weights at once (they
are one flat array, ``training/params.py``; so are the slot variables). Around
it, ``apply`` runs what Keras's ``BaseOptimizer.apply`` does:

1. ``loss_scale_factor``: gradients divided by it;
2. clipping, the first set of: ``clipnorm`` (each variable's gradient scaled to
   at most that L2 norm: ``g * clipnorm / max(||g||, clipnorm)``),
   ``global_clipnorm`` (all gradients scaled by
   ``clipnorm * min(1 / global_norm, 1 / clipnorm)``), ``clipvalue``;
3. weight decay (``weight_decay``: ``w -= w * weight_decay * learning_rate``);
4. the update, with ``iterations`` (the number of steps taken so far) as Keras's
   ``self.iterations``;
5. the weights' constraints (``kernel_constraint`` & co., ``rnnengine.constraints``):
   each constrained weight is replaced by ``constraint(weight)``, after the
   update, as Keras's ``variable.assign(variable.constraint(variable))``; then
   ``iterations += 1``.

The learning rate is held as float32, as Keras's ``learning_rate`` variable is
(``0.001`` is ``0.0010000000474974513``), then cast to the variables' dtype. It
may be a callable ``schedule(iterations) -> float`` (a Keras
``LearningRateSchedule`` object works). ``use_ema`` and
``gradient_accumulation_steps`` are not supported and raise.
"""
import numpy as np


__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "Nadam", "Adadelta", "get"]


class Optimizer:
    """Base class. Subclasses set ``_slot_names`` and implement ``update``."""

    _slot_names = ()
    _defaults = {}

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 loss_scale_factor=None, gradient_accumulation_steps=None, name=None, **kwargs):
        kwargs.pop("decay", None) if kwargs.get("decay") in (None, 0, 0.0) else None
        kwargs.pop("is_legacy_optimizer", None)
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unrecognized keyword arguments: {sorted(kwargs)}")
        if use_ema:
            raise NotImplementedError(f"{type(self).__name__}: use_ema=True is not supported by rnnengine.")
        if gradient_accumulation_steps:
            raise NotImplementedError(
                f"{type(self).__name__}: gradient_accumulation_steps is not supported by rnnengine.")
        if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
            )
        for arg, value in (("clipnorm", clipnorm), ("clipvalue", clipvalue), ("global_clipnorm", global_clipnorm),
                           ("weight_decay", weight_decay), ("loss_scale_factor", loss_scale_factor)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
                raise ValueError(f"Argument `{arg}` must be a float. Received: {arg}={value!r}")
        self.name = name or _snake(type(self).__name__)
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.loss_scale_factor = loss_scale_factor
        self.use_ema = False
        self.learning_rate = learning_rate
        self.iterations = 0
        self._slots = None
        self._scratch = None

    # -- learning rate ---------------------------------------------------------------------
    @property
    def learning_rate(self):
        """The current learning rate (a float; a schedule is evaluated at ``iterations``)."""
        if self._schedule is not None:
            return float(np.float32(self._schedule(self.iterations)))
        return float(self._learning_rate)

    @learning_rate.setter
    def learning_rate(self, value):
        if callable(value) and not isinstance(value, (int, float, np.number)):
            self._schedule, self._learning_rate = value, None
            return
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
            raise ValueError(f"{type(self).__name__}: learning_rate must be a finite float or a schedule; "
                             f"received {value!r}")
        self._schedule = None
        self._learning_rate = np.float32(value)

    lr = learning_rate

    # -- state -----------------------------------------------------------------------------
    def build(self, n, dtype):
        """Allocate the slot variables for ``n`` trainable values of ``dtype``."""
        self._slots = {name: np.full(n, self._slot_init(name), dtype) for name in self._slot_names}
        self._scratch = (np.empty(n, dtype), np.empty(n, dtype))
        self._built_for = (n, np.dtype(dtype))

    def _slot_init(self, name):
        return 0.0

    @property
    def variables(self):
        """[iterations, learning_rate] then the slot arrays, as Keras lists them."""
        return [np.int64(self.iterations), np.float32(self.learning_rate)] + list((self._slots or {}).values())

    # -- one step ----------------------------------------------------------------------------
    def apply(self, params, grads, segments, constraints=()):
        """Update ``params`` (flat, trainable) in place from ``grads`` (flat; may be
        modified). ``segments`` are the (start, stop) of each variable;
        ``constraints`` are ``(weight view into params, constraint)`` pairs, applied
        after the update."""
        n, dtype = params.size, params.dtype
        if self._slots is None or self._built_for != (n, np.dtype(dtype)):
            self.build(n, dtype)
        if n == 0:
            self.iterations += 1
            return
        if self.loss_scale_factor is not None:
            np.divide(grads, dtype.type(self.loss_scale_factor), out=grads)
        self._clip(grads, segments)
        lr = dtype.type(np.float32(self.learning_rate))
        if self.weight_decay is not None:
            # forward (Keras): variable.assign(variable - variable * wd * lr)
            tmp = self._scratch[0]
            np.multiply(params, dtype.type(self.weight_decay), out=tmp)
            np.multiply(tmp, lr, out=tmp)
            np.subtract(params, tmp, out=params)
        self.update(params, grads, lr, dtype)
        for weight, constraint in constraints:
            # forward (Keras): variable.assign(variable.constraint(variable))
            np.copyto(weight, np.asarray(constraint(weight)), casting="unsafe")
        self.iterations += 1

    def _clip(self, grads, segments):
        dtype = grads.dtype
        if self.clipnorm and self.clipnorm > 0:
            # tf.clip_by_norm per variable: g * clipnorm / max(||g||, clipnorm)
            c = dtype.type(self.clipnorm)
            for a, b in segments:
                g = grads[a:b]
                l2sum = np.dot(g, g)
                l2norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
                np.multiply(g, c, out=g)
                np.divide(g, max(dtype.type(l2norm), c), out=g)
        elif self.global_clipnorm and self.global_clipnorm > 0:
            c = dtype.type(self.global_clipnorm)
            sq = sum((np.dot(grads[a:b], grads[a:b]) for a, b in segments), dtype.type(0))
            use_norm = dtype.type(np.sqrt(sq))
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = c * min(dtype.type(1) / use_norm, dtype.type(1) / c) + (use_norm - use_norm)
            np.multiply(grads, dtype.type(scale), out=grads)
        elif self.clipvalue and self.clipvalue > 0:
            v = dtype.type(self.clipvalue)
            np.clip(grads, -v, v, out=grads)

    def update(self, p, g, lr, dtype):
        raise NotImplementedError

    def _slot_groups(self):
        """Slot names grouped as Keras's ``build`` creates them (one
        ``add_optimizer_variables`` call per group, interleaved per weight), for
        saving the state in Keras's order; None when it cannot be expressed."""
        return None

    # -- config ----------------------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
                  "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                  "clipvalue": self.clipvalue, "use_ema": False, "ema_momentum": 0.99,
                  "ema_overwrite_frequency": None, "loss_scale_factor": self.loss_scale_factor,
                  "gradient_accumulation_steps": None}
        config.update({k: getattr(self, k) for k in self._defaults})
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} learning_rate={self.learning_rate}>"


def _snake(name):
    import re

    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class SGD(Optimizer):
    """Keras's ``SGD(learning_rate=0.01, momentum=0.0, nesterov=False)``."""

    _defaults = {"momentum": 0.0, "nesterov": False}

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not isinstance(momentum, (int, float, np.number)) or momentum < 0 or momentum > 1:
            raise ValueError("`momentum` must be a float between [0, 1].")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self._slot_names = ("momentum",) if self.momentum != 0 else ()

    def _slot_groups(self):
        return [("momentum",)] if self.momentum != 0 else []

    def update(self, p, g, lr, dtype):
        if self.momentum == 0:
            # variable -= gradient * lr
            tmp = self._scratch[0]
            np.multiply(g, lr, out=tmp)
            np.subtract(p, tmp, out=p)
            return
        m, tmp = self._slots["momentum"], self._scratch[0]
        momentum = dtype.type(self.momentum)
        # m = m * momentum - gradient * lr
        np.multiply(g, lr, out=tmp)
        np.multiply(m, momentum, out=m)
        np.subtract(m, tmp, out=m)
        if self.nesterov:
            # variable += m * momentum - gradient * lr
            tmp2 = self._scratch[1]
            np.multiply(m, momentum, out=tmp2)
            np.subtract(tmp2, tmp, out=tmp2)
            np.add(p, tmp2, out=p)
        else:
            np.add(p, m, out=p)


class Adam(Optimizer):
    """Keras's ``Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False)``.

    Keras's form, with epsilon outside the bias correction::

        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m += (g - m) * (1 - beta_1);  v += (g**2 - v) * (1 - beta_2)
        variable -= (m * alpha) / (sqrt(v) + epsilon)
    """

    _defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, name=None,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, bool(amsgrad)
        self._slot_names = ("momentum", "velocity") + (("velocity_hat",) if self.amsgrad else ())

    def _slot_groups(self):
        return [("momentum", "velocity")] + ([("velocity_hat",)] if self.amsgrad else [])

    def update(self, p, g, lr, dtype):
        m, v = self._slots["momentum"], self._slots["velocity"]
        tmp, tmp2 = self._scratch
        local_step = dtype.type(self.iterations + 1)
        beta_1_power = np.power(dtype.type(self.beta_1), local_step)
        beta_2_power = np.power(dtype.type(self.beta_2), local_step)
        one = dtype.type(1)
        alpha = lr * np.sqrt(one - beta_2_power) / (one - beta_1_power)
        # m += (g - m) * (1 - beta_1)
        np.subtract(g, m, out=tmp)
        np.multiply(tmp, dtype.type(1 - self.beta_1), out=tmp)
        np.add(m, tmp, out=m)
        # v += (g^2 - v) * (1 - beta_2)
        np.multiply(g, g, out=tmp)
        np.subtract(tmp, v, out=tmp)
        np.multiply(tmp, dtype.type(1 - self.beta_2), out=tmp)
        np.add(v, tmp, out=v)
        if self.amsgrad:
            v_hat = self._slots["velocity_hat"]
            np.maximum(v_hat, v, out=v_hat)
            v = v_hat
        # variable -= (m * alpha) / (sqrt(v) + epsilon)
        np.multiply(m, alpha, out=tmp2)
        np.sqrt(v, out=tmp)
        np.add(tmp, dtype.type(self.epsilon), out=tmp)
        np.divide(tmp2, tmp, out=tmp2)
        np.subtract(p, tmp2, out=p)


class AdamW(Adam):
    """Keras's ``AdamW``: Adam with decoupled ``weight_decay`` (default 0.004)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, name=None, **kwargs):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay, name=name, **kwargs)


class RMSprop(Optimizer):
    """Keras's ``RMSprop(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False)``."""

    _defaults = {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False}

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, name=None,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, bool(centered)
        self._slot_names = (("velocity",) + (("momentum",) if momentum > 0 else ())
                            + (("average_gradient",) if centered else ()))

    def _slot_groups(self):
        return [(name,) for name in self._slot_names]

    def update(self, p, g, lr, dtype):
        velocity = self._slots["velocity"]
        tmp, tmp2 = self._scratch
        rho = dtype.type(self.rho)
        # velocity = rho * velocity + (1 - rho) * g^2
        np.multiply(g, g, out=tmp)
        np.multiply(tmp, dtype.type(1 - self.rho), out=tmp)
        np.multiply(velocity, rho, out=velocity)
        np.add(velocity, tmp, out=velocity)
        if self.centered:
            average_grad = self._slots["average_gradient"]
            np.multiply(g, dtype.type(1 - self.rho), out=tmp)
            np.multiply(average_grad, rho, out=average_grad)
            np.add(average_grad, tmp, out=average_grad)
            # denominator = velocity - average_grad^2 + epsilon
            np.multiply(average_grad, average_grad, out=tmp)
            np.subtract(velocity, tmp, out=tmp)
            np.add(tmp, dtype.type(self.epsilon), out=tmp)
        else:
            np.add(velocity, dtype.type(self.epsilon), out=tmp)
        # increment = lr * g / sqrt(denominator)
        np.sqrt(tmp, out=tmp)
        np.multiply(g, lr, out=tmp2)
        np.divide(tmp2, tmp, out=tmp2)
        if self.momentum > 0:
            momentum = self._slots["momentum"]
            np.multiply(momentum, dtype.type(self.momentum), out=momentum)
            np.add(momentum, tmp2, out=momentum)
            np.subtract(p, momentum, out=p)
        else:
            np.subtract(p, tmp2, out=p)


class Adagrad(Optimizer):
    """Keras's ``Adagrad(learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7)``."""

    _defaults = {"initial_accumulator_value": 0.1, "epsilon": 1e-7}
    _slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon

    def _slot_init(self, name):
        return self.initial_accumulator_value

    def _slot_groups(self):
        return [("accumulator",)]

    def update(self, p, g, lr, dtype):
        acc = self._slots["accumulator"]
        tmp, tmp2 = self._scratch
        # accumulator += g^2; variable -= lr * g / sqrt(accumulator + epsilon)
        np.multiply(g, g, out=tmp)
        np.add(acc, tmp, out=acc)
        np.add(acc, dtype.type(self.epsilon), out=tmp)
        np.sqrt(tmp, out=tmp)
        np.multiply(g, lr, out=tmp2)
        np.divide(tmp2, tmp, out=tmp2)
        np.subtract(p, tmp2, out=p)


class Adamax(Optimizer):
    """Keras's ``Adamax(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)``."""

    _defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    _slot_names = ("m", "u")

    def _slot_groups(self):
        return [("m", "u")]

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def update(self, p, g, lr, dtype):
        m, u = self._slots["m"], self._slots["u"]
        tmp, tmp2 = self._scratch
        beta_1_power = np.power(dtype.type(self.beta_1), dtype.type(self.iterations + 1))
        # m += (g - m) * (1 - beta_1); u = max(beta_2 * u, |g|)
        np.subtract(g, m, out=tmp)
        np.multiply(tmp, dtype.type(1 - self.beta_1), out=tmp)
        np.add(m, tmp, out=m)
        np.multiply(u, dtype.type(self.beta_2), out=u)
        np.abs(g, out=tmp)
        np.maximum(u, tmp, out=u)
        # variable -= lr * m / ((1 - beta_1_power) * (u + epsilon))
        np.multiply(m, lr, out=tmp2)
        np.add(u, dtype.type(self.epsilon), out=tmp)
        np.multiply(tmp, dtype.type(1) - beta_1_power, out=tmp)
        np.divide(tmp2, tmp, out=tmp2)
        np.subtract(p, tmp2, out=p)


class Nadam(Optimizer):
    """Keras's ``Nadam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)``."""

    _defaults = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    _slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self._u_product = 1.0

    def update(self, p, g, lr, dtype):
        m, v = self._slots["momentum"], self._slots["velocity"]
        tmp, tmp2 = self._scratch
        decay = dtype.type(0.96)
        beta_1, beta_2 = dtype.type(self.beta_1), dtype.type(self.beta_2)
        local_step, next_step = dtype.type(self.iterations + 1), dtype.type(self.iterations + 2)
        # Keras's _backend_update_step: u_product *= beta_1 * (1 - 0.5 * 0.96^(t))
        u_product = dtype.type(self._u_product) * beta_1 * (
            dtype.type(1.0) - dtype.type(0.5) * np.power(decay, local_step))
        self._u_product = u_product
        u_t = beta_1 * (dtype.type(1.0) - dtype.type(0.5) * np.power(decay, local_step))
        u_t_1 = beta_1 * (dtype.type(1.0) - dtype.type(0.5) * np.power(decay, next_step))
        u_product_t_1 = u_product * u_t_1
        beta_2_power = np.power(beta_2, local_step)
        np.subtract(g, m, out=tmp)
        np.multiply(tmp, dtype.type(1 - self.beta_1), out=tmp)
        np.add(m, tmp, out=m)
        np.multiply(g, g, out=tmp)
        np.subtract(tmp, v, out=tmp)
        np.multiply(tmp, dtype.type(1 - self.beta_2), out=tmp)
        np.add(v, tmp, out=v)
        # m_hat = u_t_1 * m / (1 - u_product_t_1) + (1 - u_t) * g / (1 - u_product)
        np.multiply(m, u_t_1, out=tmp2)
        np.divide(tmp2, dtype.type(1) - u_product_t_1, out=tmp2)
        np.multiply(g, dtype.type(1) - u_t, out=tmp)
        np.divide(tmp, dtype.type(1) - u_product, out=tmp)
        np.add(tmp2, tmp, out=tmp2)
        # variable -= m_hat * lr / (sqrt(v / (1 - beta_2_power)) + epsilon)
        np.multiply(tmp2, lr, out=tmp2)
        np.divide(v, dtype.type(1) - beta_2_power, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.add(tmp, dtype.type(self.epsilon), out=tmp)
        np.divide(tmp2, tmp, out=tmp2)
        np.subtract(p, tmp2, out=p)


class Adadelta(Optimizer):
    """Keras's ``Adadelta(learning_rate=0.001, rho=0.95, epsilon=1e-7)``."""

    _defaults = {"rho": 0.95, "epsilon": 1e-7}
    _slot_names = ("accumulated_grad", "accumulated_delta_var")

    def _slot_groups(self):
        return [self._slot_names]

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.epsilon = rho, epsilon

    def update(self, p, g, lr, dtype):
        acc_g, acc_d = self._slots["accumulated_grad"], self._slots["accumulated_delta_var"]
        tmp, tmp2 = self._scratch
        rho, eps = dtype.type(self.rho), dtype.type(self.epsilon)
        one_minus_rho = dtype.type(1 - self.rho)
        # accumulated_grad = rho * accumulated_grad + (1 - rho) * g^2
        np.multiply(g, g, out=tmp)
        np.multiply(tmp, one_minus_rho, out=tmp)
        np.multiply(acc_g, rho, out=acc_g)
        np.add(acc_g, tmp, out=acc_g)
        # delta_var = -(sqrt(accumulated_delta_var + eps) * g) / sqrt(accumulated_grad + eps)
        np.add(acc_d, eps, out=tmp2)
        np.sqrt(tmp2, out=tmp2)
        np.multiply(tmp2, g, out=tmp2)
        np.add(acc_g, eps, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(tmp2, tmp, out=tmp2)
        np.negative(tmp2, out=tmp2)
        # accumulated_delta_var = rho * accumulated_delta_var + (1 - rho) * delta_var^2
        np.multiply(tmp2, tmp2, out=tmp)
        np.multiply(tmp, one_minus_rho, out=tmp)
        np.multiply(acc_d, rho, out=acc_d)
        np.add(acc_d, tmp, out=acc_d)
        # variable += lr * delta_var
        np.multiply(tmp2, lr, out=tmp2)
        np.add(p, tmp2, out=p)


_CLASSES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
            "adamax": Adamax, "nadam": Nadam, "adadelta": Adadelta}


def get(identifier):
    """An ``Optimizer`` for ``identifier``: a name (``"adam"``, ``"Adam"``, ``"sgd"``),
    an ``Optimizer``, a Keras config dict, or a Keras optimizer object (rebuilt from
    its config). Raises ``ValueError`` for anything else, listing what is supported."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in _CLASSES:
        return _CLASSES[identifier.lower()]()
    config, cls_name = None, None
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls_name, config = identifier["class_name"], dict(identifier.get("config", {}))
    elif hasattr(identifier, "get_config") and type(identifier).__name__.lower() in _CLASSES:
        cls_name, config = type(identifier).__name__, dict(identifier.get_config())
    if cls_name is not None and cls_name.lower() in _CLASSES:
        import inspect

        cls = _CLASSES[cls_name.lower()]
        accepted = set(inspect.signature(cls.__init__).parameters) | set(
            inspect.signature(Optimizer.__init__).parameters)
        config = {k: v for k, v in config.items() if k in accepted}
        if isinstance(config.get("learning_rate"), dict):
            raise ValueError(f"Optimizer {cls_name}: learning-rate schedules given as configs are not "
                             "supported; pass a callable schedule(iterations) instead.")
        return cls(**config)
    raise ValueError(
        f"Could not interpret optimizer identifier: {identifier!r}. rnnengine supports: "
        f"{', '.join(sorted(c.__name__ for c in _CLASSES.values()))} (by name or instance)."
    )
