"""The boundary between a trusted checker and the student's kernel: plain data by value, everything else by handle.

At grading time a test cell's checks run in the trusted grading process
(:mod:`helpers.judge`), not in the kernel that ran the student's code. The
student's functions and classes reach the checker as :class:`Remote` handles;
using one sends a request over a Unix socket to :func:`serve`, which runs in
the kernel and does what was asked there.

What the trusted side trusts, and why:

- It sends requests pickled (cloudpickle): the checker's own inputs, callbacks
  and modules run in the kernel. Only the kernel unpickles, and the kernel is
  the student's anyway.
- It never unpickles what comes back. A reply is JSON plus raw buffers, read by
  :func:`decode`, which rebuilds only exact built-in types (``torch.Tensor``,
  ``np.ndarray``, numbers, strings, bytes, tuples, lists, dicts, dtypes,
  devices) from checked dtypes and sizes. Whatever else the kernel holds comes
  back as a new :class:`Remote`, whose every use is another request. So no
  object of the student's, and no code, ever runs in the trusted process.
- It trusts no answer to be honest: the kernel may run anything in place of
  :func:`serve`. A forged reply is still only data, judged by the checker; a
  malformed one, a late one or none at all breaks the connection
  (:class:`BridgeBroken`), which the judge scores as a failure.

:func:`call` is what the checkers use: it runs ``fn(*args)`` in the kernel when
``fn`` or an argument is a Remote (copying mutable arguments' new state back,
so that the checker observes in-place edits as it would in one process), and
in this process otherwise — the student's own self-check in JupyterLab.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import struct
import time
import types
import warnings

import numpy as np
import torch

MAX_MESSAGE = 256 << 20  # bytes in one reply: a checker never needs more; a kernel that sends more is cut off
REQUEST_LIMIT = 1 << 34  # what the trusted side sends (MNIST's training set and more): no cap that matters
MAX_TEXT = 2000  # characters of a remote error message or repr that reach a checker's message
MAX_DEPTH = 32
TENSOR_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8,
    torch.uint8, torch.bool, torch.complex64, torch.complex128)}
ARRAY_DTYPES = {"float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
                "uint8", "bool", "complex64", "complex128"}
# Errors a checker tells apart by type (NotImplementedError: "not implemented yet"; AttributeError for hasattr); any
# other remote error is a RemoteError named after the remote type. Never CheckFailed: a student cannot raise a verdict.
KNOWN_ERRORS = {e.__name__: e for e in (NotImplementedError, AttributeError, StopIteration, TypeError, ValueError,
                                        IndexError, KeyError, RuntimeError, ZeroDivisionError, NameError)}


class BridgeBroken(BaseException):
    """The kernel stopped answering, answered too late, or sent what no honest kernel sends.

    A ``BaseException``, so that no ``except Exception`` in a checker turns it into an ordinary failure message:
    the judge catches it and says what happened.
    """

    def __init__(self, message: str, kind: str = "broken"):
        super().__init__(message)
        self.kind = kind  # "timeout", "closed" or "protocol"


class RemoteError(Exception):
    """An exception raised by student code in the kernel, known here only by its type's name and its message."""


# ---------------------------------------------------------------------------------------------------- framing
def _send(sock: socket.socket, header: dict, buffers: list[bytes]) -> None:
    head = json.dumps(header, allow_nan=True).encode()
    parts = [struct.pack("!QI", len(head), len(buffers)), head]
    for buffer in buffers:
        parts += [struct.pack("!Q", len(buffer)), buffer]
    if sum(map(len, parts)) < (1 << 24):
        sock.sendall(b"".join(parts))
    else:  # large tensors: no joined copy
        for part in parts:
            sock.sendall(part)


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BridgeBroken("the kernel did not answer in time", "timeout")
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(size - got, 1 << 22))
        except socket.timeout:
            raise BridgeBroken("the kernel did not answer in time", "timeout") from None
        except OSError as error:
            raise BridgeBroken(f"the connection to the kernel failed ({error})", "closed") from None
        if not chunk:
            raise BridgeBroken("the kernel closed the connection (it stopped or was stopped)", "closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket, deadline: float | None = None, limit: int = MAX_MESSAGE) -> tuple[dict, list[bytes]]:
    head_size, count = struct.unpack("!QI", _recv_exact(sock, 12, deadline))
    if head_size > min(limit, 64 << 20) or count > 100_000:
        raise BridgeBroken("the kernel sent a malformed message", "protocol")
    try:
        header = json.loads(_recv_exact(sock, head_size, deadline))
    except ValueError:
        raise BridgeBroken("the kernel sent a malformed message", "protocol") from None
    buffers, total = [], head_size
    for _ in range(count):
        (size,) = struct.unpack("!Q", _recv_exact(sock, 8, deadline))
        total += size
        if total > limit:
            raise BridgeBroken(f"the kernel sent more than {limit >> 20} MiB in one answer", "protocol")
        buffers.append(_recv_exact(sock, size, deadline))
    if not isinstance(header, dict):
        raise BridgeBroken("the kernel sent a malformed message", "protocol")
    return header, buffers


# ------------------------------------------------------------------------------------- values: kernel → trusted
def encode(value, table: dict, buffers: list, depth: int = 0):
    """``value`` as JSON-able tags plus raw buffers (kernel side); anything not plain data is kept in ``table``."""
    if depth > MAX_DEPTH:
        return _handle(value, table)
    kind = type(value)
    if value is None:
        return ["none"]
    if kind is bool:
        return ["bool", value]
    if kind is int:
        return ["int", str(value)]
    if kind is float:
        return ["float", repr(value)]
    if kind is str:
        return ["str", value]
    if kind is bytes:
        buffers.append(value)
        return ["bytes", len(buffers) - 1]
    # Subclasses (torch.Size, named tuples, OrderedDict) travel as the plain container.
    if isinstance(value, (tuple, list)):
        return ["tuple" if isinstance(value, tuple) else "list", [encode(v, table, buffers, depth + 1) for v in value]]
    if isinstance(value, dict):
        return ["dict", [[encode(k, table, buffers, depth + 1), encode(v, table, buffers, depth + 1)]
                         for k, v in dict.items(value)]]
    if isinstance(value, torch.Tensor) and value.layout == torch.strided and str(value.dtype).removeprefix("torch.") in TENSOR_DTYPES:
        plain = torch.Tensor.contiguous(torch.Tensor.cpu(torch.Tensor.detach(value)))
        buffers.append(plain.reshape(-1).view(torch.uint8).numpy().tobytes() if plain.numel() else b"")
        grad = value.grad if isinstance(value, torch.nn.Parameter) or value.is_leaf else None
        return ["tensor", str(plain.dtype).removeprefix("torch."), list(plain.shape), len(buffers) - 1,
                bool(value.requires_grad), isinstance(value, torch.nn.Parameter), str(value.device),
                None if grad is None else encode(grad, table, buffers, depth + 1)]
    if isinstance(value, np.ndarray) and value.dtype.name in ARRAY_DTYPES:
        buffers.append(np.ascontiguousarray(value).tobytes())
        return ["ndarray", value.dtype.name, list(value.shape), len(buffers) - 1]
    if isinstance(value, np.generic) and value.dtype.name in ARRAY_DTYPES:
        buffers.append(np.asarray(value).tobytes())
        return ["npscalar", value.dtype.name, len(buffers) - 1]
    if kind is torch.dtype:
        return ["dtype", str(value).removeprefix("torch.")]
    if kind is torch.device:
        return ["device", str(value)]
    return _handle(value, table)


def _handle(value, table: dict):
    key = len(table) + 1
    table[key] = value
    kind = type(value)
    return ["remote", key, f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"[:200]]


def decode(tag, buffers: list[bytes], connection: "Connection | None", depth: int = 0):
    """Rebuild a value from :func:`encode`'s output (trusted side): exact built-in types only, sizes checked."""
    try:
        return _decode(tag, buffers, connection, depth)
    except BridgeBroken:
        raise
    except Exception as error:  # any inconsistency: not what serve() sends
        raise BridgeBroken(f"the kernel sent a malformed value ({type(error).__name__})", "protocol") from None


def _decode(tag, buffers, connection, depth):
    if depth > MAX_DEPTH + 1 or not isinstance(tag, list) or not tag or not isinstance(tag[0], str):
        raise ValueError("bad tag")
    kind, rest = tag[0], tag[1:]
    if kind == "none":
        return None
    if kind == "bool" and type(rest[0]) is bool:
        return rest[0]
    if kind == "int" and type(rest[0]) is str and len(rest[0]) < 5000:
        return int(rest[0])
    if kind == "float" and type(rest[0]) is str:
        return float(rest[0])
    if kind == "str" and type(rest[0]) is str:
        return rest[0]
    if kind == "bytes":
        return bytes(buffers[_index(rest[0], buffers)])
    if kind in ("tuple", "list") and type(rest[0]) is list:
        items = [_decode(v, buffers, connection, depth + 1) for v in rest[0]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict" and type(rest[0]) is list:
        out = {}
        for key, value in rest[0]:
            key = _decode(key, buffers, connection, depth + 1)
            if type(key) not in (str, int, float, bool, tuple, type(None)):
                raise ValueError("bad key")
            out[key] = _decode(value, buffers, connection, depth + 1)
        return out
    if kind == "tensor":
        dtype_name, shape, index, requires_grad, is_param, device, grad = rest
        dtype = TENSOR_DTYPES[dtype_name]
        data = buffers[_index(index, buffers)]
        shape = _shape(shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(data) != math.prod(shape) * itemsize:
            raise ValueError("size")
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
        tensor = raw.view(dtype).reshape(shape)
        if type(requires_grad) is not bool or type(is_param) is not bool or type(device) is not str:
            raise ValueError("flags")
        if is_param:
            tensor = torch.nn.Parameter(tensor, requires_grad=requires_grad and tensor.is_floating_point())
        elif requires_grad and (tensor.is_floating_point() or tensor.is_complex()):
            tensor.requires_grad_(True)
        if grad is not None:
            grad = _decode(grad, buffers, connection, depth + 1)
            if type(grad) is torch.Tensor and grad.shape == tensor.shape and grad.dtype == tensor.dtype:
                tensor.grad = grad
        return tensor
    if kind == "ndarray":
        dtype_name, shape, index = rest
        if dtype_name not in ARRAY_DTYPES:
            raise ValueError("dtype")
        data = buffers[_index(index, buffers)]
        shape = _shape(shape)
        if len(data) != math.prod(shape) * np.dtype(dtype_name).itemsize:
            raise ValueError("size")
        return np.frombuffer(bytearray(data), dtype=dtype_name).reshape(shape)
    if kind == "npscalar":
        dtype_name, index = rest
        if dtype_name not in ARRAY_DTYPES:
            raise ValueError("dtype")
        data = buffers[_index(index, buffers)]
        if len(data) != np.dtype(dtype_name).itemsize:
            raise ValueError("size")
        return np.frombuffer(data, dtype=dtype_name)[0]
    if kind == "dtype":
        return TENSOR_DTYPES[rest[0]]
    if kind == "device" and type(rest[0]) is str:
        return torch.device(rest[0] if rest[0].split(":")[0] in ("cpu", "cuda", "mps", "meta") else "cpu")
    if kind == "remote" and type(rest[0]) is int and type(rest[1]) is str and connection is not None:
        return Remote(connection, rest[0], rest[1][:200])
    raise ValueError(f"unknown tag {kind!r}")


def _index(index, buffers) -> int:
    if type(index) is not int or not 0 <= index < len(buffers):
        raise ValueError("buffer index")
    return index


def _shape(shape) -> tuple[int, ...]:
    if type(shape) is not list or len(shape) > 16 or any(type(s) is not int or s < 0 for s in shape):
        raise ValueError("shape")
    return tuple(shape)


# ----------------------------------------------------------------------------------------- the trusted side
class Connection:
    """The trusted end of one test cell's conversation with the kernel; every request has the same deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock, self.deadline = sock, deadline
        # The checker's generators live on in the kernel once sent, so that successive calls continue their
        # streams as in one process; kept here (ids must not be reused) with the state they were sent in.
        self.generators: dict[int, tuple[torch.Generator, int, bytes]] = {}
        self.rng_sent: bytes | None = None
        self.broken: BridgeBroken | None = None  # once broken (perhaps mid-message), every later request fails so

    def request(self, op: str, payload=None, **header):
        if self.broken:
            raise BridgeBroken(str(self.broken), self.broken.kind)
        buffers = []
        if payload is not None:
            buffers.append(_dumps(payload, self))
        try:
            _send_or_break(self.sock, {"op": op, **header}, buffers)
            reply, replies = _recv(self.sock, self.deadline)
        except BridgeBroken as broken:
            self.broken = broken
            raise
        if reply.get("status") == "error":
            raise _remote_error(reply.get("type"), reply.get("message"))
        if reply.get("status") != "ok" or "value" not in reply:
            raise BridgeBroken("the kernel sent a malformed answer", "protocol")
        return reply, replies

    def ship(self, value):
        """A copy of ``value`` made in the kernel: plain data comes back as it went, anything else as a Remote."""
        reply, buffers = self.request("call", (_identity, (value,), {}, [], None, {}), grad=True)
        return decode(reply["value"], buffers, self)

    def close(self) -> None:
        with contextlib.suppress(OSError, BridgeBroken):
            _send(self.sock, {"op": "done"}, [])
        self.sock.close()


def _send_or_break(sock, header, buffers):
    try:
        _send(sock, header, buffers)
    except OSError as error:
        raise BridgeBroken(f"the connection to the kernel failed ({error})", "closed") from None


def _remote_error(type_name, message) -> Exception:
    name = type_name if isinstance(type_name, str) and type_name.isidentifier() else "Error"
    text = str(message)[:MAX_TEXT] if message is not None else ""
    if name in KNOWN_ERRORS:
        error = KNOWN_ERRORS[name](text)
    else:
        error = type(name[:60], (RemoteError,), {})(text)
    error.remote_type = name
    return error


class Remote:
    """A student's object that stays in the kernel; each use is a request, each answer plain data or a Remote."""

    __slots__ = ("_connection", "_key", "_type")

    def __init__(self, connection: Connection, key: int, type_name: str):
        object.__setattr__(self, "_connection", connection)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_type", type_name)

    def _ask(self, op, payload=None, **header):
        reply, buffers = self._connection.request(op, payload, target=self._key, **header)
        return decode(reply["value"], buffers, self._connection)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__") and name not in ("__name__", "__qualname__", "__doc__", "__module__"):
            raise AttributeError(name)  # protocol probes (copy, pickle, IPython) are not the student's attributes
        return self._ask("getattr", name=name)

    def __setattr__(self, name, value):
        raise AttributeError("a checker does not set attributes of the student's objects")

    def __call__(self, *args, **kwargs):
        return call_in_kernel(self, args, kwargs)

    def __iter__(self):
        iterator = self._ask("iter")
        if not isinstance(iterator, Remote):
            raise BridgeBroken("the kernel sent a malformed answer", "protocol")
        return iterator

    def __next__(self):
        return self._ask("next")

    def __len__(self) -> int:
        value = self._ask("len")
        if type(value) is not int or value < 0:
            raise TypeError("len() of the student's object is not a non-negative int")
        return value

    def __bool__(self) -> bool:
        value = self._ask("bool")
        if type(value) is not bool:
            raise TypeError("bool() of the student's object is not a bool")
        return value

    def __getitem__(self, key):
        return call_in_kernel(_getitem, (self, key), {})

    def __repr__(self) -> str:
        try:
            text = self._ask("repr")
        except Exception:  # the student's __repr__ failed; a broken connection still ends the check
            text = None
        return text[:MAX_TEXT] if type(text) is str else f"<{self._type} in the student's kernel>"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Remote travels only by reference")


def _getitem(obj, key):
    return obj[key]


def _identity(value):
    return value


def _dumps(value, connection: Connection) -> bytes:
    """cloudpickle, with Remotes and generators already in the kernel sent as references to the kernel's objects."""
    import cloudpickle

    class Pickler(cloudpickle.Pickler):
        def persistent_id(self, obj):
            if type(obj) is Remote:
                return ("remote", object.__getattribute__(obj, "_key"))
            if type(obj) is torch.Generator:
                known = connection.generators.get(id(obj))
                if known and known[2] == _generator_state(obj) and obj is not defining.get(known[1]):
                    return ("remote", known[1])
            return None

    defining = value[5] if isinstance(value, tuple) and len(value) == 6 else {}
    stream = io.BytesIO()
    Pickler(stream, protocol=5).dump(value)
    return stream.getvalue()


def _generator_state(generator: torch.Generator) -> bytes:
    return bytes(generator.get_state().numpy())


def _connection_of(values) -> Connection | None:
    for value in values:
        if type(value) is Remote:
            return object.__getattribute__(value, "_connection")
        if type(value) in (tuple, list):
            found = _connection_of(value)
            if found:
                return found
        if type(value) is dict:
            found = _connection_of(value.values())
            if found:
                return found
    return None


def is_remote(value) -> bool:
    return type(value) is Remote


def type_name(value) -> str:
    """``type(value).__name__``, or for a Remote the short name of the type it has in the kernel."""
    if type(value) is Remote:
        return object.__getattribute__(value, "_type").rsplit(".", 1)[-1]
    return type(value).__name__


def involves_kernel(fn, args, kwargs) -> bool:
    """Whether ``fn(*args, **kwargs)`` must run in the kernel: some part of it is the student's."""
    return _connection_of([fn, *args, *kwargs.values()]) is not None


def _syncable(value) -> bool:
    """The checker's objects whose change by a call matters: inputs (changed or not), modules the student's
    code trains, recorders (callbacks and checker objects that append to lists) and generators."""
    if isinstance(value, (torch.Tensor, np.ndarray, torch.nn.Module, torch.Generator)):
        return True
    if isinstance(value, types.FunctionType):
        return bool(value.__closure__)
    module = getattr(type(value), "__module__", "") or ""
    return module.startswith("helpers.") and hasattr(value, "__dict__")


def _collect_syncables(values, found: list, seen: set, depth: int = 0) -> None:
    for value in values:
        if id(value) in seen or depth > 3:
            continue
        if type(value) in (tuple, list):
            seen.add(id(value))
            _collect_syncables(value, found, seen, depth + 1)
        elif type(value) is dict:
            seen.add(id(value))
            _collect_syncables(value.values(), found, seen, depth + 1)
        elif type(value) is not Remote and _syncable(value):
            seen.add(id(value))
            found.append(value)


def _global_rng() -> tuple:
    return torch.get_rng_state(), np.random.get_state(legacy=False)


def _fingerprint(rng) -> bytes:
    torch_state, numpy_state = rng
    return bytes(torch_state.numpy()) + numpy_state["state"]["key"].tobytes() + repr(
        (numpy_state["state"]["pos"], numpy_state["has_gauss"], numpy_state["gauss"])).encode()


def call_in_kernel(fn, args: tuple, kwargs: dict):
    """``fn(*args, **kwargs)`` run in the student's kernel; the result by value (or as a Remote)."""
    return run_in_kernel(fn, args, kwargs)[0]


def run_in_kernel(fn, args: tuple, kwargs: dict) -> tuple[object, set[int]]:
    """:func:`call_in_kernel`, and the ids of the checker's tensors and arrays the call changed in place.

    What comes back into the checker's objects: the weights and modes of its modules (the student's code may
    train them) and what its recorders appended to their lists. Nothing else: its tensors keep their values
    (a change is only reported), its generators and the global random state are never set from the kernel
    (a kernel cannot choose the checker's next random numbers); the kernel's copies go on from where they were.
    """
    connection = _connection_of([fn, *args, *kwargs.values()])
    syncables: list = []
    _collect_syncables([fn, *args, *kwargs.values()], syncables, set())
    defining = {}
    for generator in (g for g in syncables if type(g) is torch.Generator):
        known = connection.generators.get(id(generator))
        if not known or known[2] != _generator_state(generator):
            key = -(len(connection.generators) + 1)  # the checker's keys are negative, the kernel's positive
            connection.generators[id(generator)] = (generator, key, _generator_state(generator))
            defining[key] = generator
    rng = _global_rng()
    send_rng = rng if _fingerprint(rng) != connection.rng_sent else None  # untouched since: the kernel's stream goes on
    payload = (fn, args, kwargs, syncables, send_rng, defining)
    reply, buffers = connection.request("call", payload, grad=torch.is_grad_enabled())
    # The kernel drew from the stream: this side moves on too, to a state of its own making, so that a checker
    # reseeding (even with the same seed) is told apart from a checker that left the stream alone.
    torch.manual_seed(int(torch.randint(2**62, (1,))))
    np.random.seed(int(np.random.randint(2**31)))
    connection.rng_sent = _fingerprint(_global_rng())
    result = decode(reply["value"], buffers, connection)
    after = decode(reply.get("after", ["list", []]), buffers, connection)
    return result, _apply_after(syncables, after)


def _apply_after(syncables: list, after) -> set[int]:
    """Take the kernel's report of a call into the checker's objects (see run_in_kernel); the changed inputs."""
    changed: set[int] = set()
    states = after if type(after) is list else []
    if len(states) != len(syncables):
        return changed
    for target, state in zip(syncables, states):
        if state is None:
            continue
        if isinstance(target, (torch.Tensor, np.ndarray)):
            changed.add(id(target))
            continue
        with contextlib.suppress(Exception):  # a state that does not fit is ignored: the checker judges what it has
            _apply_state(target, state)
    return changed


def _apply_state(target, state) -> None:
    if isinstance(target, torch.nn.Module) and type(state) is dict:
        weights = state.get("weights", {})
        own = target.state_dict()
        target.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()
                                if type(v) is torch.Tensor and k in own and v.shape == own[k].shape}, strict=False)
        flags = state.get("training")
        modules = list(target.modules())
        if type(flags) is list and len(flags) == len(modules):
            for module, flag in zip(modules, flags):
                if type(flag) is bool:
                    module.training = flag
    elif isinstance(target, types.FunctionType) and type(state) is dict:
        for index, value in state.items():
            if type(index) is int and 0 <= index < len(target.__closure__):
                _extend_list(target.__closure__[index].cell_contents, value)
    elif type(state) is dict and hasattr(target, "__dict__"):
        for name, value in state.items():
            if type(name) is str and name in vars(target):
                _extend_list(vars(target)[name], value)


def _extend_list(current, value) -> None:
    """A recorder's list takes the kernel's entries (same identity: closures may share it); nothing else changes."""
    if type(current) is list and type(value) is list:
        current[:] = value


def remote_isinstance(obj, cls) -> bool:
    """``isinstance`` where the object or the class may be the student's (asked of the kernel)."""
    if not (is_remote(obj) or is_remote(cls)):
        return isinstance(obj, cls)
    answer = call_in_kernel(isinstance, (obj, cls), {})
    return answer is True


# ------------------------------------------------------------------------------------------ the kernel side
def _plain_state(value):
    """The part of a checker's object that a call may have changed, as data :func:`encode` keeps plain."""
    if isinstance(value, torch.nn.Module):
        return {"weights": dict(value.state_dict()), "training": [m.training for m in value.modules()]}
    if isinstance(value, types.FunctionType):
        cells = {}
        for index, cell in enumerate(value.__closure__):
            with contextlib.suppress(ValueError):  # an empty cell
                if type(cell.cell_contents) is list:
                    cells[index] = cell.cell_contents
        return cells
    return {k: v for k, v in vars(value).items() if type(v) is list}


def _unpickler(data: bytes, table: dict):
    import pickle

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            return table[pid[1]]

    return Unpickler(io.BytesIO(data)).load()


def serve(path: str, namespace: dict | None = None) -> None:
    """Answer the judge's requests until it is done (kernel side; runs student code, so it trusts nothing).

    ``namespace`` is where the test cell's names are looked up: the kernel's user namespace by default.
    """
    if namespace is None:
        namespace = get_ipython().user_ns  # noqa: F821 (IPython's builtin in a kernel)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    table: dict = {}
    try:
        while True:
            header, buffers = _recv(sock, None, limit=REQUEST_LIMIT)
            op = header.get("op")
            if op == "done":
                return
            try:
                reply, out = _answer(op, header, buffers, namespace, table)
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # student code's error, reported by name and message
                reply, out = {"status": "error", "type": type(error).__name__, "message": str(error)[:MAX_TEXT]}, []
            _send(sock, reply, out)
    finally:
        sock.close()


def _answer(op, header, buffers, namespace, table):
    out: list[bytes] = []
    target = table.get(header.get("target"))
    if op == "global":
        name = header.get("name")
        if name not in namespace:
            raise NameError(f"name {name!r} is not defined")
        value = namespace[name]
    elif op == "getattr":
        value = getattr(target, header["name"])
    elif op == "iter":
        value = iter(target)
        return {"status": "ok", "value": _handle(value, table)}, out
    elif op == "next":
        value = next(target)
    elif op == "len":
        value = len(target)
    elif op == "bool":
        value = bool(target)
    elif op == "repr":
        value = repr(target)[:MAX_TEXT]
    elif op == "call":
        fn, args, kwargs, syncables, rng, defining = _unpickler(buffers[0], table)
        table.update(defining)
        if rng is not None:
            torch.set_rng_state(rng[0])
            np.random.set_state(rng[1])
        before = [v.clone() if isinstance(v, torch.Tensor) else v.copy() if isinstance(v, np.ndarray) else None
                  for v in syncables]
        with silenced(), torch.set_grad_enabled(bool(header.get("grad", True))):
            value = fn(*args, **kwargs)
        states = []
        for original, copy in zip(syncables, before):
            if isinstance(original, torch.Generator):
                states.append(None)
            elif isinstance(original, torch.Tensor):
                states.append(None if torch.equal(original, copy) else True)
            elif isinstance(original, np.ndarray):
                states.append(None if np.array_equal(original, copy) else True)
            else:
                states.append(_plain_state(original))
        return {"status": "ok", "value": encode(value, table, out), "after": encode(states, table, out)}, out
    else:
        raise ValueError(f"unknown request {op!r}")
    return {"status": "ok", "value": encode(value, table, out)}, out


@contextlib.contextmanager
def silenced():
    """Student code run quietly: its printout, progress bars and warnings stay out of the checks' report (and,
    in the kernel, out of the notebook)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------------------------- connecting
class Listener:
    """A Unix socket in a folder only the trusted side can write to; the kernel is told its path."""

    def __init__(self, folder: str):
        os.makedirs(folder, mode=0o755, exist_ok=True)
        self.path = os.path.join(folder, f"judge-{os.urandom(6).hex()}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)  # the sandboxed kernel runs as another user
        self.sock.listen(1)

    def accept(self, deadline: float) -> Connection:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            sock, _ = self.sock.accept()
        except socket.timeout:
            raise BridgeBroken("the kernel did not start answering the checks in time", "timeout") from None
        except OSError:  # shut down: the kernel finished the agent's cell without connecting
            raise BridgeBroken("the kernel did not answer the checks", "closed") from None
        finally:
            self.close()
        return Connection(sock, deadline)

    def shutdown(self) -> None:
        """Wake a waiting :meth:`accept` (from another thread): nobody is coming."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def agent_code(path: str) -> str:
    """What the driver runs in the kernel for one test cell: serve the judge on ``path``."""
    return f"__import__('helpers.bridge', fromlist=['serve']).serve({path!r})"
