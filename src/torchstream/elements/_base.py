"""What every element shell shares: property storage and the error boundary."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from torchstream.errors import ConfigError
from torchstream.gst import GLib, GObject, Gst
from torchstream.gst.bus import post_error

READWRITE = GObject.ParamFlags.READWRITE

_gobject = ctypes.CDLL("libgobject-2.0.so.0")
_gobject.g_object_ref.argtypes = [ctypes.c_void_p]
_gobject.g_object_ref.restype = ctypes.c_void_p
_gobject.g_object_force_floating.argtypes = [ctypes.c_void_p]


class FactoryMade:
    """First base of every element: hands GStreamer the floating reference it expects.

    An element class written in Python and created by a factory (``gst_parse_launch``,
    ``gst_element_factory_make``, from C or from Python) gets its Python wrapper inside
    PyGObject's instance init, which sinks the new object's floating reference and keeps it as
    the wrapper's own, then leaves the wrapper orphaned. GStreamer then prints "The created
    element should be floating" (GStreamer-CRITICAL), the bin that adds the element takes a
    second reference, and nothing ever drops the wrapper's: every Python element of a
    ``parse_launch`` pipeline outlived the pipeline, with its model. Here a created element
    gets one floating reference for its creator, on top of the wrapper's (a toggle reference,
    as for any wrapper with attributes, so the wrapper lives while GStreamer holds the
    element), and the orphaned wrapper is claimed so that it goes once the last reference
    does.

    The one cost: an element made with ``Gst.ElementFactory.make`` from Python and never
    added to a bin keeps that floating reference, as it would in C.
    """

    def __init__(self) -> None:
        address = hash(self)  # the GObject's address; 0 while Python itself constructs it
        super().__init__()
        if address and not self.is_floating():
            self._made_by_factory = True  # an instance dict: PyGObject uses a toggle ref
            _gobject.g_object_ref(address)
            _gobject.g_object_force_floating(address)
            GObject.Value(GObject.Object, self).get_object()  # claims the orphaned wrapper


_GTYPES = {"string": str, "bool": bool, "element": Gst.Element}
_NUMBER_GTYPES = {
    "uint": (GObject.TYPE_UINT, 0, GLib.MAXUINT),
    "int": (GObject.TYPE_INT, GLib.MININT, GLib.MAXINT),
    "uint64": (GObject.TYPE_UINT64, 0, GLib.MAXUINT64),
    "double": (GObject.TYPE_DOUBLE, -GLib.MAXDOUBLE, GLib.MAXDOUBLE),
}


@dataclass(frozen=True)
class Prop:
    """One element property, declared once: what GObject registers, the default the element
    starts with, the range the element checks when it starts, and the docs' type column.

    A numeric property is registered with its type's whole range and its own range is
    checked at start (:meth:`PropertyStore.check_ranges`): GObject only prints a warning for
    a value outside a declared range and keeps the old value, so the element would run with a
    setting the user did not ask for. ``also`` lists values allowed outside the range (-1 for
    "from the model-proc"). The range is appended to the blurb, where gst-inspect shows it.
    """

    kind: str  # string, bool, element, uint, int, uint64, double
    nick: str
    blurb: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    also: tuple = ()
    readable_only: bool = False
    # the docs' meaning column (markdown) where it says more than the blurb gst-inspect shows
    doc: str = ""

    @property
    def ranged(self) -> bool:
        return self.minimum is not None

    def range_text(self) -> str:
        if not self.ranged:
            return ""
        text = f"{_number(self.minimum)}..{_number(self.maximum)}"
        return " or ".join([_number(v) for v in self.also] + [text])

    def gspec(self) -> tuple:
        """The ``__gproperties__`` tuple PyGObject registers."""
        flags = GObject.ParamFlags.READABLE if self.readable_only else READWRITE
        blurb = f"{self.blurb} [{self.range_text()}]" if self.ranged else self.blurb
        if self.kind in _NUMBER_GTYPES:
            gtype, low, high = _NUMBER_GTYPES[self.kind]
            return (gtype, self.nick, blurb, low, high, self.default, flags)
        if self.kind == "element":
            return (Gst.Element, self.nick, blurb, flags)
        return (_GTYPES[self.kind], self.nick, blurb, self.default, flags)

    def check(self, name: str, value) -> None:
        if self.ranged and value not in self.also and not (
                self.minimum <= value <= self.maximum):
            raise ConfigError(f"property '{name}' must be in {self.range_text()}, got "
                              f"{_number(value)}")


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def string_prop(nick: str, blurb: str, default: str | None, doc: str = "") -> Prop:
    return Prop("string", nick, blurb, default, doc=doc)


def bool_prop(nick: str, blurb: str, default: bool, doc: str = "") -> Prop:
    return Prop("bool", nick, blurb, default, doc=doc)


def double_prop(nick: str, blurb: str, minimum: float, maximum: float, default: float,
                also: tuple = (), doc: str = "") -> Prop:
    return Prop("double", nick, blurb, default, minimum, maximum, also, doc=doc)


def uint_prop(nick: str, blurb: str, minimum: int, maximum: int, default: int,
              doc: str = "") -> Prop:
    return Prop("uint", nick, blurb, default, minimum, maximum, doc=doc)


def int_prop(nick: str, blurb: str, minimum: int, maximum: int, default: int,
             doc: str = "") -> Prop:
    return Prop("int", nick, blurb, default, minimum, maximum, doc=doc)


def gproperties(props: dict[str, Prop]) -> dict[str, tuple]:
    """A class's ``__gproperties__`` from its declarations."""
    return {name: prop.gspec() for name, prop in props.items()}


def attribute(name: str) -> str:
    """The settings attribute of a property: ``model-proc`` -> ``model_proc``."""
    return name.replace("-", "_")


class Settings:
    """Base of the typed settings classes :func:`settings_class` makes: one attribute per
    declared property, plus access by property name for code that walks the declarations."""

    __slots__ = ()

    def get(self, name: str):
        return getattr(self, attribute(name))

    def set(self, name: str, value) -> None:
        setattr(self, attribute(name), value)

    def by_name(self) -> dict[str, Any]:
        """The values keyed by property name: what the core planners take."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}


_PYTHON_TYPES = {"string": str | None, "bool": bool, "element": Gst.Element | None,
                 "uint": int, "int": int, "uint64": int, "double": float}


@functools.cache
def settings_class(owner: type) -> type[Settings]:
    """The settings dataclass of an element class, made from its ``PROPERTIES``: typed
    fields with the declared defaults, slotted so that a misspelt setting is an error. A
    read-only property is the element's to answer (a counter of its run), not a setting."""
    declared = [(attribute(name), _PYTHON_TYPES[prop.kind], field(default=prop.default))
                for name, prop in owner.PROPERTIES.items() if not prop.readable_only]
    return make_dataclass(f"{owner.__name__}Settings", declared, bases=(Settings,), slots=True)


class PropertyStore:
    """Keeps property values in ``self.settings``, a typed :class:`Settings` object made from
    the declared defaults of ``PROPERTIES`` (a dict of :class:`Prop`): GObject writes it, the
    element reads a snapshot of it into its run state when it starts."""

    PROPERTIES: dict[str, Prop] = {}

    def _init_settings(self) -> None:
        self.settings = settings_class(type(self))()

    def _init_metadata_writer(self) -> None:
        """The settings, and a BaseTransform that writes metadata on the buffers it passes:
        in place, never passthrough (GStreamer then hands it a writable buffer)."""
        self._init_settings()
        self.set_in_place(True)
        self.set_passthrough(False)

    def do_get_property(self, prop):
        return self.settings.get(prop.name)

    def do_set_property(self, prop, value):
        self.settings.set(prop.name, value)

    def check_ranges(self) -> None:
        """A ConfigError naming the first property out of its declared range."""
        for name, prop in self.PROPERTIES.items():
            if not prop.readable_only:
                prop.check(name, self.settings.get(name))


def attempt(element: Gst.Element, step: Callable[[], object]) -> bool:
    """The error boundary of a state change: run ``step`` (building, loading, checking the
    settings); on an exception post it as an element error and say the change failed."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - this is the error boundary
        post_error(element, exc)
        return False
    return True


def guarded(failure):
    """Catch any exception in a vfunc/pad function, post it as an element error, return failure.

    PyGObject would otherwise print the traceback and return the default (FLOW_OK), letting
    buffers flow on as if nothing happened.
    """

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args):
            try:
                return method(self, *args)
            except Exception as exc:  # noqa: BLE001 - this is the error boundary
                post_error(self, exc)
                return failure

        return wrapper

    return decorate


ENGINE_DETAILS = "torchstream-engine"  # the details structure of that message


def post_engine_choice(element: Gst.Element, category, what: str, choice) -> None:
    """Say which engine runs the model and why: an INFO message on the bus and the debug log,
    a WARNING when an engine asked for (or tried) could not run it. The message's details
    (a ``torchstream-engine`` structure) name the engine for programs: ``engine`` (its
    label), ``fallback`` (why another one could not run the model, or "") and
    ``side-by-side`` (a shared instance's engine for passes at once, or "")."""
    if choice is None:
        return
    text = f"{what}: {choice.note}"
    warn = bool(choice.fallback or choice.warning)
    (category.warning if warn else category.info)(element, text)
    details = Gst.Structure.new_empty(ENGINE_DETAILS)
    details.set_value("engine", choice.engine.label)
    details.set_value("fallback", choice.fallback)
    details.set_value("side-by-side", choice.parallel.label if choice.parallel else "")
    kind = (Gst.Message.new_warning_with_details if warn
            else Gst.Message.new_info_with_details)
    error = GLib.Error.new_literal(Gst.LibraryError.quark(), text, int(Gst.LibraryError.SETTINGS))
    element.post_message(kind(element, error, text, details))


FLOW_ERROR = Gst.FlowReturn.ERROR


def pad_templates(sink_caps: str | None, src_caps: str | None = None):
    """The always ``sink`` and ``src`` templates of a one-in one-out element (None: ANY)."""

    def caps(text: str | None) -> Gst.Caps:
        return Gst.Caps.new_any() if text is None else Gst.Caps.from_string(text)

    src_caps = sink_caps if src_caps is None else src_caps
    return (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS,
                            caps(sink_caps)),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, caps(src_caps)),
    )


def restrict(caps: Gst.Caps, filter_: Gst.Caps | None) -> Gst.Caps:
    """``caps`` narrowed by a caps query's filter, in the filter's order of preference."""
    if filter_ is None:
        return caps
    return filter_.intersect_full(caps, Gst.CapsIntersectMode.FIRST)


def answer_src_caps_query(pad, parent, query, current: Gst.Caps | None,
                          template: Gst.Caps) -> bool:
    """A src pad's query function for elements that set their output caps themselves: a caps
    query gets the negotiated caps (the template before negotiation), filtered."""
    if query.type == Gst.QueryType.CAPS:
        caps = current.copy() if current is not None else template.copy()
        query.set_caps_result(restrict(caps, query.parse_caps()))
        return True
    return pad.query_default(parent, query)


def add_chain_pads(element: Gst.Element) -> tuple[Gst.Pad, Gst.Pad]:
    """The always sink and src pads of an element with its own chain function: the sink pad
    calls ``_chain``, ``_sink_event``, ``_sink_query``, the src pad ``_src_query``."""
    sinkpad = Gst.Pad.new_from_template(element.get_pad_template("sink"), "sink")
    sinkpad.set_chain_function_full(pad_function("_chain"), None)
    sinkpad.set_event_function_full(pad_function("_sink_event"), None)
    sinkpad.set_query_function_full(pad_function("_sink_query"), None)
    element.add_pad(sinkpad)
    srcpad = Gst.Pad.new_from_template(element.get_pad_template("src"), "src")
    srcpad.set_query_function_full(pad_function("_src_query"), None)
    element.add_pad(srcpad)
    return sinkpad, srcpad


def pad_function(method_name: str):
    """A pad function that calls the element's method ``method_name(pad, parent, obj)``.

    It finds the element through the ``parent`` GStreamer passes, so the C closure holds no
    reference to the element. A bound method stored there makes a cycle (element -> pad ->
    closure -> element) that Python's cycle collector walks across the C boundary; in
    gst-launch's embedded interpreter that corrupted the heap about one run in seven.
    """

    def call(pad, parent, obj):
        element = parent if parent is not None else pad.get_parent_element()
        if element is None:  # a pad being torn down: nothing to do but refuse
            return Gst.FlowReturn.FLUSHING if isinstance(obj, Gst.Buffer) else False
        return getattr(element, method_name)(pad, parent, obj)

    return call
