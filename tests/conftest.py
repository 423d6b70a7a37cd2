"""Shared fixtures: a tiny real transformer and tokenizer built in-process (no downloads)."""

from __future__ import annotations

import os

import pytest

from tests.browser import browser, page, server  # noqa: F401 (fixtures for the browser tests)

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


@pytest.fixture(scope="session")
def tiny_backbone():
    from core.model.backbone import Backbone

    tok = make_tokenizer()
    model = make_tiny_model(len(tok))
    return Backbone("tiny", model, tok, "tiny-test-fingerprint")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # converted-model and weight caches go to a per-session temp folder, never ~/.cache
    monkeypatch.setenv("TENSHOT_CACHE", os.environ.get("TENSHOT_TEST_CACHE")
                       or str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny real model saved as a local HF folder: a project's backbone in app tests."""
    folder = tmp_path_factory.mktemp("tiny-model")
    tok = make_tokenizer()
    make_tiny_model(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def fresh_workspace(tmp_path, monkeypatch, tiny_model_dir) -> str:
    """A fresh SQLite workspace for the app; projects created in the app use the tiny model."""
    path = str(tmp_path / "workspace.db")
    monkeypatch.setenv("TENSHOT_DB", path)
    monkeypatch.setenv("TENSHOT_BACKBONE", tiny_model_dir)
    return path



@pytest.fixture
def whole_app_reruns(monkeypatch):
    """Make every AppTest run execute app.py, as the real server does after its first run.

    AppTest resets PagesManager.uses_pages_directory before each run; because our page
    scripts live in a folder named pages/, Streamlit then takes the legacy multipage
    path and runs only the page script, without app.py's sidebar (and a click would be
    lost to the rerun that pages._shared makes to recover from that).
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
