"""The background SFT training's core sharing (tests/sft_background.py CoreShare): one thread while
other processes keep a core busy, every core while they leave the machine idle."""

from __future__ import annotations

import pytest
import torch

from tests.sft_background import CoreShare


@pytest.mark.parametrize(("machine_busy", "own", "threads"), [
    (2.0, 1.0, 1),   # others used a whole core
    (1.2, 1.0, 2),   # others used 0.2 of a core: the machine is ours
    (0.4, 0.0, 2),
    (2.0, 0.0, 1),   # others used both cores
])
def test_threads_follow_what_the_others_use(monkeypatch, machine_busy, own, threads):
    samples = iter([(0.0, 0.0, 0.0), (1.0, machine_busy, own)])
    monkeypatch.setattr(CoreShare, "sample", staticmethod(lambda: next(samples)))
    share = CoreShare(full=2)
    previous = torch.get_num_threads()
    try:
        share()
        assert torch.get_num_threads() == threads
        assert share.seconds[2] == 1.0  # the second before the switch ran on both threads
    finally:
        torch.set_num_threads(previous)


def test_samples_are_read_from_this_machine():
    now, busy, own = CoreShare.sample()
    later, busy_later, own_later = CoreShare.sample()
    assert later >= now and busy_later >= busy >= own_later >= own > 0
