import os
import subprocess
import sys
import threading

from nsr_env.atomic import atomic_write, remove_orphaned_temporaries


def test_concurrent_writers_in_threads_each_get_their_own_temporary_file(tmp_path):
    target = tmp_path / "entry.bin"
    both_written = threading.Barrier(2, timeout=10)
    temporaries, errors = [], []

    def writer(content: bytes) -> None:
        def write(temporary):
            temporaries.append(temporary)
            temporary.write_bytes(content)
            both_written.wait()  # neither thread renames before the other has written its temporary file

        try:
            atomic_write(target, write)
        except Exception as error:  # a shared temporary file: the second rename finds it gone
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(content,)) for content in (b"first", b"second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(temporaries)) == 2
    assert target.read_bytes() in (b"first", b"second")
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_orphaned_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / "sub" / f".summary.csv.{dead.stdout.strip()}.{'a' * 32}.tmp"
    live = tmp_path / f".summary.csv.{os.getpid()}.{'b' * 32}.tmp"
    unrelated = tmp_path / ".notes.tmp"
    orphan.parent.mkdir()
    for path in (orphan, live, unrelated):
        path.write_text("partial")
    assert remove_orphaned_temporaries(tmp_path) == [orphan]
    assert not orphan.exists() and live.exists() and unrelated.exists()


def _compute_once(target: str, log: str) -> None:
    """The cache pattern of the feature, a* and threshold caches: look, lock, look again, compute."""
    import time
    from pathlib import Path

    from nsr_env.atomic import exclusive

    path = Path(target)
    if path.exists():
        return
    with exclusive(path):
        if path.exists():
            return
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for the other process to find the lock taken
        atomic_write(path, lambda temporary: temporary.write_text("done"))


def test_processes_that_miss_the_same_entry_compute_it_once(tmp_path):
    import multiprocessing

    target, log = tmp_path / "entry.json", tmp_path / "computed.log"
    context = multiprocessing.get_context("spawn")  # separate interpreters, as sweep workers on Ray would be
    workers = [context.Process(target=_compute_once, args=(str(target), str(log))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert target.read_text() == "done" and len(log.read_text().split()) == 1


def test_a_lock_whose_holder_died_is_free_again(tmp_path):
    target = tmp_path / "entry.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from nsr_env.atomic import exclusive\nimport os\nfrom pathlib import Path\n"
         f"with exclusive(Path({str(target)!r})):\n    os.kill(os.getpid(), 9)"],
    )  # fmt: skip
    assert holder.wait(timeout=60) == -9
    from nsr_env.atomic import exclusive

    with exclusive(target):  # would block forever if the dead holder's lock were kept
        pass
