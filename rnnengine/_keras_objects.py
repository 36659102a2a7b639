"""Keras 3's object registry pattern for small option objects (regularizers,
constraints): ``serialize``, ``deserialize`` and ``get`` with Keras's
identifiers (None, a name, a serialized dict, an instance, a class, a callable)
and Keras 3's serialized form ``{"module", "class_name", "config",
"registered_name"}``. One implementation, configured per kind."""


class Registry:
    """``classes``: Keras class name -> class (the base included); ``names``:
    the string identifiers ``get`` accepts; ``config_cls``: the stand-in for a
    Keras class rnnengine does not implement (kept as its config);
    ``base_usable``: whether the base class itself may be deserialized."""

    def __init__(self, kind, module, base, classes, names, config_cls, base_usable):
        self.kind, self.module, self.base = kind, module, base
        self.classes, self.names, self.config_cls = classes, names, config_cls
        self.base_usable = base_usable

    def serialize(self, obj):
        if obj is None:
            return None
        if isinstance(obj, self.config_cls):
            return dict(obj.entry)
        name = type(obj).__name__
        if self.classes.get(name) is type(obj):
            return {"module": self.module, "class_name": name, "config": obj.get_config(),
                    "registered_name": None}
        if isinstance(obj, self.base):
            return {"module": type(obj).__module__, "class_name": name, "config": obj.get_config(),
                    "registered_name": name}
        raise ValueError(f"Cannot serialize {self.kind} {obj!r}: only {self.base.__name__} objects have a config.")

    def deserialize(self, config, lenient=False):
        if not isinstance(config, dict):
            raise ValueError(f"Could not interpret {self.kind} identifier: {config}")
        name = config.get("class_name")
        cls = self.classes.get(name)
        if cls is None or (cls is self.base and not self.base_usable):
            if lenient and isinstance(name, str):
                return self.config_cls(config)
            implemented = sorted(c for c in self.classes if c != self.base.__name__)
            raise ValueError(f"Could not interpret {self.kind} identifier: {config} (rnnengine implements "
                             f"{implemented})")
        inner = config.get("config") or {}
        if not isinstance(inner, dict):
            raise ValueError(f"Could not interpret {self.kind} identifier: {config}")
        return cls.from_config(dict(inner))

    def get(self, identifier):
        if identifier is None:
            return None
        if isinstance(identifier, dict):
            return self.deserialize(identifier)
        if isinstance(identifier, str):
            obj = self.names.get(identifier)
            if obj is None:
                raise ValueError(f"Could not interpret {self.kind} identifier: {identifier}")
        else:
            obj = identifier
        if isinstance(obj, type):
            return obj()
        if callable(obj):
            return obj
        raise ValueError(f"Could not interpret {self.kind} identifier: {identifier}")
