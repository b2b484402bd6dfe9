import threading

from nsr_env.atomic import atomic_write


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
