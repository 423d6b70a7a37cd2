"""`tenshot predict --engine ray` equals the single-process path (Ray local mode, 1 CPU actor).

Runs wherever Ray Data is installed (.ci/run installs the ``ray`` extra); skips, saying
so, only where ``import ray`` fails.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from core.cli import main
from tests.helpers import make_tiny_model, make_tokenizer, write_csv

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves the machine, tests included
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")

pytestmark = pytest.mark.ray

POS = ["good movie", "great film", "i love it", "wonderful plot", "excellent and happy", "superb movie"]
NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "boring and sad", "poor movie"]
NEW = ["a good film", "awful plot", "=cmd", "i love this movie", "sad and boring film", "plot"]


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray instance for the module: 2 CPUs, no dashboard, shut down after."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(__import__("pathlib").Path(__file__)
                                                          .resolve().parent.parent)}})
    yield
    ray.shutdown()


def _predict_both_ways(tmp_path, db: str):
    """Export project "p"'s bundle, then predict NEW with it in one process and on Ray:
    (bundle, the single-process CSV, the Ray CSV)."""
    bundle = str(tmp_path / "m.tenshot")
    assert main(["--db", db, "export", "--project", "p", "--out", bundle]) == 0
    new = write_csv(tmp_path / "new.csv", [(t, "") for t in NEW])
    plain, on_ray = tmp_path / "plain.csv", tmp_path / "ray.csv"
    assert main(["--db", db, "predict", "--bundle", bundle, "--data", new, "--out", str(plain)]) == 0
    assert main(["--db", db, "predict", "--bundle", bundle, "--data", new, "--out", str(on_ray),
                 "--engine", "ray", "--batch-size", "4"]) == 0
    return bundle, plain, on_ray


def test_predict_on_ray_equals_the_single_process_path(tmp_path, local_ray, capsys):
    # issue 14: corpora beyond one machine are scored on Ray Data, with the same output
    model = tmp_path / "model"
    tok = make_tokenizer()
    make_tiny_model(len(tok)).save_pretrained(model)
    tok.save_pretrained(model)
    db = str(tmp_path / "w.db")
    train = write_csv(tmp_path / "train.csv", [(t, "pos") for t in POS] + [(t, "neg") for t in NEG])
    assert main(["--db", db, "train", "--project", "p", "--data", train, "--backbone", str(model),
                 "--prompt", "", "--mode", "layer"]) == 0
    bundle, plain, on_ray = _predict_both_ways(tmp_path, db)
    a, b = list(csv.reader(open(plain, encoding="utf-8-sig"))), list(csv.reader(open(on_ray, encoding="utf-8-sig")))
    assert a[0] == b[0] and a[0][:5] == ["line", "text", "label", "predicted", "confidence"]
    assert len(a) == len(b) == 1 + len(NEW)
    assert [r[:4] for r in a] == [r[:4] for r in b]  # line, text, label, predicted class
    np.testing.assert_allclose(np.array([r[4:] for r in b[1:]], float),
                               np.array([r[4:] for r in a[1:]], float), rtol=1e-5, atol=2e-6)
    assert "wrote 6 predictions" in capsys.readouterr().err
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow comes with ray[data]")
    import pyarrow as pa

    parquet = tmp_path / "new.parquet"
    pq.write_table(pa.table({"sentence": NEW}), parquet)
    assert main(["--db", db, "predict", "--bundle", bundle, "--data", str(parquet), "--out",
                 str(tmp_path / "pq.csv"), "--engine", "ray", "--text-column", "sentence"]) == 0
    c = list(csv.reader(open(tmp_path / "pq.csv", encoding="utf-8-sig")))
    assert c[0] == a[0] and [r[0] for r in c[1:]] == [str(i) for i in range(1, len(NEW) + 1)]
    assert [r[1:4] for r in c] == [r[1:4] for r in a]  # parquet rows count from 1, not lines
    np.testing.assert_allclose(np.array([r[4:] for r in c[1:]], float),
                               np.array([r[4:] for r in a[1:]], float), rtol=1e-5, atol=2e-6)


def test_ray_usage_statistics_stay_off_unless_the_user_opts_in(monkeypatch):
    # nothing leaves the machine: Ray reports usage to usage-stats.ray.io unless disabled
    from core.scoring_ray import _ray

    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    _ray()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    _ray()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


def test_a_file_too_big_for_the_ray_driver_is_refused_in_plain_words(tmp_path):
    # issue 14 item 5: a clear message when a file is too big for the chosen engine
    from core.errors import InputError
    from core.scoring_ray import check_input_size

    data = write_csv(tmp_path / "big.csv", [(f"sentence number {i}", "") for i in range(2000)])
    size = os.path.getsize(data)
    check_input_size(data, available=4 * size)  # fits
    with pytest.raises(InputError, match=r"big\.csv is .* GB; --engine ray reads it on this "
                                         r"machine first .* Split it into files of at most"):
        check_input_size(data, available=4 * size - 1)
    check_input_size(data)  # this machine has room for a small file


def test_ray_batches_hold_texts_of_about_one_length():
    # issue 14's throughput bar: in file order each map_batches batch padded its texts to
    # its longest (Ray ran at 0.6x the single process); the rows now go longest first,
    # every line once, so consecutive batches hold texts of similar length
    from core.scoring_ray import _longest_first

    rng = np.random.default_rng(0)
    texts = [" ".join(["word"] * int(n)) for n in rng.integers(1, 60, 500)]
    rows = _longest_first(range(100, 600), texts)
    assert sorted(r["line"] for r in rows) == list(range(100, 600))
    assert all(r["text"] == texts[r["line"] - 100] for r in rows)
    lengths = [len(r["text"]) for r in rows]
    assert lengths == sorted(lengths, reverse=True)


def test_the_default_cpu_pool_is_one_actor_per_core_as_far_as_memory_holds():
    # 2 single-threaded actors ran at 1.49x the single process on 2 cores, 1 actor at 0.84x
    from core.scoring_ray import _ACTOR_BYTES, _pool

    class Cluster:
        def __init__(self, **resources):
            self.resources = resources

        def cluster_resources(self):
            return self.resources

    assert _pool(Cluster(CPU=2.0, memory=16 * _ACTOR_BYTES), None) == (2, {"num_cpus": 1})
    assert _pool(Cluster(CPU=8.0, memory=3 * _ACTOR_BYTES), None) == (3, {"num_cpus": 2})
    assert _pool(Cluster(CPU=8.0, memory=16 * _ACTOR_BYTES), 1) == (1, {"num_cpus": 8})  # --actors 1
    assert _pool(Cluster(CPU=2.0, GPU=4.0, memory=0), None) == (4, {"num_gpus": 1})


def test_a_multi_label_bundle_scores_the_same_sets_on_ray(tmp_path, local_ray, tiny_model_dir):
    # the Ray actors load whatever load_bundle returns: a multi-label bundle gives a
    # MultiLabelClassifier, whose per-class probabilities the CLI turns into sets
    from tests.test_multilabel_cli import ROWS

    db = str(tmp_path / "w.db")
    data = write_csv(tmp_path / "t.csv", ROWS, header=("text", "labels"))
    assert main(["--db", db, "train", "--project", "p", "--data", data, "--backbone", tiny_model_dir,
                 "--prompt", "", "--mode", "layer", "--penalty", "l2"]) == 0
    bundle, plain, on_ray = _predict_both_ways(tmp_path, db)
    a, b = (list(csv.DictReader(open(p, encoding="utf-8-sig"))) for p in (plain, on_ray))
    assert list(a[0]) == ["line", "text", "labels", "predicted", "p_pos", "p_film", "p_neg"] == list(b[0])
    assert len(a) == len(b) == len(NEW)
    assert [(r["line"], r["text"], r["predicted"]) for r in a] == [(r["line"], r["text"], r["predicted"]) for r in b]
    columns = ["p_pos", "p_film", "p_neg"]
    np.testing.assert_allclose(np.array([[float(r[c]) for c in columns] for r in b]),
                               np.array([[float(r[c]) for c in columns] for r in a]), rtol=1e-5, atol=2e-6)
