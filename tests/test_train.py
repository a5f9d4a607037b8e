"""Training: masking, exact split losses, schedules, budgets, splits, determinism, learning."""

import itertools
import math

import numpy as np
import polars as pl
import pytest
import torch
from synthetic import row_order_dataset

from scalelib.config import DEMO_REGIMES, ModelSize, Regime, TrainConfig
from scalelib.convergence import doubling_schedule, plateaued
from scalelib.data.store import ExpressionDataset, RowsOnDisk, load_dataset, read_rows
from scalelib.errors import ScalelibError
from scalelib.hardware import resolve_device, resolve_dtype
from scalelib.heldout import FixedMask, fixed_mask, per_gene_mean_mse
from scalelib.model import MaskedExpressionTransformer
from scalelib.train import (
    Convergence,
    Scores,
    TrainingDiverged,
    evaluate,
    learning_rate,
    load_checkpoint,
    train,
)

TINY = ModelSize("tiny", 8, 1, 2, 2)


def structured_dataset(n_cells=300, n_genes=16, seed=0) -> ExpressionDataset:
    """Log1p-like values driven by two latent factors, split 80/10/10 in row order."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_cells, 2))
    loadings = rng.normal(size=(2, n_genes))
    X = np.log1p(np.exp(0.8 * factors @ loadings) + rng.gamma(2.0, 0.5, size=(n_cells, n_genes)))
    return row_order_dataset(X, int(0.8 * n_cells), int(0.1 * n_cells), rng)


def noise_dataset(n_cells=2000, n_genes=8, seed=0) -> ExpressionDataset:
    """Independent log-gamma values: nothing to learn beyond the gene means. Split 50/25/25 in
    row order."""
    rng = np.random.default_rng(seed)
    X = np.log1p(rng.gamma(2.0, 1.0, size=(n_cells, n_genes)))
    return row_order_dataset(X, n_cells // 2, n_cells // 4, rng)


def test_per_gene_sums_count_only_masked_positions_and_pool_to_the_split_mse():
    model = MaskedExpressionTransformer(TINY, 3).eval()
    values = torch.rand(4, 3).numpy()
    mask = np.array([[False, True, True], [True, False, False], [False, True, False],
                     [False, False, False]])
    with torch.no_grad():
        predictions = model(torch.from_numpy(values), torch.from_numpy(mask)).numpy()
    squared = np.square(predictions - values)
    scores = evaluate(model, values, mask, batch_size=3, device=torch.device("cpu"), dtype="fp32")
    assert scores.masked.tolist() == [1, 2, 1]
    assert scores.squared_error == pytest.approx((squared * mask).sum(axis=0), rel=1e-6)
    table = scores.per_gene(["a", "b", "c"])
    pooled = (table["mse"] * table["n_masked"]).sum() / table["n_masked"].sum()
    assert pooled == pytest.approx(scores.mse, rel=1e-12)
    assert scores.bits is None and "bits" not in table.columns


def test_split_loss_is_pooled_over_positions_not_a_mean_of_batch_means():
    model = MaskedExpressionTransformer(TINY, 4).eval()
    values = torch.rand(5, 4).numpy()
    mask = np.zeros((5, 4), dtype=bool)
    mask[0, :] = True  # batch 1 (cells 0-1): 4 masked positions
    mask[3, 0] = True  # batch 2 (cells 2-3): 1 masked position; batch 3 (cell 4): 1
    mask[4, 2] = True
    with torch.no_grad():
        predictions = model(torch.from_numpy(values), torch.from_numpy(mask)).numpy()
    pooled = np.square(predictions - values)[mask].mean()
    score = evaluate(model, values, mask, batch_size=2, device=torch.device("cpu"), dtype="fp32")
    assert score.mse == pytest.approx(pooled, rel=1e-6)


def test_fixed_mask_is_reproducible_and_has_the_rate():
    first = fixed_mask(2000, 50, 0.15, seed=3)
    assert np.array_equal(first, fixed_mask(2000, 50, 0.15, seed=3))
    assert not np.array_equal(first, fixed_mask(2000, 50, 0.15, seed=4))
    assert first.mean() == pytest.approx(0.15, abs=0.005)


def test_per_gene_mean_baseline_on_a_hand_example():
    train_values = np.array([[0.0, 2.0], [2.0, 4.0]])  # gene means 1 and 3
    values = np.array([[1.0, 5.0], [3.0, 3.0]])
    mask = np.array([[True, True], [True, False]])
    assert per_gene_mean_mse(train_values, values, mask) == pytest.approx((0 + 4 + 4) / 3)


def test_learning_rate_warms_up_then_decays_or_stays():
    cosine = TrainConfig(max_steps=100, lr=1.0, warmup_frac=0.1, min_lr_ratio=0.1)
    assert learning_rate(0, cosine) == pytest.approx(0.1)
    assert learning_rate(9, cosine) == pytest.approx(1.0)
    assert learning_rate(99, cosine) == pytest.approx(0.1, abs=1e-3)
    rates = [learning_rate(step, cosine) for step in range(10, 100)]
    assert rates == sorted(rates, reverse=True)
    constant = cosine.with_(schedule="constant")
    assert {learning_rate(step, constant) for step in range(10, 100)} == {1.0}


def test_budget_in_cells_is_counted_exactly():
    dataset = structured_dataset()
    config = TrainConfig(max_cells=250, batch_size=32, eval_every=3)
    result = train(dataset, TINY, config, progress=False)
    assert result.cells_seen == 250
    assert result.steps == math.ceil(250 / 32) == result.budget_steps
    assert result.tokens_seen == 250 * dataset.n_genes
    assert 0 < result.masked_tokens_seen < result.tokens_seen
    assert result.curve["cells_seen"].to_list()[-1] == 250
    assert result.curve["val_mse"].drop_nulls().len() == 3  # steps 3, 6 and the last (8)


class RowRecorder(np.ndarray):
    """An array that remembers which rows were read (to prove what training touches)."""

    def __getitem__(self, key):
        if isinstance(key, np.ndarray):
            self.touched.update(np.asarray(key).ravel().tolist())
        return np.asarray(super().__getitem__(key))


def test_training_reads_only_training_cells():
    dataset = structured_dataset()
    recorder = dataset.X.view(RowRecorder)
    recorder.touched = set()
    watched = ExpressionDataset(recorder, dataset.obs, dataset.var, dataset.manifest)
    train_rows = set(dataset.split_indices("train", n_train=100).tolist())
    held_out = set(dataset.split_indices("val")) | set(dataset.split_indices("test"))
    assert not train_rows & held_out
    recorder.touched.clear()
    from scalelib.train import TrainingBatches

    batches = TrainingBatches(watched.X, watched.split_indices("train", 100), in_memory=False)
    for positions in batches.iterate(TrainConfig(max_steps=20, batch_size=16), np.random.default_rng(0)):
        batches.fetch(positions)
    assert recorder.touched and recorder.touched <= train_rows


def test_streamed_and_in_memory_training_agree(tmp_path):
    dataset = structured_dataset()
    on_disk = load_dataset(dataset.write(tmp_path / "data"))  # X memory-mapped, read by rows
    config = TrainConfig(max_steps=12, batch_size=16, eval_every=4, eval_batch_size=7)
    in_memory = train(dataset, TINY, config, seed=1, progress=False)
    streamed = train(on_disk, TINY, config, seed=1, progress=False, in_memory=False)
    for field in ("best_val_mse", "test_mse", "baseline_val_mse", "baseline_test_mse"):
        assert getattr(streamed, field) == pytest.approx(getattr(in_memory, field), rel=1e-12)
    assert streamed.curve["train_loss"].to_list() == in_memory.curve["train_loss"].to_list()


def test_fixed_mask_drawn_by_blocks_equals_the_whole_draw():
    whole = fixed_mask(41, 13, 0.3, seed=5)  # 13 genes: blocks start on odd draws too
    blocks = FixedMask(41, 13, 0.3, seed=5)
    assert all(np.array_equal(blocks[start:stop], whole[start:stop])
               for start in range(42) for stop in range(start, 43))


def test_rows_read_from_the_file_equal_the_memory_map(tmp_path):
    dataset = load_dataset(structured_dataset().write(tmp_path / "data"))
    rows = np.array([0, 1, 2, 7, 9, 10, 50, dataset.X.shape[0] - 1])
    np.testing.assert_array_equal(read_rows(dataset.X, rows), dataset.X[rows])
    np.testing.assert_array_equal(read_rows(dataset.X, rows[::-1]), dataset.X[rows[::-1]])
    lazy = RowsOnDisk(dataset.X, rows)
    np.testing.assert_array_equal(lazy[2:6], dataset.X[rows[2:6]])
    assert len(lazy) == len(rows) and lazy.shape == (len(rows), dataset.n_genes)


def test_same_seed_same_result_and_checkpoint_round_trip(tmp_path):
    dataset = structured_dataset()
    config = TrainConfig(max_steps=15, batch_size=16, eval_every=5)
    first = train(dataset, TINY, config, seed=7, progress=False, out_dir=tmp_path / "a")
    second = train(dataset, TINY, config, seed=7, progress=False, out_dir=tmp_path / "b")
    other = train(dataset, TINY, config, seed=8, progress=False)
    assert first.best_val_mse == second.best_val_mse and first.test_mse == second.test_mse
    assert first.best_val_mse != other.best_val_mse
    model = load_checkpoint(first.checkpoint)
    val = dataset.split_values("val")
    mask = fixed_mask(len(val), dataset.n_genes, config.mask_rate, config.eval_mask_seed)
    rescored = evaluate(model, val, mask, batch_size=64, device=torch.device("cpu"), dtype="fp32")
    assert rescored.mse == pytest.approx(first.best_val_mse, rel=1e-6)
    assert (tmp_path / "a" / "curve.parquet").exists()


def test_early_stopping_stops_and_keeps_the_best():
    dataset = structured_dataset()
    config = TrainConfig(max_steps=400, batch_size=16, lr=0.05, eval_every=2, patience=2)
    result = train(dataset, TINY, config, progress=False)
    assert result.stopped_early and result.steps < 400
    assert result.best_val_mse == result.curve["val_mse"].min()


def test_on_step_callback_sees_every_step():
    seen = []
    train(structured_dataset(), TINY, TrainConfig(max_steps=6, batch_size=8, eval_every=3),
          on_step=seen.append, progress=False)
    assert [info.step for info in seen] == list(range(1, 7))
    assert [info.val_mse is not None for info in seen] == [False, False, True] * 2
    assert seen[0].best_val_mse is None and seen[2].best_val_mse == seen[2].val_mse


def scripted_scores(monkeypatch, scores: list[float]) -> None:
    """Make the validation and test scores of the next run come from ``scores``, in order."""
    import scalelib.train as train_module

    queue = (Scores(np.array([score]), None, np.array([1])) for score in scores)
    monkeypatch.setattr(train_module, "evaluate", lambda *args, **kwargs: next(queue))


def test_a_first_non_finite_score_raises_naming_the_fix(monkeypatch):
    scripted_scores(monkeypatch, [math.nan])
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train(structured_dataset(), TINY, TrainConfig(max_steps=6, batch_size=8, eval_every=3),
              progress=False)


def test_a_later_non_finite_score_stops_and_keeps_the_best(monkeypatch):
    scripted_scores(monkeypatch, [1.5, math.inf, 1.7])  # val, val, then test
    result = train(structured_dataset(), TINY,
                   TrainConfig(max_steps=30, batch_size=8, eval_every=3), progress=False)
    assert result.steps == 6 and result.stopped_early
    assert (result.best_step, result.best_val_mse, result.test_mse) == (3, 1.5, 1.7)


def test_device_and_dtype_choices():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ScalelibError, match="device"):
        resolve_device("tpu")
    assert resolve_dtype("fp32", torch.device("cpu"), TINY) == "fp32"
    assert resolve_dtype("auto", torch.device("cpu"), TINY) == "fp32"  # narrow: casts cost more


def test_short_training_beats_the_per_gene_mean_baseline():
    from scalelib.data.preprocess import simulate_dataset

    dataset = simulate_dataset(Regime("test", n_genes=64, n_cells=3000), seed=0)
    size = ModelSize("small", 32, 2, 4, 2)
    config = TrainConfig(max_cells=30_000, batch_size=64, lr=3e-3, eval_every=100)
    result = train(dataset, size, config, progress=False)
    assert result.best_val_mse < 0.95 * result.baseline_val_mse
    assert result.test_mse < result.baseline_test_mse
    assert DEMO_REGIMES["rich"].n_cells > DEMO_REGIMES["limited"].n_cells


def test_converge_mode_ends_when_doubling_the_steps_no_longer_pays(one_factor_dataset,
                                                                   monkeypatch):
    """The rule branches off a cool-down; the stable run goes on from the branch (the cooled
    weights put aside) to twice its steps, cools down again, and so on until a cool-down gains
    less than the tolerance over the one before."""
    config = TrainConfig(max_steps=3000, batch_size=32, lr=1e-2, eval_every=20,
                         budget_mode="converge", converge_tol=0.01, cooldown_frac=0.2, dtype="fp32",
                         patience=1)  # patience is ignored in this mode
    restores = _spy_on_restores(monkeypatch)
    result = train(one_factor_dataset, TINY, config, progress=False)
    assert result.converged and result.val_improvement < 0.01
    assert result.steps < 3000 and result.cells_seen == result.steps * 32
    curve = result.curve
    cooldowns = curve.filter(pl.col("cooldown") > 0).group_by("cooldown", maintain_order=True).agg(
        first=pl.col("step").min(), last=pl.col("step").max(), lr=pl.col("lr").last(),
        val=pl.col("val_mse").drop_nulls())
    assert cooldowns.height >= 2 and curve["cooldown"][-1] == cooldowns.height  # ended cooling
    assert np.allclose(cooldowns["lr"], config.min_lr_ratio * config.lr)  # each cooled fully
    assert (cooldowns["val"].list.len() == 1).all()  # scored once, at its end
    set_aside = np.concatenate([[0], np.cumsum(cooldowns["last"] - cooldowns["first"] + 1)])
    branched_at = (cooldowns["first"] - 1 - set_aside[:-1]).to_numpy()  # stable steps
    assert (branched_at[1:] >= 2 * branched_at[:-1]).all()
    val = cooldowns["val"].list.first().to_numpy()
    assert (val[-2] - val[-1]) / val[-2] == pytest.approx(result.val_improvement)
    assert ((val[1:-1] - val[:-2]) / val[:-2] <= -0.01).all()  # earlier doublings still paid
    warmup = round(config.warmup_frac * config.max_steps)
    stable = curve.filter((pl.col("cooldown") == 0) & (pl.col("step") > warmup))
    assert np.allclose(stable["lr"], config.lr)  # flat, also after a cool-down was put aside
    assert len(restores) == cooldowns.height - 1
    assert all(same and moved for same, moved in restores)


def _spy_on_restores(monkeypatch) -> list[tuple[bool, bool]]:
    """Record, for each put-aside cool-down, whether the restored weights equal those kept at
    the branch and differ from the cooled ones they replace."""
    from scalelib.train import StableRunState

    seen: list[tuple[bool, bool]] = []
    original = StableRunState.restore

    def restore(self, model, optimizer):
        cooled = {name: value.clone() for name, value in model.state_dict().items()}
        original(self, model, optimizer)
        now = model.state_dict()
        seen.append((all(torch.equal(now[k], self.model[k]) for k in now),
                     any(not torch.equal(now[k], cooled[k]) for k in now)))

    monkeypatch.setattr(StableRunState, "restore", restore)
    return seen


def _drive(convergence, stable_score, cooled_score) -> list[tuple[int, str]]:
    """Feed a :class:`Convergence` scores step by step as the training loop would: the stable
    run's score as a function of its steps, a cool-down's of the stable steps it branched at."""
    events = []
    for step in range(1, convergence.config.total_steps + 1):
        if not convergence.evaluates(step):
            continue
        if convergence.cooldown is not None:
            score = cooled_score(convergence.cooldown[0] - convergence.set_aside)
        else:
            score = stable_score(step - convergence.set_aside)
        action = convergence.record(step, score, best_mse=0.5)
        if action is not None:
            events.append((step, action))
        if convergence.is_last_step(step):
            return events + [(step, "end")]
    raise AssertionError("the run did not end at its cap")


def test_cooldowns_branch_at_doubling_stable_steps_until_one_gains_too_little():
    """Cool-downs at the scheduled 17, 34 and 68 stable steps (evaluated there, off the
    10-step grid) scoring 0.50, 0.45 (10 % better: put aside, go on) and 0.449 (0.2 %):
    converged. The flat-rate run's own scores (constant: the window rule would have held from
    the start) play no part."""
    config = TrainConfig(max_steps=200, eval_every=10, warmup_frac=0.05,
                         budget_mode="converge", converge_tol=0.01, cooldown_frac=0.2)
    convergence = Convergence(config, mean_predictor_mse=1.0)
    assert convergence.branch_points == [17, 34, 68, 136]
    cooled = iter([0.50, 0.45, 0.449])
    events = _drive(convergence, lambda stable: 0.6, lambda branched: next(cooled))
    assert events == [(17, "branch"), (21, "put_aside"), (38, "branch"), (45, "put_aside"),
                      (79, "branch"), (93, "end")]
    assert convergence.cooldowns == [(17, 0.50), (34, 0.45), (68, 0.449)]
    verdict = convergence.verdict(0.449)
    assert verdict.converged and verdict.improvement == pytest.approx(0.001 / 0.45)


def test_the_last_scheduled_cooldown_ends_a_run_still_improving_unconverged():
    config = TrainConfig(max_steps=200, eval_every=10, warmup_frac=0.05,
                         budget_mode="converge", converge_tol=0.01, cooldown_frac=0.2)
    convergence = Convergence(config, mean_predictor_mse=1.0)
    cooled = iter([0.50, 0.45, 0.40, 0.36])
    events = _drive(convergence, lambda stable: 0.6, lambda branched: next(cooled))
    assert events[-2:] == [(161, "branch"), (189, "end")]  # at 136 stable steps, within 200
    verdict = convergence.verdict(0.36)
    assert not verdict.converged and verdict.improvement == pytest.approx(0.04 / 0.40)


@pytest.mark.parametrize("total", [40, 100, 125, 200, 1_000, 2_344, 9_375, 100_000])
def test_the_doubling_schedule_fits_the_budget_and_leaves_little_of_it(total):
    warmup = round(0.05 * total)
    points = doubling_schedule(total, warmup, 0.2)
    cost = points[-1] + sum(math.ceil(0.2 * point) for point in points)
    assert points[0] > warmup and all(b == 2 * a for a, b in itertools.pairwise(points))
    assert cost <= total
    assert cost > 0.75 * total  # the last doubling tested is as large as the budget allows


def test_converge_mode_that_reaches_its_cap_is_not_converged():
    """The schedule for 40 steps branches at 3, 6, 12 and 24 stable steps; the last cool-down
    ends at step 35 (the budget leaves no room for another doubling) and the run with it."""
    config = TrainConfig(max_steps=40, batch_size=32, lr=3e-3, eval_every=5,
                         budget_mode="converge", converge_tol=1e-6, dtype="fp32")
    result = train(structured_dataset(), TINY, config, progress=False)
    assert result.steps == 35 and not result.converged
    assert result.curve["cooldown"].max() == 4
    assert result.curve["lr"][-1] == pytest.approx(config.min_lr_ratio * config.lr, rel=1e-6)


def test_a_run_that_never_leaves_the_mean_predictor_is_not_converged():
    """On noise the curve is flat from the start, which the window rule alone calls converged,
    and so do the cool-downs; the run has not beaten the per-gene mean predictor, so it trains
    through all its scheduled cool-downs (17 to 136 stable steps: 189 steps of 200)."""
    config = TrainConfig(max_steps=200, batch_size=32, lr=3e-3, eval_every=10,
                         budget_mode="converge", converge_tol=0.01, dtype="fp32")
    result = train(noise_dataset(), TINY, config, progress=False)
    scores = result.curve["val_mse"].drop_nulls().to_list()
    assert any(plateaued(scores[:n]).converged for n in range(4, len(scores)))
    assert result.steps == 189 and not result.converged
    assert result.best_val_mse > 0.99 * result.baseline_val_mse


def test_converged_flag_tells_an_early_stop_from_a_plateau(one_factor_dataset):
    short = TrainConfig(max_steps=40, batch_size=32, lr=1e-3, eval_every=5, dtype="fp32",
                        schedule="constant")
    long = short.with_(max_steps=400, eval_every=20, lr=1e-2)
    stopped = train(structured_dataset(), TINY, short, progress=False)
    plateau = train(one_factor_dataset, TINY, long, progress=False)
    assert not stopped.converged and stopped.val_improvement > 0.01
    assert plateau.converged and plateau.val_improvement < 0.01
