"""cluster.kmeans on tiny models, with a real fine-tuning loop that checks the centroids train."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from modelshrink.data.synthetic import tiny_batches
from modelshrink.errors import ConfigError, IncompatibleModelError
from modelshrink.models import LSTMClassifier, TinyCNN
from modelshrink.techniques import get_technique
from modelshrink.techniques._targets import prunable_weights
from modelshrink.techniques.base import OnStep, RunContext
from modelshrink.techniques.cluster_kmeans import KMeansClusterConfig, cluster_kmeans
from modelshrink.techniques.properties import DistinctValues
from modelshrink.techniques.prune_magnitude import MagnitudePruneConfig, prune_magnitude

STEPS_PER_EPOCH = 4
# (model, step, optimizer params) after each on_step; step 0 = right after the first backward,
# before the first optimizer step (centroid gradients are then in place).
Recorder = Callable[[nn.Module, int, Sequence[nn.Parameter]], None]


def _batches(kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return tiny_batches(kind, STEPS_PER_EPOCH)


def make_ctx(kind: str, record: Recorder | None = None) -> RunContext:
    """A RunContext whose fine_tune is a real loop: Adam, cross-entropy, on_step after every step."""
    batches = _batches(kind)

    def fine_tune(model: nn.Module, epochs: int, on_step: OnStep | None, params: Sequence[nn.Parameter] | None) -> None:
        trained = list(params) if params is not None else list(model.parameters())
        opt = torch.optim.Adam(trained, lr=1e-3)
        model.train()
        step = 0
        for _ in range(epochs):
            for x, y in batches:
                opt.zero_grad()
                torch.manual_seed(step)  # the same dropout mask if a test replays this batch
                F.cross_entropy(model(x), y).backward()
                if record is not None and step == 0:
                    record(model, 0, trained)
                opt.step()
                step += 1
                if on_step is not None:
                    on_step(step)
                if record is not None:
                    record(model, step, trained)
        model.eval()

    return RunContext(example_input=batches[0][0], seed=0, steps_per_epoch=STEPS_PER_EPOCH, fine_tune=fine_tune)


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "lstm":
        return LSTMClassifier(vocab_size=50, num_labels=3, embed_dim=8, hidden=8)
    return TinyCNN(num_labels=3, channels=4)


def target_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    targets, _ = prunable_weights(model)
    return {t.qualified_name: t.weight for t in targets}


def centroid_params(model: nn.Module, params: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    """The optimizer's params that are not the model's: the centroids, in target order."""
    own = {id(p) for p in model.parameters()}
    return [p for p in params if id(p) not in own]


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"clusters": 1}, "input_value=1"),
        ({"clusters": 0}, "input_value=0"),
        ({"init": "kmeans"}, "input_value='kmeans'"),
        ({"epochs": -1}, "input_value=-1"),
        ({"k": 8}, "extra"),  # misspelt key
    ],
)
def test_bad_config_names_the_value(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        KMeansClusterConfig(**kwargs)  # type: ignore[arg-type]


def test_config_defaults_and_json_round_trip() -> None:
    cfg = KMeansClusterConfig()
    assert KMeansClusterConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert get_technique("cluster.kmeans").config_cls is KMeansClusterConfig


def test_more_clusters_than_a_tensor_has_elements_is_a_config_error() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))  # "1.weight" has 16 elements
    before = model[0].weight.detach().clone()
    with pytest.raises(ConfigError, match=r"'1\.weight' has 16 elements.*clusters=17"):
        cluster_kmeans(model, KMeansClusterConfig(clusters=17, epochs=0), make_ctx("cnn"))
    assert torch.equal(model[0].weight, before)  # checked before anything changed


def test_model_without_supported_layer_is_incompatible() -> None:
    with pytest.raises(IncompatibleModelError, match="LayerNorm"):
        cluster_kmeans(nn.Sequential(nn.LayerNorm(4)), KMeansClusterConfig(epochs=0), make_ctx("cnn"))


def test_fine_tuning_without_data_is_a_config_error() -> None:
    ctx = RunContext(example_input=torch.zeros(1, 1, 8, 8))  # fine_tune=None
    with pytest.raises(ConfigError, match="epochs=0"):
        cluster_kmeans(make_model("cnn"), KMeansClusterConfig(epochs=1), ctx)


# --- clustering --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
@pytest.mark.parametrize("init", ["kmeans++", "linear", "random", "density"])
def test_each_tensor_has_at_most_k_values(kind: str, init: str) -> None:
    model = make_model(kind)
    x = make_ctx(kind).example_input
    shape = model(x).shape
    before = {n: w.detach().clone() for n, w in target_weights(model).items()}
    result = cluster_kmeans(model, KMeansClusterConfig(clusters=8, init=init, epochs=0), make_ctx(kind))
    counts = result.details["clusters"]  # checked against the weights below
    assert result.properties == [DistinctValues(tuple(sorted(counts)), max(counts.values()))]
    for name, w in target_weights(result.model).items():
        distinct = torch.unique(w).numel()
        assert distinct <= 8 and result.details["clusters"][name] == distinct, name
        # A real clustering: 8 levels leave far less than 10% of the variance (optimal for a
        # Gaussian: about 3.5%).
        residual = (w - before[name]).pow(2).sum() / (before[name] - before[name].mean()).pow(2).sum()
        assert residual < 0.1, name
    assert result.model(x).shape == shape


def test_kmeans_beats_evenly_spaced_values() -> None:
    # Lloyd's k-means minimizes squared error; evenly spaced levels (uniform quantization) do not.
    model = make_model("cnn")
    w0 = model.conv2.weight.detach().clone()
    cluster_kmeans(model, KMeansClusterConfig(clusters=8, epochs=0), make_ctx("cnn"))
    levels = torch.linspace(float(w0.min()), float(w0.max()), 8)
    uniform = levels[(w0.reshape(-1, 1) - levels).abs().argmin(dim=1)].view_as(w0)
    assert (model.conv2.weight - w0).pow(2).sum() < (uniform - w0).pow(2).sum()


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_centroids_train_and_weights_follow_them(kind: str) -> None:
    snapshots: dict[int, list[torch.Tensor]] = {}
    grad_checked: list[str] = []

    def record(model: nn.Module, step: int, params: Sequence[nn.Parameter]) -> None:
        centroids = centroid_params(model, params)
        weights = target_weights(model)
        assert len(centroids) == len(weights)
        if step == 0:
            check_centroid_grads(model, weights, centroids, kind)
            grad_checked.append(kind)
        snapshots[step] = [c.detach().clone() for c in centroids]
        for (name, w), c in zip(weights.items(), centroids, strict=True):
            assert w.grad is None  # the weight's gradient went to its centroids
            if name == "embedding.weight":  # its padding row (0) stays zero, outside the clusters
                assert (w[0] == 0).all()
                w = w[1:]
            assert torch.isin(w, c).all(), f"{name} is not centroids[idx] at step {step}"

    model = make_model(kind)
    ctx = make_ctx(kind, record)
    result = cluster_kmeans(model, KMeansClusterConfig(clusters=6, epochs=2), ctx)
    assert grad_checked and result.details["steps"] == 2 * STEPS_PER_EPOCH
    first, last = snapshots[0], snapshots[2 * STEPS_PER_EPOCH]
    for before, after in zip(first, last, strict=True):
        assert (after - before).abs().max() > 1e-4  # Adam at lr 1e-3 for 8 steps moves them
    for name, w in target_weights(result.model).items():
        assert torch.unique(w).numel() <= 6, name
        values = last[list(target_weights(result.model)).index(name)]
        assert torch.isin(w[1:] if name == "embedding.weight" else w, values).all()  # row 0: padding
    # plain model: no hooks left on the weights, nothing extra in the state dict
    assert set(result.model.state_dict()) == set(make_model(kind).state_dict())
    assert all(not p._post_accumulate_grad_hooks for p in result.model.parameters())


def check_centroid_grads(
    model: nn.Module, weights: dict[str, torch.Tensor], centroids: list[nn.Parameter], kind: str
) -> None:
    """Each centroid's gradient == the sum of the gradients of the weights that share it."""
    replay = make_model(kind)
    replay.load_state_dict(model.state_dict())
    replay.train()
    x, y = _batches(kind)[0]
    torch.manual_seed(0)  # the dropout mask of the first batch
    F.cross_entropy(replay(x), y).backward()
    replay_weights = target_weights(replay)
    for (name, w), c in zip(weights.items(), centroids, strict=True):
        assert c.grad is not None, name
        g = replay_weights[name].grad
        expected = torch.stack([g[w == value].sum() for value in c.detach()])  # (m,)
        torch.testing.assert_close(c.grad, expected, rtol=1e-4, atol=1e-6)


def test_biases_keep_training() -> None:
    model = make_model("cnn")
    bias = model.conv1.bias.detach().clone()
    cluster_kmeans(model, KMeansClusterConfig(clusters=4, epochs=1), make_ctx("cnn"))
    assert not torch.equal(model.conv1.bias, bias)


def test_preserve_sparsity_keeps_zeros_after_pruning() -> None:
    model = make_model("lstm")
    prune_magnitude(model, MagnitudePruneConfig(final_sparsity=0.5, epochs=0), make_ctx("lstm"))
    zeros = {n: (w == 0).clone() for n, w in target_weights(model).items()}
    result = cluster_kmeans(model, KMeansClusterConfig(clusters=4, preserve_sparsity=True, epochs=2), make_ctx("lstm"))
    for name, w in target_weights(result.model).items():
        assert torch.equal(w == 0, zeros[name]), name  # same zeros, no new ones
        assert torch.unique(w[w != 0]).numel() <= 4, name
        assert result.details["clusters"][name] <= 5  # 4 centroids + the zero


def test_without_preserve_sparsity_zeros_join_a_cluster() -> None:
    model = make_model("cnn")
    prune_magnitude(model, MagnitudePruneConfig(final_sparsity=0.5, epochs=0), make_ctx("cnn"))
    cluster_kmeans(model, KMeansClusterConfig(clusters=4, epochs=1), make_ctx("cnn"))
    assert torch.unique(model.conv2.weight).numel() <= 4
    assert (model.conv2.weight == 0).float().mean() < 0.5  # the zero cluster's centroid trained away


def test_clustering_twice_changes_nothing() -> None:
    model = make_model("cnn")
    cluster_kmeans(model, KMeansClusterConfig(clusters=8, epochs=0), make_ctx("cnn"))
    once = {n: w.detach().clone() for n, w in target_weights(model).items()}
    cluster_kmeans(model, KMeansClusterConfig(clusters=8, epochs=0), make_ctx("cnn"))
    for name, w in target_weights(model).items():
        assert torch.equal(w, once[name]), name


def test_unsupported_layer_with_params_is_reported_as_skipped() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3))
    result = cluster_kmeans(model, KMeansClusterConfig(clusters=4, epochs=0), make_ctx("cnn"))
    assert [(s.name, s.type, s.reason) for s in result.skipped] == [("1", "BatchNorm2d", "unsupported layer type")]
    assert result.details["clusters"].keys() == {"0.weight", "3.weight"}


def test_large_tensor_is_fitted_on_a_sample_and_fully_assigned() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 120))  # 24,000 weights > the 20,000-point fitting sample
    w0 = model[0].weight.detach().clone()
    cluster_kmeans(model, KMeansClusterConfig(clusters=16, epochs=0), make_ctx("cnn"))
    w = model[0].weight
    assert torch.unique(w).numel() == 16
    assert (w - w0).pow(2).sum() / (w0 - w0.mean()).pow(2).sum() < 0.02  # 16 levels: ~1% for uniform weights


def test_embedding_padding_row_stays_zero() -> None:
    from modelshrink.models import LSTMClassifier
    from modelshrink.techniques import RunContext, get_technique

    model = LSTMClassifier(vocab_size=40, num_labels=3, embed_dim=8, hidden=8)
    tech = get_technique("cluster.kmeans")
    out = tech.apply(model, tech.config_cls(clusters=4, epochs=0), RunContext(example_input=torch.ones(2, 3).long()))
    emb = out.model.embedding.weight.detach()
    assert (emb[0] == 0).all()
    assert torch.unique(emb[1:]).numel() <= 4
