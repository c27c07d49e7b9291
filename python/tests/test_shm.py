"""Shared-memory segments (worker/shm.py): a handle maps only a sealed
snakepit memfd of its size; result segments are counted, capped, released;
the reply wire carries their handles."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from snakepit_bridge import _wire
from snakepit_bridge.generated import snakepit_bridge_pb2 as pb
from snakepit_bridge.worker import codec, shm


def _sealed(data: bytes, name: str = shm.MEMFD_NAME, seal: bool = True) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
    return fd


def _handle(fd: int, length=None):
    st = os.fstat(fd)
    return os.getpid(), fd, st.st_ino, st.st_size if length is None else length


@pytest.fixture
def offer():
    tok = shm.offer.set((100, 1000))
    yield
    shm.offer.reset(tok)
    shm.results.release(list(shm.results.segs))


def test_a_sealed_segment_maps_read_only_and_outlives_its_descriptor():
    fd = _sealed(b"abc" * 100)
    view = shm.open_segment(*_handle(fd))
    os.close(fd)
    assert view.readonly
    assert bytes(view) == b"abc" * 100
    with pytest.raises(TypeError):
        view[0] = 1


@pytest.mark.parametrize("why, make, match", [
    ("wrong length", lambda fd: _handle(fd, 299), "size 300, not the handle's length 299"),
    ("zero length", lambda fd: _handle(fd, 0), "length 0"),
    ("reused fd", lambda fd: (os.getpid(), fd, os.fstat(fd).st_ino + 1, 300), "reused"),
    ("foreign pid", lambda fd: (1, fd, os.fstat(fd).st_ino, 300), "cannot open"),
    ("closed fd", lambda fd: (os.getpid(), 100_000, 1, 300), "cannot open"),
])
def test_a_hostile_handle_is_refused_naming_it(why, make, match):
    fd = _sealed(b"x" * 300)
    try:
        with pytest.raises(shm.ShmRefused, match=match):
            shm.open_segment(*make(fd))
    finally:
        os.close(fd)


def test_only_a_sealed_snakepit_memfd_is_mapped():
    for fd, match in [(_sealed(b"x" * 10, name="other"), "not a snakepit-shm memfd"),
                      (_sealed(b"x" * 10, seal=False), "not sealed"),
                      (os.open("/proc/self/status", os.O_RDONLY), "not a snakepit-shm")]:
        try:
            with pytest.raises(shm.ShmRefused, match=match):
                shm.open_segment(os.getpid(), fd, os.fstat(fd).st_ino, 10)
        finally:
            os.close(fd)


def test_results_over_the_offer_go_in_segments_and_are_released(offer):
    rj, bins = codec.encode_result({"big": memoryview(b"y" * 500), "small": b"z" * 10,
                                    "arr": bytearray(200), "n": 1})
    assert json.loads(rj) == {"n": 1}
    assert bins["small"] == b"z" * 10
    big, arr = bins["big"], bins["arr"]
    assert isinstance(big, shm.Handle) and big.length == 500
    assert shm.results.count() == (2, 700)
    assert bytes(shm.open_segment(big.pid, big.fd, big.inode, big.length)) == b"y" * 500
    # The reply carries the handles in shm_results, the rest inline.
    reply = pb.CallReply.FromString(_wire.reply_result(9, rj, b"", bins))
    assert dict(reply.result.binary_results) == {"small": b"z" * 10}
    seg = reply.result.shm_results["arr"]
    assert (seg.pid, seg.fd, seg.inode, seg.length) == (arr.pid, arr.fd, arr.inode, 200)
    shm.results.release([big.inode, arr.inode, 12345])
    assert shm.results.count() == (0, 0)
    with pytest.raises(shm.ShmRefused):
        shm.open_segment(big.pid, big.fd, big.inode, big.length)


def test_past_the_cap_results_go_inline(offer):
    _, first = codec.encode_result({"a": b"1" * 800})
    assert isinstance(first["a"], shm.Handle)
    _, second = codec.encode_result({"b": b"2" * 800})
    assert second["b"] == b"2" * 800, "over the 1000-byte cap: inline"
    shm.results.release([first["a"].inode])
    _, third = codec.encode_result(b"3" * 800)
    assert isinstance(third["result"], shm.Handle)


def test_without_an_offer_results_stay_inline():
    _, bins = codec.encode_result({"a": memoryview(b"1" * 5000)})
    assert bins == {"a": b"1" * 5000}
    assert shm.results.count() == (0, 0)


def test_an_unreleased_result_segment_is_closed_after_the_release_timeout(offer, monkeypatch):
    _, bins = codec.encode_result({"a": b"1" * 300})
    h = bins["a"]
    monkeypatch.setattr(shm, "RELEASE_AFTER_S", -1.0)
    _, bins = codec.encode_result({"b": b"2" * 300})
    assert shm.results.count() == (1, 300)
    with pytest.raises(shm.ShmRefused):
        shm.open_segment(h.pid, h.fd, h.inode, h.length)


def test_a_shared_memory_argument_reaches_the_tool_as_its_view():
    fd = _sealed(b"q" * 1000)
    view = shm.open_segment(*_handle(fd))
    os.close(fd)
    args = codec.decode_args(b"{}", {"data": view, "small": b"s"})
    assert args["data"] is view
    assert args["small"] == b"s"


def _mapping_of(address: int) -> str:
    """The /proc/self/maps line whose range holds ``address``."""
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return line
    return ""


def test_numpy_makes_an_array_over_the_segment_without_a_copy():
    np = pytest.importorskip("numpy")
    values = np.arange(100_000, dtype=np.float64)
    fd = _sealed(values.tobytes())
    view = shm.open_segment(*_handle(fd))
    os.close(fd)
    arr = np.frombuffer(view, dtype=np.float64)
    assert not arr.flags.writeable
    assert np.array_equal(arr, values)
    # Its data lives in the mapped memfd, not in a copy.
    assert "memfd:snakepit-shm" in _mapping_of(arr.ctypes.data)
    del view
    assert arr[99_999] == 99_999.0
