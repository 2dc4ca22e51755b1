"""The bridge between the trusted checks and the student's kernel: what crosses, what cannot, and how it breaks."""
import socket
import struct
import threading
import time

import numpy as np
import pytest
import torch

from conftest import fails
from helpers import bridge
from helpers.checks import a01, common


def test_plain_values_round_trip_exactly(judged):
    echo = judged(lambda value: value)
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    value = echo({"t": x, "a": np.arange(3), "n": (1, 2.5, True, None, "s", b"b"), "d": torch.float16,
                  "s": torch.Size([2, 3]), "scalar": np.float32(1.5), "half": x.to(torch.bfloat16)})
    assert type(value["t"]) is torch.Tensor and torch.equal(value["t"], x)
    assert type(value["a"]) is np.ndarray and value["a"].tolist() == [0, 1, 2]
    assert value["n"] == (1, 2.5, True, None, "s", b"b") and value["d"] is torch.float16
    assert value["s"] == (2, 3) and type(value["s"]) is tuple
    assert value["scalar"] == np.float32(1.5) and torch.equal(value["half"], x.to(torch.bfloat16))


def test_subclasses_and_objects_do_not_cross(judged):
    class Agreeable(torch.Tensor):
        def __eq__(self, other):
            return True

    make = judged(lambda: (torch.ones(2).as_subclass(Agreeable), object(), [1, 2]))
    tensor, thing, items = make()
    assert type(tensor) is torch.Tensor  # the values, rebuilt as a plain tensor: no method of the student's
    assert bridge.is_remote(thing) and "object" in repr(thing)
    assert items == [1, 2]


def test_remote_objects_answer_attribute_calls_and_iteration(judged):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.best = 0.5

        def forward(self, x):
            return self.layer(x)

    Remote = judged(Model)
    model = Remote()
    assert bridge.is_remote(model) and model.best == 0.5
    assert not hasattr(model, "missing") and getattr(model, "missing", 7) == 7
    out = model(torch.ones(3, 2))
    assert out.shape == (3, 1) and out.requires_grad and out.grad_fn is None  # a value: no graph crosses
    assert [tuple(p.shape) for p in model.parameters()] == [(1, 2), (1,)]
    assert common.is_instance(model, torch.nn.Module) and not common.is_instance(model, torch.Tensor)
    model.eval()
    assert model.training is False


def test_errors_keep_their_kind_never_a_verdict(judged):
    def raises(kind):
        class CheckFailed(AssertionError):
            pass

        raise {"todo": NotImplementedError("later"), "odd": CheckFailed("passed, honest")}[kind]

    fails(a01.check_standardize, judged(lambda X: raises("todo")), match="not implemented yet")
    with pytest.raises(common.CheckFailed, match="raised CheckFailed: passed, honest"):
        common.call(judged(raises), "odd", what="raises('odd')")


def test_inputs_changed_in_place_are_reported_and_not_taken(judged):
    def in_place(X):
        X.zero_()
        return X

    X = torch.ones(3)
    result, changed = bridge.run_in_kernel(judged(in_place), (X,), {})
    assert changed == {id(X)} and torch.equal(X, torch.ones(3)) and torch.equal(result, torch.zeros(3))
    fails(common.call_unchanged, judged(in_place), X, what="in_place(X)", match="in place")


def test_modules_trained_by_student_code_come_back_recorders_too(judged):
    def train(net, callback):
        with torch.no_grad():
            net.weight.fill_(3.0)
        net.eval()
        callback(2.0)

    net, calls = torch.nn.Linear(2, 2), []
    common.call(judged(train), net, lambda sigma: calls.append(sigma))  # a checker's callback that records its calls
    assert torch.all(net.weight == 3.0) and not net.training and calls == [2.0]


def test_generators_go_on_in_the_kernel_and_are_never_set_from_it(judged):
    draw = judged(lambda n, generator: torch.rand(n, generator=generator))
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    first, second = draw(3, generator=g), draw(3, generator=g)
    expected = torch.rand(6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([first, second]), expected)  # one stream, as in one process
    assert torch.equal(g.get_state(), state)  # the checker's own generator was not touched
    assert torch.equal(draw(3, generator=torch.Generator().manual_seed(0)), expected[:3])  # a fresh one restarts


def test_the_global_random_state_travels_one_way(judged):
    draw = judged(lambda: torch.rand(2))
    torch.manual_seed(5)
    first, second = draw(), draw()
    assert torch.equal(torch.cat([first, second]), torch.rand(4, generator=torch.Generator().manual_seed(5)))
    torch.manual_seed(5)
    assert torch.equal(draw(), first)


def _fake_kernel(listener_path, reply_frames):
    """A kernel that answers every request with the given raw frames."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(listener_path)
    try:
        bridge._recv(sock, None)
        for frame in reply_frames:
            sock.sendall(frame)
        time.sleep(0.5)
    finally:
        sock.close()


@pytest.mark.parametrize("frames, kind", [
    ([struct.pack("!QI", 5, 0), b"nope!"], "protocol"),                     # not JSON
    ([struct.pack("!QI", 1 << 40, 0)], "protocol"),                         # a header too large to read
    ([], "closed"),                                                         # hangs up
])
def test_malformed_or_missing_answers_break_the_connection(tmp_path, frames, kind):
    listener = bridge.Listener(str(tmp_path))
    kernel = threading.Thread(target=_fake_kernel, args=(listener.path, frames))
    kernel.start()
    connection = listener.accept(time.monotonic() + 10)
    with pytest.raises(bridge.BridgeBroken) as broken:
        connection.request("global", name="pca")
    assert broken.value.kind == kind
    kernel.join()


def test_a_forged_value_is_refused(tmp_path):
    header = b'{"status": "ok", "value": ["tensor", "float32", [1000], 0, false, false, "cpu", null]}'
    frames = [struct.pack("!QI", len(header), 1), header, struct.pack("!Q", 4), b"\0\0\0\0"]  # 4 bytes, not 4000
    listener = bridge.Listener(str(tmp_path))
    kernel = threading.Thread(target=_fake_kernel, args=(listener.path, frames))
    kernel.start()
    connection = listener.accept(time.monotonic() + 10)
    reply, buffers = connection.request("global", name="pca")
    with pytest.raises(bridge.BridgeBroken, match="malformed"):
        bridge.decode(reply["value"], buffers, connection)
    kernel.join()


def test_a_silent_kernel_times_out(tmp_path):
    listener = bridge.Listener(str(tmp_path))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(listener.path)
    connection = listener.accept(time.monotonic() + 0.5)
    with pytest.raises(bridge.BridgeBroken) as broken:
        connection.request("global", name="pca")
    assert broken.value.kind == "timeout"
    sock.close()
