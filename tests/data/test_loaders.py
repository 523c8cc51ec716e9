"""Bundled benchmarks and training files load with the right counts and fields; bad rows name file and row."""

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from appo.data import BENCHMARKS, ENV_VAR, DataError, load_benchmark, load_dataset, load_verl_parquet
from appo.paths import bundled_data_dir

# Row counts from data/README.md's table.
COUNTS = {
    "aime24": 30, "aime25": 30, "math500": 500, "gsm8k": 1319, "hotpotqa": 200, "2wiki": 200, "musique": 200,
    "bamboogle": 125, "webwalker": 200, "xbench": 100, "gaia": 103, "gaia_test": 103, "hle": 100,
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_every_bundled_benchmark_loads_with_its_count(name):
    examples = load_benchmark(name)
    assert len(examples) == COUNTS[name]
    assert len({e.id for e in examples}) == len(examples)
    spec = BENCHMARKS[name]
    for e in examples:
        assert e.question and e.answers and all(a.strip() for a in e.answers)
        assert (e.kind, e.metric, e.data_source) == (spec.kind, spec.metric, name)


def test_field_normalisation():
    gsm = load_benchmark("gsm8k")
    assert gsm[0].answers == ("18",) and "#### 18" in gsm[0].extra_info["solution"]
    assert all("," not in e.answers[0] for e in gsm)  # "#### 2,125" -> "2125"
    assert load_benchmark("aime25", limit=1)[0].answers == ("70",)  # int answer
    aime24 = load_benchmark("aime24", limit=1)[0]
    assert aime24.question.startswith("Every morning Aya") and "solution" in aime24.extra_info
    wiki = load_benchmark("2wiki", limit=1)[0]
    assert wiki.answers[:2] == ("the five boroughs", "City of New York")  # alias list kept
    gaia = load_benchmark("gaia", limit=1)[0]
    assert gaia.answers == ("34689",) and gaia.extra_info["Level"] == 2  # capitalised Question field
    hle = load_benchmark("hle", limit=1)[0]
    assert hle.messages[0]["role"] == "system" and hle.messages[1]["content"] == hle.question
    assert hle.extra_info["verl_data_source"] == "DR_hle_100"


def test_limit():
    assert len(load_benchmark("math500", limit=7)) == 7


def test_training_files(caplog):
    with caplog.at_level(logging.WARNING, logger="appo.data"):
        train = load_dataset("train/train_10k.parquet")
    # 10,000 rows; row 5274 has a blank ground truth and is skipped with a warning naming it.
    assert len(train) == 9999
    assert any("train_10k.parquet, row 5274" in r.getMessage() for r in caplog.records)
    kinds = [e.kind for e in train]
    assert kinds.count("qa") == 5000 and kinds.count("math") == 4999
    assert {e.metric for e in train if e.kind == "qa"} == {"f1"}
    first = train[0]
    assert first.id == "train_10k/0" and first.data_source == "DR_grpo_mix"
    assert first.answers == ("3\\sqrt{3} - 6",) and len(first.messages) == 2
    valid = load_dataset("train/valid.parquet")
    assert len(valid) == 180 and sum(e.kind == "math" for e in valid) == 100
    hard = load_verl_parquet(bundled_data_dir() / "train" / "hard_search_1k.parquet")
    assert len(hard) == 1071 and {e.kind for e in hard} == {"qa"}  # ability is null: inferred from the source


def test_corrupt_jsonl_row_names_file_and_row(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "q0", "answer": "a"}\n\n{"question": "q1", "answer": "b"}\n{"question": "q2", oops\n')
    with pytest.raises(DataError, match=r"broken\.jsonl, row 2: line 4 is not valid JSON"):
        load_dataset(path)
    path.write_text('{"question": "q0", "answer": "a"}\n{"answer": "b"}\n')
    with pytest.raises(DataError, match=r"broken\.jsonl, row 1: missing question field 'question' or 'problem'"):
        load_dataset(path)
    path.write_text('{"question": "q0", "answer": {"x": 1}}\n')
    with pytest.raises(DataError, match=r"row 0: field 'answer' is"):
        load_dataset(path)


def test_corrupt_parquet_row_names_file_row_and_field(tmp_path):
    rows = [
        {"data_source": "s", "prompt": [{"role": "user", "content": "q"}], "ability": "qa",
         "reward_model": {"ground_truth": "a"}, "extra_info": {"index": 0}},
        {"data_source": "s", "prompt": [{"role": "user", "content": "q"}], "ability": "qa",
         "reward_model": {"ground_truth": None}, "extra_info": {"index": 1}},
    ]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=r"bad\.parquet, row 1: missing field 'reward_model.ground_truth'"):
        load_verl_parquet(path)
    assert load_verl_parquet(path, limit=1)[0].answers == ("a",)


def test_data_dir_search_order(tmp_path, monkeypatch):
    own = tmp_path / "own" / "benchmarks"
    own.mkdir(parents=True)
    (own / "gsm8k.jsonl").write_text('{"question": "1+1?", "answer": "so #### 2"}\n')
    assert len(load_benchmark("gsm8k", data_dir=tmp_path / "own")) == 1
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "own"))
    assert len(load_benchmark("gsm8k")) == 1
    assert len(load_benchmark("aime25")) == 30  # not in the user's folder: falls through to the bundled one


def test_user_supplied_math_and_hle(tmp_path):
    with pytest.raises(FileNotFoundError, match="not bundled"):
        load_benchmark("math", data_dir=tmp_path)
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    # Hendrycks MATH rows carry the answer only inside the solution's last box.
    (bench / "math.jsonl").write_text(json.dumps(
        {"problem": "Half of one?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 1", "type": "Algebra"}
    ) + "\n")
    (bench / "hle_full.jsonl").write_text(
        json.dumps({"id": "a", "question": "Q1", "answer": "B", "image": ""}) + "\n"
        + json.dumps({"id": "b", "question": "Q2", "answer": "C", "image": "data:image/png;base64,xx"}) + "\n"
    )
    [math] = load_benchmark("math", data_dir=tmp_path)
    assert math.answers == ("\\frac{1}{2}",) and math.kind == "math" and math.extra_info["type"] == "Algebra"
    hle = load_benchmark("hle_full", data_dir=tmp_path)
    assert [e.answers for e in hle] == [("B",)]  # the image question is skipped
    assert load_dataset(bench / "math.jsonl")[0].answers == ("\\frac{1}{2}",)  # named like the benchmark


def test_load_dataset_specs(tmp_path):
    assert len(load_dataset("bamboogle", limit=3)) == 3
    qa = tmp_path / "mine.jsonl"
    qa.write_text(json.dumps({"query": "Who?", "answers": ["Ann", "Anne"]}) + "\n")
    [e] = load_dataset(qa)
    assert (e.kind, e.metric, e.answers, e.id, e.data_source) == ("qa", "f1", ("Ann", "Anne"), "mine/0", "mine")
    math = tmp_path / "sums.jsonl"
    math.write_text(json.dumps({"problem": "2+2?", "answer": 4}) + "\n")
    assert load_dataset(math)[0].kind == "math"
    assert load_dataset(qa, kind="qa", metric="em")[0].metric == "em"
    with pytest.raises(FileNotFoundError, match="neither a benchmark name"):
        load_dataset("no_such_thing")
