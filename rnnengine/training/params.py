"""One flat array for a model's parameters and one for their gradients.

``ParamSet(model)`` copies every weight of every layer into one flat array
(trainable weights first, in Keras's ``model.trainable_weights`` order, then the
frozen ones) and makes each layer's ``_values[i]`` a view of it, and each
layer's ``_grads[i]`` the view of the same slice of the gradient array. So:

- ``zero_grad()`` is one ``fill(0)``;
- an optimizer updates every trainable weight with a handful of vectorized
  NumPy calls over ``params[:n_trainable]`` (the slot variables, Adam's m and v,
  are flat arrays of the same layout);
- per-variable operations (``clipnorm``) use ``segments``: (start, stop) of each
  trainable variable.

Design: the layers keep computing with ``_values`` as before (the kernels read
views of the flat array, in Keras layout). ``set_weights`` replaces a layer's
``_values`` with fresh arrays (so that concurrent ``predict`` calls never see a
half-written set); ``bind()``, run before every training step, notices that by
identity and copies the new values into the flat array. Frozen weights (layer
``trainable=False``) get gradient slices too, since the backward writes them,
but the optimizer never reads them.
"""
import numpy as np


class ParamSet:
    def __init__(self, model):
        entries = []  # (owner layer, index in owner._values, trainable)
        for layer in model.layers:
            trainable = bool(model.trainable and layer.trainable)
            for owner in layer._weight_owners():
                for i in range(len(owner._weight_specs)):
                    entries.append((owner, i, trainable and owner.trainable))
        dtypes = {np.dtype(owner.dtype) for owner, _, _ in entries} | {np.dtype(l.dtype) for l in model.layers
                                                                      if l._weight_specs}
        if len(dtypes) > 1:
            raise NotImplementedError(
                f"Model \"{model.name}\" mixes weight dtypes {sorted(d.name for d in dtypes)}: rnnengine trains "
                "models whose layers share one dtype."
            )
        self.dtype = dtypes.pop() if dtypes else np.dtype("float32")
        entries.sort(key=lambda e: not e[2])  # stable: trainable first, Keras order within each
        self._entries = entries
        self.shapes = [owner._weight_specs[i][1] for owner, i, _ in entries]
        self.names = [f"{owner.name}/{owner._weight_specs[i][0]}" for owner, i, _ in entries]
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self.n_trainable_vars = sum(1 for e in entries if e[2])
        self.n_trainable = int(offsets[self.n_trainable_vars])
        self.segments = [(int(offsets[k]), int(offsets[k + 1])) for k in range(self.n_trainable_vars)]
        self.params = np.zeros(int(offsets[-1]), self.dtype)
        self.grads = np.zeros(int(offsets[-1]), self.dtype)
        self._param_views = [self.params[a:b].reshape(s) for (a, b), s in
                             zip(zip(offsets[:-1], offsets[1:]), self.shapes)]
        self._grad_views = [self.grads[a:b].reshape(s) for (a, b), s in
                            zip(zip(offsets[:-1], offsets[1:]), self.shapes)]
        self.owners = []
        for owner, _, _ in entries:
            if owner not in self.owners:
                self.owners.append(owner)
        self._layers = list(model.layers)
        self.bind(force=True)

    @property
    def trainable_params(self):
        return self.params[:self.n_trainable]

    @property
    def trainable_grads(self):
        return self.grads[:self.n_trainable]

    def bind(self, force=False):
        """Make every owner's ``_values``/``_grads`` the flat views, copying in any
        weights that ``set_weights`` replaced since the last step."""
        changed = set()
        for (owner, i, _), pv, gv in zip(self._entries, self._param_views, self._grad_views):
            if owner._grads is None or len(owner._grads) != len(owner._weight_specs):
                owner._grads = [None] * len(owner._weight_specs)
            if force or owner._values[i] is not pv:
                np.copyto(pv, owner._values[i], casting="unsafe")
                changed.add(id(owner))
            owner._grads[i] = gv
        for owner in self.owners:
            if id(owner) in changed:
                values = list(owner._values)
                for (o, i, _), pv in zip(self._entries, self._param_views):
                    if o is owner:
                        values[i] = pv
                owner._values = values
                owner._pack()

    def zero_grad(self):
        self.grads.fill(0)

    def after_update(self):
        """Refresh packed copies after the optimizer changed ``params`` in place."""
        for owner in self.owners:
            owner._after_update()
