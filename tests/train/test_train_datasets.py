"""train(cfg, train_dataset=...): a datasets.Dataset of TRL rows trains, and its extra columns reach the reward."""

from __future__ import annotations

import datasets
import pytest
from run_helpers import tiny_base, tiny_config

from appo.train.trainer import train


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_base(tmp_path_factory.mktemp("base") / "model")


def test_train_on_a_trl_dataset(base, tmp_path):
    reward = tmp_path / "bonus.py"
    reward.write_text("def bonus_reward(prompts, completions, bonus, **kwargs):\n"
                      "    return [float(b) for b in bonus]\n")
    rows = [{"prompt": [{"role": "user", "content": f"What is {a} + {a}?"}], "answer": str(2 * a), "bonus": 0.75}
            for a in range(1, 5)]
    cfg = tiny_config(base, tmp_path / "run", "trainer.total_training_steps=1", "data.train_files=[]",
                      f"reward.name={reward}:bonus_reward")
    result = train(cfg, train_dataset=datasets.DatasetDict(train=datasets.Dataset.from_list(rows)))
    assert result.steps == 1
    assert result.history[0]["critic/score/mean"] == pytest.approx(0.75)  # the `bonus` column, per row


def test_weighted_rewards_are_logged_one_by_one(base, tmp_path):
    reward = tmp_path / "r.py"
    reward.write_text("def half(prompts, completions, **kwargs):\n    return [0.5] * len(completions)\n")
    cfg = tiny_config(base, tmp_path / "run", "trainer.total_training_steps=1",
                      f"reward.funcs=[{reward}:half, format]", "reward.weights=[2.0, 1.0]")
    m = train(cfg).history[0]
    assert m["reward/half/mean" if "reward/half/mean" in m else "reward/half"] == pytest.approx(0.5)
    assert "reward/format" in m
    assert m["critic/score/mean"] == pytest.approx(1.0 + m["reward/format"])
