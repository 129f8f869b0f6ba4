from pathlib import Path

import pytest
import yaml

from imgclf.config import Config, dump_yaml, load_config, parse_override, valid_keys
from imgclf.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_default_yaml_states_exactly_the_defaults():
    documented = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    assert Config.model_validate(documented) == Config()
    # and documents every key, down to the leaves
    assert dump_yaml(Config.model_validate(documented)) == dump_yaml(Config())


def test_default_yaml_comments_every_key_with_a_type():
    lines = (CONFIGS / "default.yaml").read_text().splitlines()
    keyed = [ln for ln in lines if ":" in ln and not ln.lstrip().startswith("#")]
    sections = {"data:", "model:", "train:", "optimizer:", "schedule:", "loss:", "early_stopping:", "output:"}
    for ln in keyed:
        if ln.strip() in sections:
            continue
        assert "# (" in ln, f"undocumented key in default.yaml: {ln.strip()}"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    load_config(path)


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path", sorted(set(CONFIGS.rglob("*.yaml")) - {CONFIGS / "default.yaml"}),
                         ids=lambda p: p.name)
def test_shipped_experiment_configs_hold_only_differences(path):
    defaults = dict(_leaves(Config().model_dump(mode="json")))
    for key, value in _leaves(yaml.safe_load(path.read_text())):
        repeated = key in defaults and value == defaults[key]
        assert not repeated, f"{path.name}: {key} repeats the default {value!r}"


def test_public_key_names_exist():
    keys = set(valid_keys())
    for key in ["seed", "data.source", "data.path", "data.val_split", "data.holdout_last_n",
                "data.image_size", "data.batch_size", "model.name", "model.weights",
                "train.epochs", "train.early_stopping.monitor", "train.early_stopping.patience",
                "train.early_stopping.min_delta", "train.early_stopping.mode"]:
        assert key in keys


def test_experiment_file_holds_only_differences(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  epochs: 3\n"))
    assert cfg.train.epochs == 3
    assert cfg.train.early_stopping.patience == Config().train.early_stopping.patience
    assert cfg.data == Config().data


@pytest.mark.parametrize(
    "text, expected",
    [
        ("data:\n  val_splt: 0.1\n", "unknown key data.val_splt (did you mean data.val_split?)"),
        ("train:\n  epoch: 3\n", "did you mean train.epochs?"),
        ("train:\n  early_stopping:\n    patince: 3\n", "did you mean train.early_stopping.patience?"),
        ("modle:\n  name: mlp\n", "did you mean model?"),
        ("augment:\n  - {name: rotation, fctor: 0.2}\n", "did you mean augment.0.factor?"),
        ("augment:\n  - {name: rotaton}\n", "did you mean rotation?"),
    ],
)
def test_unknown_keys_suggest_the_nearest(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochs=ten", "train.epochs"),
        ("train.epochs=0", "greater than 0"),
        ("data.batch_size=-4", "data.batch_size"),
        ("data.val_split=1.5", "data.val_split"),
        ("data.image_size=[32]", "[height, width]"),
        ("data.source=s3", "data.source"),
        ("model.activation=sigmoidal", "model.activation"),
        ("train.early_stopping.mode=up", "train.early_stopping.mode"),
        ("data=3", "data"),
    ],
)
def test_overrides_are_type_checked(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)


def test_overrides_apply_with_types():
    cfg = load_config(None, ["data.image_size=[32, 48]", "train.optimizer.lr=3e-4",
                             "model.batch_norm=false", "seed=7", "model.filters=[4,8,16]"])
    assert cfg.data.image_size == [32, 48]
    assert cfg.train.optimizer.lr == pytest.approx(3e-4)
    assert cfg.model.batch_norm is False
    assert cfg.seed == 7
    assert cfg.model.filters == [4, 8, 16]


def test_override_beats_file(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  epochs: 3\n"), ["train.epochs=4"])
    assert cfg.train.epochs == 4


def test_override_values_are_never_evaluated():
    keys, value = parse_override("output.name=__import__('os').getcwd()")
    assert value == "__import__('os').getcwd()"
    assert load_config(None, ["output.name=__import__('os')"]).output.name == "__import__('os')"


@pytest.mark.parametrize("bad", ["epochs", "=3", "train..epochs=3"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError):
        load_config(None, [bad])


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "data:\n  source: [digits\n"))
    assert "malformed YAML" in str(err.value) and "line" in str(err.value)


def test_yaml_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "output:\n  name: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["augment=[{name: flip}, {name: zoom, factor: 0.2}]", "seed=3"])
    again = load_config(write(tmp_path, dump_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize("override", ["data.batch_size=yes", "train.epochs=true",
                                      "data.image_size=[true,5]", "train.optimizer.lr=true",
                                      "seed=-1", "seed=4294967296"])
def test_booleans_are_not_numbers_and_seeds_fit_32_bits(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


@pytest.mark.parametrize("text", ["run #2", "2024-06-01", "#best", "yes", "12"])
def test_text_keys_take_the_text_as_written(text):
    cfg = load_config(None, [f"output.name={text}", f"data.path=/data/{text}"])
    assert cfg.output.name == text and cfg.data.path == f"/data/{text}"


def test_config_files_layer_in_order(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text("data:\n  batch_size: 16\ntrain:\n  epochs: 3\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  epochs: 9\n  schedule:\n    name: cosine\n")
    cfg = load_config([data, recipe], ["train.schedule.warmup_epochs=1"])
    assert cfg.data.batch_size == 16  # from the first file
    assert cfg.train.epochs == 9  # the later file wins
    assert (cfg.train.schedule.name, cfg.train.schedule.warmup_epochs) == ("cosine", 1.0)


def test_an_error_in_a_layered_file_names_that_file(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("train:\n  epochs: 3\n")
    bad.write_text("train:\n  schedul: {name: cosine}\n")
    expected = r"bad\.yaml: unknown key train\.schedul \(did you mean train\.schedule\?\)"
    with pytest.raises(ConfigError, match=expected):
        load_config([good, bad])


@pytest.mark.parametrize("overrides, message", [
    (["train.optimizer.momentum=0.9"], "momentum does not apply to optimizer adam"),
    (["train.schedule.name=cyclical"], "cyclical needs max_lr"),
    (["train.schedule.name=cosine", "train.schedule.max_lr=0.1"], "max_lr does not apply to schedule cosine"),
    (["train.schedule.name=piecewise", "train.schedule.boundaries=[2]", "train.schedule.values=[0.1]"],
     "one more values"),
    (["train.optimizer.name=sgd", "train.optimizer.clipnorm=1", "train.optimizer.clipvalue=1"],
     "set one of clipnorm"),
    (["train.loss.name=focall"], "train.loss.name"),
    (["train.class_weight=balance"], "train.class_weight"),
])
def test_recipe_keys_that_do_not_fit_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
