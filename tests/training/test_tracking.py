"""``report_to: trackio`` and ``tensorboard`` (posttrain.tracking): a tiny PPO run writes its KL and value series, the
guard's signals and the held-out scores with their CIs to trackio's local database (beside its output folder, never
the Hub) and its KL to TensorBoard events; a TRL stage (SFT) logs the trainer's loss to the same local database; a
TRL stage's TrackerCallback logs into the run transformers opened, not a second one."""

import importlib.util
import json
import math
import socket
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from posttrain import tracking
from posttrain.stages import run_stage

from tiny import write_sft_config

# tests/rl/helpers.py (the RL tests' tiny PPO settings) is on sys.path only for the tests under tests/rl/
_spec = importlib.util.spec_from_file_location("rl_helpers", Path(__file__).parents[1] / "rl" / "helpers.py")
rl_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rl_helpers)
ppo_config = rl_helpers.ppo_config

PPO_STEPS, EVAL_STEPS = 4, 2


def series(db, key, run=None):
    """``[(step, value)]`` of ``key`` in trackio's sqlite database ``db`` (its ``metrics`` table: one JSON row a log)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id").fetchall()
    return [(step, json.loads(m)[key]) for name, step, m in rows if key in json.loads(m) and run in (None, name)]


@pytest.fixture(autouse=True)
def local_only(monkeypatch):
    """Metrics stay on this machine: a Space in the environment is ignored, and no socket connects anywhere."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRACKIO_DIR", raising=False)
    monkeypatch.setenv("TRACKIO_SPACE_ID", "someone/a-space")
    connect = socket.socket.connect

    def local_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network connection attempted: {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_connect)


@pytest.fixture
def ppo_run(tmp_path, tiny_chat_model):
    config = ppo_config(tmp_path, tiny_chat_model, max_steps=PPO_STEPS, test_split_size=8, rollout_batch_size=8,
                        per_device_train_batch_size=4, generation_batch_size=8, forward_batch_size=8,
                        report_to=["trackio", "tensorboard"], eval_strategy="steps", eval_steps=EVAL_STEPS,
                        run_name="ppo-tiny")  # fmt: skip
    trainer, _ = run_stage("ppo", ["--config", str(config)])
    return tmp_path, trainer


def test_ppo_series_in_trackio_and_tensorboard(ppo_run):
    tmp_path, trainer = ppo_run
    db = tmp_path / "trackio" / "posttrain.db"  # trackio/ beside output_dir, project posttrain
    assert db.is_file()
    for key in ("train/kl", "train/kl_coef", "train/value_loss", "train/value_mean", "train/explained_variance",
                "guard/rule_pass_rate", "guard/reply_length"):  # fmt: skip
        points = series(db, key, "ppo-tiny")
        assert [s for s, _ in points] == list(range(1, PPO_STEPS + 1)), key
        assert all(math.isfinite(v) for _, v in points), (key, points)
    for key in ("heldout/total/policy", "heldout/total/policy_low", "heldout/has_number/delta",
                "heldout/has_number/delta_low", "heldout/has_number/delta_high"):  # fmt: skip
        points = series(db, key, "ppo-tiny")
        assert [s for s, _ in points] == list(range(EVAL_STEPS, PPO_STEPS + 1, EVAL_STEPS)), key
        assert all(math.isfinite(v) for _, v in points), (key, points)
    low, mid, high = (series(db, f"heldout/has_number/delta{k}")[-1][1] for k in ("_low", "", "_high"))
    assert low <= mid <= high

    result = trainer.evaluate()  # after training (the stage's final held-out figures): the run is reopened
    assert series(db, "heldout/total/policy")[-1] == (PPO_STEPS, result["policy"]["total"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((tmp_path / "ppo").glob("runs/*/events.out.tfevents.*"))
    assert events, "no TensorBoard events in the published output folder"
    scalars = EventAccumulator(str(events[0].parent)).Reload()
    assert [e.step for e in scalars.Scalars("train/kl")] == list(range(1, PPO_STEPS + 1))
    assert "heldout/total/delta" in scalars.Tags()["scalars"]


def test_trl_stage_loss_and_extra_series_in_the_same_run(tmp_path, tiny_base_model, monkeypatch):
    """SFT under transformers' TrackioCallback and TensorBoardCallback, with the start_run hook and a TrackerCallback
    attached the way the GRPO/RLOO stages attach theirs (docs/tracking.md): the trainer's loss and posttrain's points
    (one logged before training, one after it, as the held-out scores are) land in one trackio run and one
    TensorBoard folder."""
    from posttrain.stages import sft

    start_run, train = sft.start_run, sft.train
    extra = {}

    def start_run_configured(training_args):  # the hook training/common.py start_run gets
        run = start_run(training_args)
        tracking.configure(training_args, run.final_dir)
        return run

    def train_tracked(run, trainer, training_args, **kwargs):
        extra["callback"] = callback = tracking.TrackerCallback.attach(trainer)
        callback.log({"guard/rule_pass_rate": 0.5}, 0)
        result = train(run, trainer, training_args, **kwargs)
        callback.log({"heldout/total/policy": 0.25}, trainer.state.global_step)
        return result

    monkeypatch.setattr(sft, "start_run", start_run_configured)
    monkeypatch.setattr(sft, "train", train_tracked)
    config = write_sft_config(tmp_path, tiny_base_model, max_steps=3, report_to=["trackio", "tensorboard"],
                              load_in_4bit=False)  # fmt: skip
    trainer = run_stage("sft", ["--config", str(config)])
    name = trainer.args.run_name
    assert trainer.args.project == "posttrain" and name.startswith("out-")
    assert trainer.args.trackio_static_space_id is False and trainer.args.trackio_space_id is None
    db = tmp_path / "trackio" / "posttrain.db"
    loss = series(db, "train/loss", name)
    assert len(loss) == 3 and all(math.isfinite(v) for _, v in loss)
    with sqlite3.connect(db) as conn:
        assert {run for (run,) in conn.execute("SELECT DISTINCT run_name FROM metrics")} == {name}
    assert [v for _, v in series(db, "guard/rule_pass_rate", name)] == [0.5]
    assert [v for _, v in series(db, "heldout/total/policy", name)] == [0.25]
    heldout_step = [json.loads(m) for (m,) in sqlite3.connect(db).execute("SELECT metrics FROM metrics")][-1]
    assert heldout_step["train/global_step"] == 3

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = {p.parent for p in (tmp_path / "out").glob("runs/*/events.out.tfevents.*")}
    assert len(folders) == 1, folders  # posttrain's events beside the trainer's, in transformers' folder
    tags = EventAccumulator(str(folders.pop())).Reload().Tags()["scalars"]
    assert {"train/loss", "guard/rule_pass_rate", "heldout/total/policy"} <= set(tags)


class _FakeTrainer:
    def __init__(self):
        self.callback_handler = SimpleNamespace(callbacks=[])
        self.callbacks = []

    def add_callback(self, callback):
        self.callbacks.append(callback)

    def is_world_process_zero(self):
        return True


def test_trl_callback_logs_into_the_run_transformers_opened(tmp_path):
    import trackio

    tracking.point_trackio_at(tmp_path / "trackio")
    tracking.keep_trackio_local()  # as configure() does before the trainer is built
    args = SimpleNamespace(report_to=["trackio"], project="posttrain", run_name="grpo-x", output_dir=str(tmp_path))
    callback = tracking.TrackerCallback.attach(_FakeTrainer())
    callback.log({"guard/rule_pass_rate": 0.5}, 1)  # before training: waits for the run
    trackio.init(project="posttrain", name="grpo-x", embed=False)  # what transformers' TrackioCallback does
    callback.on_train_begin(args, None, None)
    trackio.log({"train/loss": 1.0, "train/global_step": 2})
    callback.log({"guard/rule_pass_rate": 0.75, "guard/proxy_reward": math.nan}, 2)
    trackio.finish()  # transformers' on_train_end, then posttrain's
    callback.on_train_end(args, None, None)
    callback.log({"heldout/total/policy": 0.9}, 2)  # the held-out scores after training: same run, reopened
    db = tmp_path / "trackio" / "posttrain.db"
    with sqlite3.connect(db) as conn:
        runs = {name for (name,) in conn.execute("SELECT DISTINCT run_name FROM metrics")}
    assert runs == {"grpo-x"}
    assert [v for _, v in series(db, "guard/rule_pass_rate")] == [0.5, 0.75]
    assert series(db, "guard/proxy_reward") == []  # NaN points are left out
    assert [v for _, v in series(db, "train/global_step")] == [1, 2, 2, 2]
    assert series(db, "heldout/total/policy")[0][1] == 0.9
