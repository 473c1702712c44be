"""The wire form of a bus batch (server/bus/records.py ``pack``/``unpack``): the
records come back equal, of their own classes, in order."""

from __future__ import annotations

import pickle

from server.bus import records as R


def test_every_record_class_round_trips_through_the_wire_form() -> None:
    assert R.RECORDS and all(hasattr(c, "_fields") for c in R.RECORDS)
    batch = [cls(*(f"{cls.__name__}-{i}" for i in range(len(cls._fields)))) for cls in R.RECORDS]
    batch += [R.ChannelDelivery("#c", 7, "P", b"@a ", b"@t ", b":n PRIVMSG #c :x\r\n", 9), R.Stamp(1.5)]
    back = R.unpack(pickle.loads(pickle.dumps(R.pack(batch))))
    assert back == batch
    assert [type(r) for r in back] == [type(r) for r in batch]
    assert back[-2].body == b":n PRIVMSG #c :x\r\n" and back[-1].time == 1.5


def test_a_batch_with_something_else_goes_as_it_is() -> None:
    batch = [R.Stamp(1.0), ("not", "a", "record")]
    codes, items = R.pack(batch)
    assert codes is None and items is batch
    assert R.unpack(R.pack(batch)) == batch
    assert R.unpack(R.pack([])) == []
