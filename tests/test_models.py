import numpy as np
import pytest

from imgclf.config import ModelConfig
from imgclf.errors import ModelError
from imgclf.models import ModelSpec, create_model, get_entry, list_models


def spec(size=16, **model_kw):
    kw = {"filters": [8, 16], "dense_units": 8, "hidden_units": [16], **model_kw}
    return ModelSpec(input_shape=(size, size, 3), num_classes=3, cfg=ModelConfig(**kw))


# the keras.applications networks take seconds each to build, compile and save on 2 cores
BIG = {name for name in list_models() if (get_entry(name).params or 0) > 1_000_000}


def registry_params():
    return [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in list_models()]


@pytest.mark.parametrize("name", registry_params())
def test_every_model_trains_and_round_trips(name, tmp_path):
    """Built at 32 px (the keras.applications minimum), one training step changes the
    weights, and model.keras reloads to the same predictions; the listed backbone size is
    the built one."""
    import keras

    from imgclf.models.backbone import backbone_layers

    entry = get_entry(name)
    model = create_model(name, spec(32))
    if entry.params is not None:
        assert sum(int(np.prod(w.shape)) for la in backbone_layers(model) for w in la.weights) == entry.params
    # eagerly: tracing (let alone XLA-compiling) a big model's step costs far more than one step
    model.compile(optimizer="adam", loss="categorical_crossentropy", run_eagerly=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again(x, training=False), probs, rtol=1e-5, atol=1e-6)


def test_unknown_model_names_the_nearest():
    with pytest.raises(ModelError, match="did you mean simple_cnn") as err:
        get_entry("simple_cn")
    assert "Received: model.name=simple_cn" in str(err.value)


def test_list_models_wildcards():
    assert list_models("simple*") == ["simple_cnn"]
    assert set(list_models()) >= {"simple_cnn", "mlp"}
    assert list_models("nothing*") == []


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "mish"])
def test_cnn_activations(activation):
    model = create_model("simple_cnn", spec(activation=activation))
    names = [layer.get_config().get("activation") for layer in model.layers]
    assert activation in names


def test_cnn_blocks_follow_the_config():
    model = create_model("simple_cnn", spec(filters=[4, 8, 12], convs_per_block=2, pooling="avg"))
    convs = [la for la in model.layers if la.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [4, 4, 8, 8, 12, 12]
    assert sum(la.__class__.__name__ == "AveragePooling2D" for la in model.layers) == 3


def test_cnn_stops_pooling_at_one_pixel():
    small = ModelSpec(input_shape=(8, 8, 1), num_classes=10,
                      cfg=ModelConfig(filters=[8, 8, 8, 8, 8]))
    model = create_model("simple_cnn", small)  # 8 -> 4 -> 2 -> 1, then no more pooling
    assert sum(la.__class__.__name__ == "MaxPooling2D" for la in model.layers) == 3


def test_augmentation_is_inactive_at_inference():
    from imgclf.config import load_config

    cfg = load_config(None, ["augment=[{name: flip}, {name: rotation, factor: 0.2}, "
                             "{name: zoom}, {name: translation}, {name: contrast}]"])
    model = create_model("simple_cnn", ModelSpec((16, 16, 3), 3, cfg.model, tuple(cfg.augment)))
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))
    aug = model.get_layer(index=1)
    assert aug.__class__.__name__ == "RandomFlip"
    changed = [not np.allclose(aug(x, training=True), x) for _ in range(5)]
    assert any(changed)


def test_resnet9_takes_its_widths_from_filters():
    """Four widths as given; a shorter list goes on doubling its last; global max pooling."""
    import keras

    from imgclf.models.resnet import resnet9_widths

    assert resnet9_widths([16, 32, 64, 128]) == [16, 32, 64, 128]
    assert resnet9_widths([8, 16]) == [8, 16, 32, 64]
    model = create_model("resnet9", spec(28, filters=[8], dense_units=0, dropout=0.0))
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 16, 16, 16, 32, 64, 64, 64]
    assert isinstance(model.get_layer("head_pool"), keras.layers.GlobalMaxPooling2D)
    assert model.get_layer("stage3_add").output.shape[1:3] == (3, 3)  # 28 -> 14 -> 7 -> 3
    with pytest.raises(ModelError, match="at most 4 widths"):
        create_model("resnet9", spec(28, filters=[8, 8, 8, 8, 8]))


def test_the_catalog_imgclf_models_reads_matches_the_registry():
    from imgclf import catalog
    from imgclf.models.registry import catalog_rows

    assert catalog.rows() == catalog_rows(), (
        "src/imgclf/catalog.json is stale: python -c 'import imgclf.models as m; m.registry.write_catalog()'")
