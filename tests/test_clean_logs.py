"""Clean logs: no `fatal: not a git repository` from lm-eval outside a checkout, and no
`missing keys ['lm_head.weight']` warning when a tied-embedding model resumes."""

from __future__ import annotations

import logging
import types


def test_lm_eval_git_hash_is_quiet_outside_git(tmp_path, monkeypatch, capfd):
    from lm_eval.loggers.utils import get_git_commit_hash

    from runtime.eval import quiet_git_hash

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # tmp_path is in no repository
    get_git_commit_hash()
    assert "fatal" in capfd.readouterr().err, "lm-eval's own call no longer prints git's error: drop the patch"
    assert quiet_git_hash() is None
    assert capfd.readouterr().err == ""


def test_tied_head_warning_is_dropped_and_others_kept():
    from runtime.lib.common import hide_tied_weights_warning

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("transformers.trainer")
    handler = Keep()
    logger.addHandler(handler)
    try:
        hide_tied_weights_warning(types.SimpleNamespace(config=types.SimpleNamespace(tie_word_embeddings=True)))
        logger.warning("There were missing keys in the checkpoint model loaded: ['lm_head.weight'].")
        logger.warning("There were missing keys in the checkpoint model loaded: ['model.norm.weight'].")
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
    assert seen == ["There were missing keys in the checkpoint model loaded: ['model.norm.weight']."]
