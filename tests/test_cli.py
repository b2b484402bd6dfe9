from analysis.cli import main
from nsr_env.data import datasets as datasets_module


def test_prepare_summarises_every_task_and_then_hits_the_cache(cache, capsys):
    argv = ["prepare", "--backbone", "tiny_cnn", "--train-per-class", "20", "--eval-per-class", "10"]
    assert main([*argv, "--cache", str(cache)]) == 0
    first = capsys.readouterr().out
    rows = [line for line in first.splitlines() if line.startswith("fashion_mnist[")]
    assert len(rows) == 5 and all(" new " in row for row in rows)
    assert "(40, 16, 16)" in rows[0]
    assert main([*argv, "--cache", str(cache)]) == 0
    again = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fashion_mnist[")]
    assert all(" hit " in row for row in again)


def test_prepare_without_data_prints_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setenv("NSR_CACHE", str(tmp_path / "cache"))
    datasets_module._load_cached.cache_clear()
    try:
        code = main(["prepare", "--backbone", "tiny_cnn", "--data", str(tmp_path / "empty")])
    finally:
        datasets_module._load_cached.cache_clear()
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("nsr prepare: fashion_mnist train split is not in")
    assert "apt-get install dataset-fashion-mnist" in err
    assert err.count("\n") == 1  # one line, no traceback
