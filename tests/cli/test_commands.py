"""``appo build-tiny`` builds only the base model; ``appo sft-train`` chains SFT into RL as the README shows,
with progress output; ``appo sft`` then ``appo train`` with the README's paths chain too."""

from __future__ import annotations

from cli_helpers import run_main, tiny_train_args


def test_build_tiny_then_sft_train(tmp_path, capsys):
    base = tmp_path / "demo" / "base"
    code, out, err = run_main(["build-tiny", base], capsys)
    assert code == 0, err
    assert (base / "config.json").is_file() and (base / "tokenizer.json").is_file()
    assert f"model.path={base}" in out and f"trainer.default_local_dir={tmp_path / 'demo' / 'sft'}" in out

    run = tmp_path / "demo" / "rl"
    sft = ["sft.num_examples=8", "sft.epochs=1", "sft.batch_size=4"]
    code, out, err = run_main(["sft-train", *tiny_train_args(base, run, "trainer.total_training_steps=1"), *sft],
                              capsys)
    assert code == 0, err
    model = run / "sft" / "sft_model"
    assert (model / "config.json").is_file()
    assert f"trained 1 steps from {model}" in out and "SFT on 8 demonstrations, 2 steps: step loss " in out
    assert "(one epoch, mean " in out  # one epoch: first and last step, not the epoch mean against itself
    assert "[sft] rendering 8 demonstrations" in err and "[sft] training" in err and "[sft] saving" in err
    saved = (run / "config.yaml").read_text()
    assert f"path: {model}" in saved  # the RL half trained the SFT'd model


def test_readme_sft_then_train_paths_chain(tmp_path, tiny_model, capsys):
    sft_dir = tmp_path / "demo" / "sft"
    sft = ["sft.num_examples=8", "sft.epochs=2", "sft.batch_size=4"]
    code, out, err = run_main(["sft", *tiny_train_args(tiny_model, sft_dir), *sft], capsys)
    assert code == 0, err
    assert "SFT on 8 demonstrations, 4 steps: epoch loss " in out  # two epochs: first and last epoch's mean
    code, out, err = run_main(["train", *tiny_train_args(sft_dir / "sft_model", tmp_path / "demo" / "train",
                                                         "trainer.total_training_steps=1")], capsys)
    assert code == 0 and "trained 1 steps" in out, err


def test_lora_sft_saves_the_merged_model_that_eval_serve_and_train_load(tmp_path, tiny_model, capsys):
    """A LoRA SFT (``model.lora_rank>0``) saves a full model folder with the adapters merged: peft's own
    ``save_pretrained`` would write only ``adapter_config.json`` + adapter weights, which the loaders behind
    ``appo eval``, ``appo serve`` and ``appo train`` refuse (no config.json)."""
    import torch

    from appo.models.loading import load_model_and_tokenizer
    from appo.serve.model import load_served, resolve_source

    sft_dir = tmp_path / "sft"
    sft = ["sft.num_examples=8", "sft.epochs=1", "sft.batch_size=4", "sft.lr=1e-2", "model.lora_rank=4"]
    code, _, err = run_main(["sft", *tiny_train_args(tiny_model, sft_dir), *sft], capsys)
    assert code == 0, err
    out = sft_dir / "sft_model"
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    merged, _ = load_model_and_tokenizer(out, device="cpu")
    base, _ = load_model_and_tokenizer(tiny_model, device="cpu")
    m, b = merged.state_dict(), base.state_dict()
    assert set(m) == set(b)  # plain model keys: no lora_A / base_layer left
    changed = [k for k in b if not torch.equal(m[k], b[k])]
    assert changed and all(k.endswith("proj.weight") for k in changed)  # only the adapted linears moved
    served, _ = load_served(resolve_source(out), device="cpu")
    assert all(torch.equal(served.state_dict()[k], m[k]) for k in m)
    code, out_txt, err = run_main(["train", *tiny_train_args(out, tmp_path / "rl", "trainer.total_training_steps=1")],
                                  capsys)
    assert code == 0 and "trained 1 steps" in out_txt, err
