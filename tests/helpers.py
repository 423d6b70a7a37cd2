"""Data and helpers shared by the test modules: the tiny in-process transformer and
tokenizer, the sentences of the app's test workspace, AppTest page readers, and the
reliability figures. Fixtures live in conftest.py (and the browser ones in browser.py,
a plugin conftest registers), so test modules never import fixtures. Import this module
one way only, ``from tests.helpers import ...``: a second name would load a second copy."""

from __future__ import annotations

import csv

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# --- a tiny real transformer ----------------------------------------------------------

WORDS = (
    "good great love wonderful delight excellent fine happy best superb "
    "bad awful hate terrible boring worst poor sad dull ugly "
    "the a movie film plot it was is and this i very not review sentiment : ! . ,"
).split()


def make_tokenizer(words=WORDS):
    """A word-level fast tokenizer trained on a fixed vocabulary; no BOS is added,
    like SmolLM2's, so the sink-token convention is exercised."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<unk>",
    )
    fast.padding_side = "right"
    return fast


def make_tiny_model(vocab_size: int, *, seed: int = 0, layers: int = 2, hidden: int = 32):
    import torch
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, attn_implementation="eager",
    )
    return LlamaModel(config).eval()


class DictCache:
    """An in-memory feature cache with the Store's get/put interface (for embed tests)."""

    def __init__(self):
        self.data = {}

    def get_features(self, fp, prompt, pooling, hashes):
        return {h: self.data[(fp, prompt, pooling, h)] for h in hashes
                if (fp, prompt, pooling, h) in self.data}

    def put_features(self, fp, prompt, pooling, items):
        self.data.update({(fp, prompt, pooling, h): v for h, v in items.items()})


# --- the app's test workspace (conftest's ``workspace`` fixture) --------------------------

POS = ["good movie", "great film", "i love it", "wonderful plot", "excellent and happy",
       "the best film", "superb movie", "a delight"]
NEG = ["bad movie", "awful film", "i hate it", "terrible plot", "boring and sad",
       "the worst film", "poor movie", "dull and ugly"]
PLAIN_UNLABELLED = ["very good", "very bad", "it was fine"]
# unlabelled; the last ones are user text that must stay plain text in the UI
UNLABELLED = PLAIN_UNLABELLED + ["=cmd|' /C calc'!A0", "**bold** <b>html</b> [link](http://x)"]
CLASSES = ["neg", "pos"]
APP = Path(__file__).resolve().parent.parent / "app.py"
N_LABELLED = 5  # per class: enough for a 5-fold learning curve


def open_page(page: str):
    """Open the app on ``pages/<page>.py`` (the sidebar picks the first project); returns
    the AppTest after its first run."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=30)
    at.switch_page(f"pages/{page}.py")
    at.run()
    return at


def plotly_specs(at) -> list[dict]:
    """The JSON figures of every st.plotly_chart on the page (AppTest has no typed accessor)."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def plotly_array(value) -> "np.ndarray":
    """A plotly JSON array: a plain list, or plotly's typed form {dtype, bdata (base64), shape}."""
    import base64

    import numpy as np

    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.asarray(value)


def page_text(at) -> str:
    """Everything an AppTest page shows as markdown, captions and alerts, in one string."""
    parts = [e.value for kind in ("markdown", "caption", "success", "info", "warning", "error")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts).replace("\\", "")


def sql(path: str, query: str, *args) -> list[tuple]:
    """Rows of a query on the workspace file, through a plain sqlite3 connection."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        return conn.execute(query, args).fetchall()


# --- reliability figures (the report is written by tests/test_reliability.py) --------------

# section -> its row's title; the report is written only when every section was measured
SECTIONS = {
    "crash": "Labelling process killed with SIGKILL at random moments",
    "concurrency": "Processes labelling one project of a new file at the same time",
    "hostile_inputs": "Broken or hostile uploads (generated and hand-written)",
    "upload_page": "Broken uploads through the Data page (AppTest)",
    "cli_inputs": "Broken or hostile `tenshot` command lines: files, labels, paths, options",
    "bundles": "Malicious, tampered or foreign model bundles",
    "injection_pages": "Script, HTML, markdown and Streamlit tricks on every page (AppTest)",
    "injection_browser": "The same tricks in Chromium (Playwright): dialogs and live elements",
    "degradation": "Missing backbone, damaged model cache, out of memory, size limits",
    "sessions": "Two browser sessions labelling one project: undo, retrains finishing out of order",
    "resumed_jobs": "Embedding job killed with SIGKILL mid-way, then continued",
    "export_paths": "Tables' CSV download and the Export page's CSV: live spreadsheet formulas",
}


def figures_dir(tmp_path_factory) -> Path:
    """Where this session's reliability figures are collected (one JSON file per section)."""
    folder = tmp_path_factory.getbasetemp() / "reliability-figures"
    folder.mkdir(exist_ok=True)
    return folder


def record_figures(tmp_path_factory, section: str, figures: str, failures: int) -> None:
    """Record one section's figures (a short phrase) and how many of its checks failed."""
    assert section in SECTIONS, section
    path = figures_dir(tmp_path_factory) / f"{section}.json"
    path.write_text(json.dumps({"figures": figures, "failures": failures}))


# user text that must stay inert wherever a page renders markdown or HTML
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
           "**bold** [x](javascript:alert(1))", ":red[x]"]
HOSTILE_WORDS = ["good movie", "bad film", "very dull plot", "the best review"]


def check_inert(at) -> None:
    """No user text that could turn into markup anywhere the page renders markdown or HTML."""
    shown = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success")
             for e in getattr(at, kind)]
    shown += [m.label for m in at.metric] + [h.proto.body for h in at.get("html")]
    shown += [o for w in at.get("button_group") for o in w.options]
    for text in shown:
        for bad in HOSTILE:
            assert bad not in text, (bad, text)
    for spec in plotly_specs(at):
        dumped = json.dumps(spec)
        assert "<script" not in dumped and "<img" not in dumped


def write_csv(path, rows, header=("text", "label")) -> str:
    """Write ``rows`` under ``header`` as a CSV file at ``path``; return the path as str."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)
