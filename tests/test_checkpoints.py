"""The resume rules every training stage shares (runtime/lib/checkpoints.py), on plain folders: no training."""

from __future__ import annotations

import json
from pathlib import Path

from runtime.lib import checkpoints
from runtime.lib.common import load_config

SPEC = {
    "name": "ck",
    "task": {"synthetic": {"gold_size": 0, "dev_size": 0, "distill_size": 4, "test_size": 4}},
    "models": {"m": {"init": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}}},
    "stages": {
        "samples": {"kind": "generate", "model": "m", "max_new_tokens": 8},
        "votes": {"kind": "pseudo_reward", "teacher": "samples"},
    },
}


def folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "file.txt").write_text(text)
    return path


def test_a_kill_between_the_two_renames_leaves_a_complete_folder(tmp_path, monkeypatch):
    dest = tmp_path / "latest"
    checkpoints.swap_in(folder(tmp_path / "a.tmp", "a"), dest)
    assert (checkpoints.current(dest) / "file.txt").read_text() == "a"

    real_rename, calls = Path.rename, []

    def killed_on_second_rename(self, target):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_on_second_rename)
    try:
        checkpoints.swap_in(folder(tmp_path / "b.tmp", "b"), dest)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Path, "rename", real_rename)
    assert not dest.exists()  # the window the old rl swap had
    assert (checkpoints.current(dest) / "file.txt").read_text() == "a"  # the old snapshot is still found
    checkpoints.swap_in(folder(tmp_path / "c.tmp", "c"), dest)  # and the next swap recovers
    assert (checkpoints.current(dest) / "file.txt").read_text() == "c"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tmp", "latest"]


def test_a_torn_checkpoint_is_dropped_and_the_last_complete_one_resumed(tmp_path):
    for step, state in ((5, {"global_step": 5}), (10, {"global_step": 10}), (15, None)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if state is not None:
            (d / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / "trainer_state.json").write_text('{"global_st')  # killed mid-write
    assert checkpoints.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-5"]


def test_state_of_another_config_or_input_is_discarded(built):
    configs = built(SPEC)
    cfg = load_config(configs["votes"], "pseudo_reward")
    responses = Path(cfg.inputs["teacher_responses"])
    responses.parent.mkdir(parents=True)
    responses.write_text("{}\n")
    (checkpoints.resume_dir(cfg) / "state").write_text("kept")
    assert (checkpoints.resume_dir(cfg) / "state").exists()  # same config, same inputs: resumed
    stamp = checkpoints.fingerprint(cfg)
    responses.write_text("{}\n{}\n")  # the upstream stage ran again
    assert checkpoints.fingerprint(cfg) != stamp
    assert not (checkpoints.resume_dir(cfg) / "state").exists()
    more = cfg.params.model_copy(update={"resources": cfg.params.resources.model_copy(update={"cpus": 7})})
    resources = cfg.model_copy(update={"params": more})
    assert checkpoints.fingerprint(resources) == checkpoints.fingerprint(cfg)  # more time or cpus: resume
