"""Progress bars on the pages say how long is left, at the pace so far (issue 15 item 3's
"progress with an honest ETA", for every button that runs for a while)."""

from __future__ import annotations

from pages._shared import eta_text, with_eta
from pages._views import shap_duration


class FakeBar:
    def __init__(self):
        self.calls = []

    def progress(self, value, text=None):
        self.calls.append((value, text))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_time_left_follows_the_pace_so_far_and_counts_down():
    bar, clock = FakeBar(), Clock()
    update = with_eta(bar, clock=clock)
    update(0.0, "Refit 0 of 20.")
    assert bar.calls[-1] == (0.0, "Refit 0 of 20.")  # nothing done: no guess
    clock.now += 2
    update(0.25, "Refit 5 of 20.")
    assert bar.calls[-1] == (0.25, "Refit 5 of 20. About 6 s left.")
    clock.now += 2
    update(0.5, "Refit 10 of 20.")
    assert bar.calls[-1][1] == "Refit 10 of 20. About 4 s left."
    clock.now += 4
    update(1.0, "Refit 20 of 20.")
    assert bar.calls[-1] == (1.0, "Refit 20 of 20.")  # done: nothing left to guess


def test_a_fraction_outside_zero_to_one_is_clamped():
    bar = FakeBar()
    update = with_eta(bar, clock=Clock())
    update(1.2, "x")
    update(-0.1, "y")
    assert [value for value, _ in bar.calls] == [1.0, 0.0]


def test_the_eta_reads_in_seconds_then_minutes():
    assert eta_text(None) == ""
    assert eta_text(0.4) == " Almost done."
    assert eta_text(0.4, almost=" Almost done with this batch.") == " Almost done with this batch."
    assert eta_text(42) == " About 42 s left."
    assert eta_text(600) == " About 10 min left."


class _Backbone:
    def __init__(self, device):
        self.device = device


def test_the_shap_caption_says_what_a_run_costs_here():
    assert "the last one took 11 s" in shap_duration(10.6, _Backbone("cpu"))
    assert shap_duration(0.3, _Backbone("cpu")) == "under a second here."
    assert "about a second on a GPU" in shap_duration(None, _Backbone("cuda:0"))
    assert "on a CPU this takes a while" in shap_duration(None, _Backbone("cpu"))
