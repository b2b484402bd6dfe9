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
