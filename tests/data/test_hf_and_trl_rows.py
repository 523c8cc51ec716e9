"""Data in the forms TRL and verl users have: datasets objects, local dataset folders, TRL rows."""

from __future__ import annotations

import json

import datasets
import pytest

from appo.data import load_dataset
from appo.data.chat_rows import guess_kind, normalise_row
from appo.data.hf import examples_from
from appo.data.rows import DataError
from appo.rewards.custom import load_custom_reward

CONV = [
    {"prompt": [{"role": "user", "content": "What is 2+3?"}], "answer": ["5"], "difficulty": 1},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
     "answer": ["Paris", "paris"], "difficulty": 2},
]
STANDARD = [{"prompt": "Who wrote Hamlet?", "solution": "Shakespeare", "source_url": "x"},
            {"prompt": "Compute 1/2 + 1/2.", "solution": "The sum is $\\boxed{1}$.", "source_url": "y"}]
VERL = {"data_source": "gsm", "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "1+1?"}],
        "ability": "math", "reward_model": {"ground_truth": "2", "style": "rule"}, "extra_info": {"index": 7}}


def test_trl_conversational_dataset():
    ex = examples_from(datasets.Dataset.from_list(CONV), source="mine")
    assert [e.question for e in ex] == ["What is 2+3?", "Capital of France?"]
    assert ex[0].messages == ({"role": "user", "content": "What is 2+3?"},)
    assert ex[1].messages[0] == {"role": "system", "content": "Be brief."}  # the row's own system prompt is kept
    assert ex[1].answers == ("Paris", "paris")
    assert (ex[0].kind, ex[0].metric, ex[1].kind, ex[1].metric) == ("math", "math_equiv", "qa", "f1")
    assert ex[0].extra_info == {"difficulty": 1} and ex[0].id == "mine/0" and ex[0].data_source == "mine"


def test_trl_standard_rows_and_task_override():
    ex = examples_from(STANDARD)
    assert ex[0].question == "Who wrote Hamlet?" and ex[0].messages is None
    assert ex[1].answers == ("1",)  # the last \boxed{} of a solution
    assert [e.kind for e in ex] == ["math", "math"]  # a `solution` column reads as MATH-style
    assert [e.kind for e in examples_from(STANDARD, kind="qa")] == ["qa", "qa"]
    assert examples_from(STANDARD, kind="qa", metric="em")[0].metric == "em"
    assert guess_kind({"task": "open_qa"}) == "qa" and guess_kind({"x": 1}, ("\\frac{1}{2}",)) == "math"


def test_verl_rows_are_kept():
    [e] = examples_from(datasets.Dataset.from_list([VERL]))
    assert e.messages[0]["content"] == "S" and e.answers == ("2",) and e.kind == "math" and e.data_source == "gsm"
    assert e.extra_info["index"] == 7


def test_dataset_dict_split_choice():
    dd = datasets.DatasetDict(train=datasets.Dataset.from_list(CONV), validation=datasets.Dataset.from_list(CONV[:1]))
    assert len(examples_from(dd)) == 2 and len(examples_from(dd, want="test")) == 1  # test -> validation
    assert len(examples_from(dd, split="validation")) == 1
    with pytest.raises(ValueError, match=r"no split 'dev'; it has \['train', 'validation'\]"):
        examples_from(dd, split="dev")


def test_bad_rows_name_the_row_and_field():
    with pytest.raises(DataError, match=r"<dataset>, row 1: missing answer field 'answer'"):
        examples_from([CONV[0], {"prompt": "no answer here"}])
    with pytest.raises(DataError, match="no user message"):
        normalise_row({"prompt": [{"role": "system", "content": "s"}], "answer": "1"}, "f", 0, "f")


def test_local_folders_and_arrow_files(tmp_path):
    ds = datasets.Dataset.from_list(CONV)
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict(train=ds, test=ds.select([1])).save_to_disk(str(tmp_path / "dict"))
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CONV))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    for spec in (tmp_path / "saved", tmp_path / "pq", tmp_path / "js", arrow):
        ex = load_dataset(spec)
        assert [e.question for e in ex] == ["What is 2+3?", "Capital of France?"], spec
        assert ex[1].extra_info["difficulty"] == 2
    assert [e.question for e in load_dataset(tmp_path / "dict", split="test")] == ["Capital of France?"]
    assert len(load_dataset(f"{tmp_path / 'dict'}#train")) == 2
    assert load_dataset(tmp_path / "saved", kind="qa")[0].kind == "qa"
    with pytest.raises(ValueError, match="without splits"):
        load_dataset(f"{tmp_path / 'saved'}#train")


def test_trl_jsonl_file(tmp_path):
    path = tmp_path / "conv.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CONV))
    ex = load_dataset(path)
    assert ex[0].messages is not None and ex[1].answers == ("Paris", "paris")


def test_extra_columns_reach_a_trl_reward_as_keywords(tmp_path):
    fn = tmp_path / "r.py"
    fn.write_text("def reward(prompts, completions, difficulty, **kwargs):\n"
                  "    return [float(d) + (1.0 if 'ok' in c else 0.0) for d, c in zip(difficulty, completions)]\n")
    reward = load_custom_reward(f"{fn}:reward")
    ex = examples_from(datasets.Dataset.from_list(CONV))
    assert [o.score for o in reward(ex, ["ok", "no"])] == [2.0, 2.0]


def test_config_task_and_metric_reach_the_loader(tmp_path):
    from appo.config import load_config
    from appo.data.sources import data_overrides, load_examples

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in STANDARD))
    cfg = load_config(None, [f"data.train_files=[{path}]", "data.task=qa", "data.metric=em"])
    kind, metric = data_overrides(cfg.data.task, cfg.data.metric)
    assert {(e.kind, e.metric) for e in load_examples(cfg.data.train_files, "train", kind=kind, metric=metric)} \
        == {("qa", "em")}
    assert data_overrides("auto", "auto") == (None, None)
    with pytest.raises(ValueError, match="data.task"):
        load_config(None, ["data.task=maths"])
