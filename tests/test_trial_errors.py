"""A failed trial's error: the user's message first, deterministic or not, the traceback to a file.

Built from Ray's own exception classes (RayTaskError and its ``as_instanceof_cause`` dual class,
Ray Train's WorkerGroupError, RayActorError) pickled with Ray's cloudpickle as Tune pickles them,
and from Tune's error-file text with its ANSI colour codes. The real Tune path is covered end to
end by tests/test_abort_e2e.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray import cloudpickle
from ray.exceptions import RayActorError, RayTaskError

from sweeper.run import trial_errors
from sweeper.run.abort import AbortStopper
from trainers.config import ConfigError

MESSAGE = "dataset 'folder': data_root /nonexistent does not exist; set `data_root` to a folder of images"
TUNE_TEXT = (
    "Failure # 1 (occurred at 2026-12-03_10-33-19)\n"
    "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=21887, ip=127.0.0.1, actor_id=c77f, repr=run_trial)\n"
    "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    '  File "/x/trainers/data/layout.py", line 193, in _dir\n'
    "    raise ConfigError(...)\n"
    f"trainers.config.ConfigError: {MESSAGE}\n"
)


def _task_error(cause: BaseException) -> BaseException:
    """What Tune receives from ``ray.get`` of a failed trial: the dual RayTaskError(<cause>) class."""
    return RayTaskError("ImplicitFunc.train", TUNE_TEXT.split("\n", 1)[1], cause).as_instanceof_cause()


def _trial(tmp: Path, exc: BaseException | None, text: str = TUNE_TEXT) -> SimpleNamespace:
    """The two files Tune's ``Trial.handle_error`` writes, where a Trial says they are."""
    (tmp / "error.txt").write_text(text)
    pickled = None
    if exc is not None:
        pickled = tmp / "error.pkl"
        with open(pickled, "wb") as f:
            cloudpickle.dump(exc, f)
    return SimpleNamespace(error_file=str(tmp / "error.txt"), pickled_error_file=str(pickled) if pickled else None)


def test_a_config_error_from_a_trial_is_the_users_message_and_deterministic(tmp_path: Path) -> None:
    err = trial_errors.read(_trial(tmp_path, _task_error(ConfigError(MESSAGE))))
    assert err.message == f"ConfigError: {MESSAGE}"
    assert err.deterministic
    assert "\x1b" not in err.traceback and "trainers/data/layout.py" in err.traceback


def test_other_errors_are_transient_and_keep_their_first_line(tmp_path: Path) -> None:
    err = trial_errors.read(_trial(tmp_path, _task_error(RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB"))))
    assert err.message == "RuntimeError: CUDA out of memory." and not err.deterministic
    dead = RayActorError(error_msg="The actor died unexpectedly before finishing this task.\n\tclass_name: X")
    err = trial_errors.read(_trial(tmp_path, dead, "Failure # 1\nThe actor died unexpectedly\n"))
    assert err.message.startswith("RayActorError: The actor died unexpectedly") and not err.deterministic


def test_a_config_error_inside_a_distributed_trial_is_found(tmp_path: Path) -> None:
    from ray.train.v2.api.exceptions import WorkerGroupError

    group = WorkerGroupError("training failed", {0: ConfigError(MESSAGE), 1: ConfigError(MESSAGE)})
    err = trial_errors.read(_trial(tmp_path, _task_error(group)))
    assert err.deterministic and err.message == f"ConfigError: {MESSAGE}"
    crashed = WorkerGroupError("training failed", {1: ValueError("nan in batch")})
    err = trial_errors.read(_trial(tmp_path, _task_error(crashed)))
    assert not err.deterministic and err.message == "ValueError: nan in batch"


def test_chained_exceptions_are_followed() -> None:
    try:
        try:
            raise ConfigError(MESSAGE)
        except ConfigError as inner:
            raise RuntimeError("could not build the trainer") from inner
    except RuntimeError as outer:
        assert trial_errors.is_config_error(outer)
        assert trial_errors.describe(trial_errors.root_cause(outer)) == f"ConfigError: {MESSAGE}"


def test_without_a_readable_pickle_the_text_still_gives_the_message(tmp_path: Path) -> None:
    second = TUNE_TEXT.replace("# 1", "# 2").replace(MESSAGE, "the retry's message")
    err = trial_errors.read(_trial(tmp_path, None, TUNE_TEXT + second))
    assert err.message == "ConfigError: the retry's message" and err.deterministic  # the latest failure
    assert err.traceback == trial_errors.strip_ansi(TUNE_TEXT + second)  # every attempt, no ANSI
    oom = trial_errors.from_text("Failure # 1\n\x1b[31mray.exceptions.OutOfMemoryError\x1b[0m: Task was killed\n")
    assert oom.message == "OutOfMemoryError: Task was killed" and not oom.deterministic
    assert trial_errors.from_text("").message == "trial failed"


def test_messages_are_one_line_without_ansi_and_bounded() -> None:
    long = ConfigError("\x1b[31m" + "x" * 5000 + "\x1b[0m")
    text = trial_errors.describe(long)
    assert "\x1b" not in text and len(text) == trial_errors.MAX_MESSAGE and text.endswith("...")
    assert "\n" not in trial_errors.describe(ConfigError("a\u2028b"))


def test_the_traceback_file_is_written_atomically_under_errors(tmp_path: Path) -> None:
    err = trial_errors.TrialError("ConfigError: x", True, "Traceback...\nConfigError: x")
    rel = trial_errors.write_log(tmp_path, "abc_00001-m2", 3, err)
    assert rel == "errors/abc_00001-m2-a3.txt"
    assert (tmp_path / rel).read_text() == "Traceback...\nConfigError: x\n"
    assert not [p for p in (tmp_path / "errors").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps])
def test_a_pickled_stopper_never_carries_an_abort(dumps) -> None:  # noqa: ANN001
    """Tune pickles the run config (stop= included) into its experiment state; a resume starts clean."""
    stopper = AbortStopper()
    assert not stopper.stop_all() and not stopper("t1", {"step": 3})
    assert stopper.abort(1, "t1", "ConfigError: x", "errors/t1-a1.txt")
    assert not stopper.abort(2, "t2", "ConfigError: y", None)  # the first one is the reason
    assert stopper.stop_all() and stopper.reason.trial_id == "t1"
    assert not pickle.loads(dumps(stopper)).stop_all()
