"""sweeper.run.packing.PackSearcher: packs are cut so that their members can train together (can_pack)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from ray.tune.search import Searcher

from sweeper.run.packing import PACK_KEY, PackSearcher, pack_key
from trainers.config import TrainConfig
from trainers.packed import can_pack


class ListSearcher(Searcher):
    """A real Searcher that hands out a fixed list of configurations, then says FINISHED."""

    def __init__(self, configs: list[dict], finish: bool = True):
        super().__init__(metric="score", mode="max")
        self.configs, self.finish, self.given, self.told = list(configs), finish, {}, {}

    def suggest(self, trial_id: str):
        if not self.configs:
            return Searcher.FINISHED if self.finish else None
        self.given[trial_id] = self.configs.pop(0)
        return self.given[trial_id]

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.told[trial_id] = (result, error)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.configs))

    def restore(self, checkpoint_path: str) -> None:
        self.configs = json.loads(Path(checkpoint_path).read_text())


DEMO = [  # the demo sweep: normalizer x scale, each config repeated per seed (Repeater's __trial_index__)
    {"normalizer": n, "scale": s, "__trial_index__": i}
    for n, s, i in itertools.product(["sn", "bsn"], [0.8, 1.0, 1.2, 1.4, 1.6], range(3))
]


def drain(searcher: PackSearcher, limit: int = 100) -> list[list[dict]]:
    packs = []
    for t in range(limit):
        out = searcher.suggest(f"t{t}")
        if out == Searcher.FINISHED:
            return packs
        assert out is not None
        packs.append(out[PACK_KEY])
    raise AssertionError("the pack searcher never finished")


def trainable(pack: list[dict]) -> bool:
    base = {"dataset": "ring", "model": "mlp", "iterations": 2}
    cfgs = [TrainConfig(**base, **{k: v for k, v in c.items() if not k.startswith("__")}, seed=c["__trial_index__"])
            for c in pack]  # fmt: skip
    return can_pack(cfgs)[0]


@pytest.mark.parametrize("k", [2, 3, 4, 5, 7, 16])
def test_demo_grid_packs_one_normalizer_per_pack_and_every_training_once(k):
    searcher = PackSearcher(ListSearcher(DEMO), k, "score", "max", total=len(DEMO))
    packs = drain(searcher)
    assert all(trainable(p) for p in packs)
    assert sorted(map(repr, (c for p in packs for c in p))) == sorted(map(repr, DEMO))
    assert all(len(p) <= k for p in packs)
    assert len(packs) == 2 * -(-15 // k)  # as few packs as the two normalizers allow


def test_interleaved_normalizers_still_fill_packs():
    """A sampler alternating between normalizers: queues fill up instead of packs of one."""
    configs = [{"normalizer": ("sn", "bsn")[i % 2], "scale": 1.0 + i / 10, "__trial_index__": 0} for i in range(16)]
    packs = drain(PackSearcher(ListSearcher(configs), 4, "score", "max", total=16))
    assert [len(p) for p in packs] == [4, 4, 4, 4] and all(trainable(p) for p in packs)


def test_total_caps_the_draws_of_an_endless_searcher():
    endless = ListSearcher([{"normalizer": "sn", "scale": 1.0 + i / 100} for i in range(1000)])
    packs = drain(PackSearcher(endless, 4, "score", "max", total=10))
    assert [len(p) for p in packs] == [4, 4, 2] and len(endless.given) == 10


def test_waiting_inner_searcher_gets_a_partial_pack_then_none():
    inner = ListSearcher([{"normalizer": "sn", "scale": 1.0}, {"normalizer": "bsn", "scale": 1.0}], finish=False)
    s = PackSearcher(inner, 4, "score", "max", total=8)
    first, second = s.suggest("a")[PACK_KEY], s.suggest("b")[PACK_KEY]
    assert [c["normalizer"] for c in first + second] == ["sn", "bsn"]
    assert s.suggest("c") is None  # nothing queued, the inner searcher waits for results


def test_members_are_told_back_under_their_inner_ids(tmp_path):
    inner = ListSearcher(DEMO[:6])
    s = PackSearcher(inner, 4, "score", "max", total=6)
    s.suggest("a")
    s.save(str(tmp_path / "searcher"))
    restored = PackSearcher(ListSearcher(DEMO[:6]), 4, "score", "max")
    restored.restore(str(tmp_path / "searcher"))
    assert restored._members == s._members and restored._drawn == s._drawn and restored.total == 6
    s.on_trial_result("a", {"m0/score": 0.5, "m1/score": 0.7})
    s.on_trial_complete("a", {"m0/score": 0.6})
    subs = [sub for sub, cfg in inner.given.items() if cfg in DEMO[:4]]
    assert inner.told[subs[0]] == ({"score": 0.6}, False) and inner.told[subs[1]] == ({"score": 0.7}, False)


def test_pack_key_ignores_per_member_and_private_keys():
    assert pack_key({"normalizer": "sn", "scale": 2.0, "seed": 1, "__trial_index__": 3}) == (("normalizer", "'sn'"),)
    assert pack_key({"normalizer": "sn", "lr_d": 1e-4}) == pack_key({"normalizer": "sn", "lr_d": 3e-4})
    assert pack_key({"normalizer": "sn"}) != pack_key({"normalizer": "bsn"})


def test_a_pack_prints_its_members_in_one_line():
    from sweeper.run.progress import members_summary, pack_step_line

    members = [{"normalizer": "sn", "scale": c, "__trial_index__": i} for c in (0.7, 1.0, 1.4) for i in (0, 1)]
    assert members_summary(members, [3, 7]) == "normalizer=sn scale=0.7..1.4 seed=3..7"
    mixed = [{"normalizer": n, "__trial_index__": 0} for n in ("sn", "bsn")]
    assert members_summary(mixed, [0]) == "normalizer={sn,bsn} seed=0"
    line = pack_step_line("p1", 375, 1000, "mode_coverage", {4: 0.1, 5: 0.42, 6: float("nan")}, "max")
    assert line == "    pack [p1] step 375/1000: mode_coverage best 0.42 (trial 5), median 0.42, 3 running"
    assert "best 0.1 (trial 4)" in pack_step_line("p", 1, 2, "fid", {4: 0.1, 5: 0.42}, "min")
    assert "no fid yet" in pack_step_line("p", 1, 2, "fid", {4: float("nan")}, "min")
