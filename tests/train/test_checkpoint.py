"""Checkpoints: bitwise round trip, crash safety (temp dirs, SIGKILL mid-write), bitwise resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from appo.train.checkpoint import (
    capture_rng_state,
    clean_stale_temp_dirs,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    restore,
    restore_rng_state,
    save_checkpoint,
)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rng_state_round_trip_covers_python_numpy_torch_and_generators():
    g = torch.Generator().manual_seed(7)
    state = capture_rng_state({"sampler": g})
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3), torch.rand(3, generator=g))
    random.seed(123), np.random.seed(123), torch.manual_seed(123), g.manual_seed(123)
    restore_rng_state(state, {"sampler": g})
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3), torch.rand(3, generator=g))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2]) and torch.equal(first[3], again[3])
    with pytest.raises(KeyError, match="other"):
        restore_rng_state(state, {"other": torch.Generator()})


def test_checkpoint_rng_state_may_be_a_dict_of_generators(tmp_path):
    g = torch.Generator().manual_seed(11)
    save_checkpoint(tmp_path, 1, torch.nn.Linear(2, 2), rng_state={"sampler": g})
    expected = torch.rand(3, generator=g)
    g.manual_seed(0)
    restore(load_latest_checkpoint(tmp_path), torch.nn.Linear(2, 2), generators={"sampler": g})
    assert torch.equal(torch.rand(3, generator=g), expected)


def test_save_load_round_trip_is_bitwise(tmp_path, tiny_model, tiny_tokenizer):
    model = tiny_model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    ids = torch.randint(0, 100, (2, 8))
    for _ in range(2):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step(), sched.step(), opt.zero_grad()
    g = torch.Generator().manual_seed(3)
    path = save_checkpoint(tmp_path, 2, model, opt, sched, capture_rng_state({"g": g}),
                           data_state={"epoch": 0, "index": 16}, extra={"ema_N": torch.arange(3.0)},
                           tokenizer=tiny_tokenizer)
    assert path.name == "step_000002" and (tmp_path / "checkpoints" / "latest").read_text().strip() == path.name
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 2 and "model/model.safetensors" in meta["files"]

    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_pretrained(path / "model", dtype=torch.float32)  # a loadable HF folder
    assert _states_equal(fresh.state_dict(), model.state_dict())
    fresh = AutoModelForCausalLM.from_config(model.config)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: min(1.0, (s + 1) / 3))
    g2 = torch.Generator()
    ckpt = load_latest_checkpoint(tmp_path)
    assert ckpt.step == 2 and ckpt.data_state == {"epoch": 0, "index": 16}
    assert torch.equal(ckpt.extra["ema_N"], torch.arange(3.0))
    restore(ckpt, fresh, opt2, sched2, {"g": g2})
    assert _states_equal(fresh.state_dict(), model.state_dict())
    assert fresh.lm_head.weight.data_ptr() == fresh.model.embed_tokens.weight.data_ptr()  # still tied
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        assert all(torch.equal(s1["state"][k][n], s2["state"][k][n]) for n in s1["state"][k])
    assert sched2.state_dict() == sched.state_dict()
    assert torch.equal(torch.rand(2, generator=g2), torch.rand(2, generator=g))


def test_partial_and_stale_dirs_are_ignored_and_cleaned(tmp_path):
    model = torch.nn.Linear(4, 4)
    save_checkpoint(tmp_path, 1, model)
    ckpt_dir = tmp_path / "checkpoints"
    # a crash mid-write: a temp dir of a dead process, half written
    stale = ckpt_dir / f".tmp-step_000002-{_dead_pid()}-deadbeef"
    (stale / "model").mkdir(parents=True)
    (stale / "model" / "model.safetensors").write_bytes(b"\0" * 10)
    # a step folder without its manifest (e.g. copied by hand, interrupted) and a garbage latest pointer
    (ckpt_dir / "step_000003").mkdir()
    assert load_latest_checkpoint(tmp_path).step == 1
    assert not stale.exists()
    (ckpt_dir / "latest").write_text("step_000003\n")  # points at the incomplete one: fall back
    assert load_latest_checkpoint(tmp_path).step == 1
    (ckpt_dir / "latest").unlink()
    assert load_latest_checkpoint(tmp_path).step == 1
    with pytest.raises(FileNotFoundError, match="not a complete appo checkpoint"):
        load_checkpoint(ckpt_dir / "step_000003")
    assert load_latest_checkpoint(tmp_path / "nothing") is None
    # a live process's temp dir is left alone
    live = ckpt_dir / f".tmp-step_000004-{os.getppid()}-cafe0123"
    live.mkdir()
    clean_stale_temp_dirs(tmp_path)
    assert live.exists()


def test_retention_keeps_newest_and_latest(tmp_path):
    model = torch.nn.Linear(2, 2)
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000004", "step_000005"]
    # saving an older step again (a rollback): the newest by number stays, and so does the one `latest` names
    save_checkpoint(tmp_path, 3, model, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000003", "step_000005"]
    assert load_latest_checkpoint(tmp_path).step == 3
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def _writer_model():
    model = torch.nn.Module()
    model.big = torch.nn.Parameter(torch.zeros(2_000_000))
    model.small = torch.nn.Parameter(torch.zeros(3))
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _writer(run_dir: str, ack_path: str) -> None:
    """Save in a loop, forever; after each save, append "<step>" to ack_path (a small O_APPEND write)."""
    ckpt = load_latest_checkpoint(run_dir)
    step = ckpt.step + 1 if ckpt else 1
    model, opt = _writer_model()
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    while True:
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        with torch.no_grad():  # make every saved tensor tell which step it belongs to
            for p in model.parameters():
                p.fill_(step)
                opt.state[p]["momentum_buffer"].fill_(step)
        save_checkpoint(run_dir, step, model, opt, data_state={"index": step}, keep=2)
        os.write(ack, f"{step}\n".encode())
        step += 1


def _acks(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_sigkill_mid_write_always_leaves_a_complete_checkpoint(tmp_path):
    # A forkserver imports torch once; each writer is a cheap fork of it, killed with SIGKILL.
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "appo.train.checkpoint"])
    rng = random.Random(0)
    run_dir, ack_path = tmp_path / "run", tmp_path / "acks"
    last_seen = 0
    for _ in range(4):
        child = ctx.Process(target=_writer, args=(str(run_dir), str(ack_path)), daemon=True)
        child.start()
        deadline = time.monotonic() + 60
        while (not _acks(ack_path) or _acks(ack_path)[-1] <= last_seen) and time.monotonic() < deadline:
            time.sleep(0.01)  # wait for one acknowledged save of this writer, then kill at a random time
        time.sleep(rng.uniform(0.0, 0.3))
        child.kill()
        child.join()
        assert child.exitcode == -signal.SIGKILL
        ckpt = load_latest_checkpoint(run_dir)
        assert ckpt is not None
        assert ckpt.step >= _acks(ack_path)[-1] > last_seen  # nothing acknowledged was lost
        model, opt = _writer_model()
        restore(ckpt, model, opt, restore_rng=False)
        assert all(bool((p == ckpt.step).all()) for p in model.parameters())
        assert all(bool((s["momentum_buffer"] == ckpt.step).all()) for s in opt.state.values())
        assert ckpt.data_state == {"index": ckpt.step}
        assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
        last_seen = ckpt.step


def _train(model, opt, sched, g, steps, start=0, ckpt_at=None, run_dir=None):
    """A tiny RL-flavoured loop: random batch choice (python), noise (numpy), sampled tokens (generator),
    dropout (torch global RNG), AdamW with a warm-up schedule."""
    data = torch.arange(64).reshape(8, 8) % 50
    losses = []
    for step in range(start, steps):
        rows = random.sample(range(8), 4)
        scale = float(np.random.uniform(0.5, 1.5))
        with torch.no_grad():
            logits = model(input_ids=data[rows]).logits[:, -1]
            sampled = torch.multinomial(torch.softmax(logits, -1), 1, generator=g)
        ids = torch.cat([data[rows], sampled], 1)
        loss = model(input_ids=ids, labels=ids).loss * scale
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        losses.append(loss.item())
        if ckpt_at == step + 1:
            save_checkpoint(run_dir, step + 1, model, opt, sched, capture_rng_state({"sampler": g}),
                            data_state={"step": step + 1})
            return losses
    return losses


def _fresh(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attention_dropout=0.2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))
    return model, opt, sched, torch.Generator()


def _seed_all(seed, g):
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed), g.manual_seed(seed)


def test_interrupted_and_resumed_training_matches_uninterrupted_bitwise(tmp_path, tiny_model_dir):
    model, opt, sched, g = _fresh(tiny_model_dir)
    _seed_all(0, g)
    full = _train(model, opt, sched, g, steps=6)

    m2, o2, s2, g2 = _fresh(tiny_model_dir)
    _seed_all(0, g2)
    first = _train(m2, o2, s2, g2, steps=6, ckpt_at=3, run_dir=tmp_path)
    del m2, o2, s2, g2  # "crash"

    m3, o3, s3, g3 = _fresh(tiny_model_dir)
    _seed_all(999, g3)  # a different state everywhere, to prove restore() sets it
    ckpt = restore(load_latest_checkpoint(tmp_path), m3, o3, s3, {"sampler": g3})
    rest = _train(m3, o3, s3, g3, steps=6, start=ckpt.data_state["step"])
    assert first + rest == full
    assert _states_equal(m3.state_dict(), model.state_dict())
    assert sched.state_dict() == s3.state_dict()
