"""The worker's client threads: one per client while connected, reused after."""

from __future__ import annotations

import gc
import threading
import time
import weakref

from server.process.threads import ClientThreads


def _until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


def test_a_thread_whose_client_left_serves_the_next() -> None:
    pool = ClientThreads(keep=30.0)
    seen: list[str] = []
    for i in range(5):
        done = threading.Event()

        def job(arg: str, done: threading.Event = done) -> None:
            seen.append(f"{arg}:{threading.get_ident()}")
            done.set()

        pool.run(job, f"c{i}")
        assert done.wait(5)
        _until(lambda: pool.idle_count() == 1)
    assert pool.started == 1 and pool.reused == 4
    assert [s.split(":")[0] for s in seen] == [f"c{i}" for i in range(5)]
    assert len({s.split(":")[1] for s in seen}) == 1  # one thread served all five


def test_clients_at_once_get_threads_of_their_own() -> None:
    pool = ClientThreads(keep=30.0)
    release = threading.Event()
    running = threading.Semaphore(0)
    idents: set[int] = set()

    def job(_: object) -> None:
        idents.add(threading.get_ident())
        running.release()
        release.wait(5)

    for _ in range(8):
        pool.run(job, None)
    for _ in range(8):
        assert running.acquire(timeout=5)
    assert len(idents) == 8 and pool.started == 8
    release.set()
    _until(lambda: pool.idle_count() == 8)


def test_idle_threads_end_after_keep_and_keep_zero_never_waits() -> None:
    pool = ClientThreads(keep=0.2)
    done = threading.Event()
    pool.run(lambda _: done.set(), None)
    assert done.wait(5)
    _until(lambda: pool.idle_count() == 1)
    _until(lambda: pool.idle_count() == 0)  # it gave up waiting and ended
    pool.keep = 0.0
    for _ in range(3):
        ev = threading.Event()
        pool.run(lambda _, ev=ev: ev.set(), None)
        assert ev.wait(5)
        _until(lambda: pool.idle_count() == 0)
    assert pool.reused == 0 and pool.started == 4


def test_an_error_in_one_client_does_not_cost_the_thread() -> None:
    pool = ClientThreads(keep=30.0)
    failed = threading.Event()

    def bad(_: object) -> None:
        failed.set()
        raise ValueError("boom")

    pool.run(bad, None)
    assert failed.wait(5)
    _until(lambda: pool.idle_count() == 1)
    ok = threading.Event()
    pool.run(lambda _: ok.set(), None)
    assert ok.wait(5)
    assert pool.started == 1 and pool.reused == 1


def test_an_idle_thread_keeps_no_reference_to_the_client_it_served() -> None:
    class Client:
        pass

    pool = ClientThreads(keep=30.0)
    gone = []
    for _ in range(2):  # a new thread's first client, then a reused thread's
        c = Client()
        ref = weakref.ref(c)
        pool.run(lambda arg: None, c)
        del c
        _until(lambda: pool.idle_count() == 1)
        gc.collect()
        gone.append(ref() is None)
    assert gone == [True, True]
