"""Config: presets, YAML round trip, dotted overrides, clear errors."""

import pytest
import yaml

from vjepa.config import (
    MOVED_KEYS,
    PRESETS,
    Config,
    ConfigError,
    apply_overrides,
    config_from_stored,
    load_yaml,
    preset,
    to_dict,
    to_yaml,
    validate,
)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate(name):
    validate(preset(name))


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(preset("demo"), ["optim.steps=7", "mask.generators=[{num_blocks: 3, spatial_scale: [0.2, 0.3]}]"])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    again = load_yaml(path)
    assert again == cfg
    assert again.mask.generators[0].spatial_scale == (0.2, 0.3)


def test_yaml_preset_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: debug\noptim:\n  steps: 3\n")
    cfg = load_yaml(path)
    assert cfg.optim.steps == 3 and cfg.model.embed_dim == preset("debug").model.embed_dim


def test_overrides_coerce_types():
    cfg = apply_overrides(Config(), ["optim.lr=1e-3", "run.tensorboard=true", "data.crop_scale=[0.5,1.0]", "optim.steps=20"])
    assert cfg.optim.lr == 1e-3 and cfg.run.tensorboard is True and cfg.data.crop_scale == (0.5, 1.0)
    assert isinstance(cfg.optim.steps, int)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.stpes=3", "unknown config key 'optim.stpes'"),
        ("optimizer.lr=3", "unknown config key 'optimizer'"),
        ("optim.steps=abc", "optim.steps: expected int"),
        ("run.tensorboard=maybe", "run.tensorboard: expected true/false"),
        ("optim.steps", "must look like section.key=value"),
    ],
)
def test_override_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(Config(), [override])


def test_unknown_yaml_key_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  embed_dimm: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*model.embed_dimm"):
        load_yaml(path)


def test_validate_errors():
    with pytest.raises(ConfigError, match="num_heads"):
        validate(apply_overrides(Config(), ["model.num_heads=5"]))
    with pytest.raises(ConfigError, match="mask.kind"):
        validate(apply_overrides(Config(), ["mask.kind=random"]))
    with pytest.raises(ConfigError, match="objective.target_norm='batch'"):
        validate(apply_overrides(Config(), ["objective.target_norm=batch"]))
    with pytest.raises(ConfigError, match="needs objective.kind=jepa"):
        validate(apply_overrides(Config(), ["objective.target_norm=layer_center", "objective.kind=pixel"]))
    validate(apply_overrides(Config(), ["objective.target_norm=layer_center"]))
    with pytest.raises(ConfigError, match=r"data.path='v.csv' is set but data.source=synthetic .* add data.source=csv"):
        validate(apply_overrides(preset("debug"), ["data.path=v.csv"]))  # would train on the built-in set
    validate(apply_overrides(preset("debug"), ["data.path=v.csv", "data.source=csv"]))
    with pytest.raises(ConfigError, match="data.num_clips=2: training takes one clip per video"):
        validate(apply_overrides(preset("debug"), ["data.num_clips=2"]))  # crashed deep in the patch embedding
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("nope")


@pytest.mark.parametrize("old,new", list(MOVED_KEYS.items()))
def test_moved_objective_keys_are_refused_naming_the_new_key(tmp_path, old, new):
    value = {"run.objective": "pixel", "optim.target_norm": "layer_center"}.get(old, "2")
    with pytest.raises(ConfigError, match=rf"^{old} is now {new} .*write {new} instead$"):
        apply_overrides(Config(), [f"{old}={value}"])
    section, key = old.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"old.yaml: {old} is now {new}"):
        load_yaml(path)
    assert apply_overrides(Config(), [f"{new}={value}"]) != Config()  # the new key takes the value


def old_layout(cfg: Config) -> dict:
    """`to_dict(cfg)` as configs were stored before the objective section existed."""
    tree = to_dict(cfg)
    objective = tree.pop("objective")
    tree["run"]["objective"] = objective["kind"]
    tree["optim"].update(loss_exp=objective["loss_exp"], target_norm=objective["target_norm"],
                         reg_coeff=objective["reg_coeff"])
    return tree


def test_stored_configs_with_moved_keys_are_migrated_with_a_warning(tmp_path):
    cfg = apply_overrides(preset("debug"), ["objective.kind=pixel", "objective.loss_exp=2", "objective.reg_coeff=0.5"])
    with pytest.warns(UserWarning, match=r"latest.pt was written before .*run.objective -> objective.kind"):
        assert config_from_stored(old_layout(cfg), "runs/x/latest.pt") == cfg
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old_layout(cfg)))
    with pytest.warns(UserWarning, match="config.yaml was written before"):
        assert load_yaml(path, stored=True) == cfg
    with pytest.raises(ConfigError, match=r"config.yaml: optim.loss_exp is now objective.loss_exp"):
        load_yaml(path)  # a YAML file the user passes is refused, not migrated
