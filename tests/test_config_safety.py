"""Config safety: configs build only registered things, never import or evaluate a string, and bad files say why.

- ``from_config`` rebuilds every registered loss from its config and rejects
  what is not registered: unknown loss names (KeyError with the closest
  names), unknown options, configs that are no dict or whose name is no
  string, and the same inside composite configs (naming the place).
- Strings that look like code or like import paths (a loss named
  ``"os.system"``, an option value ``"__import__('...')"``) are rejected or
  kept as plain data: a sentinel module they name is never imported, no
  module at all is imported, and ``eval``/``exec``/``import_module`` are
  never called while the configs are read.
- A malformed backend config file (``$MITHRIL_LOSSES_CONFIG`` or the XDG
  one) and a malformed objective file (JSON or TOML) raise a ValueError that
  names the file and says what is wrong.
"""

from __future__ import annotations

import builtins
import importlib
import json
import sys

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import registry

SENTINEL = "mlo_config_sentinel"
# strings a careless config reader would import, evaluate or resolve as an attribute path
CODE_LIKE = (
    SENTINEL, f"{SENTINEL}.loss", f"{SENTINEL}:loss", f"__import__('{SENTINEL}')", f"__import__('{SENTINEL}').loss",
    f"importlib.import_module('{SENTINEL}')", f"eval(\"__import__('{SENTINEL}')\")",
    f"lambda: __import__('{SENTINEL}')",
    f"mse; import {SENTINEL}", "os.system", "subprocess.run", "builtins.exec", "__class__", "__init__",
    "mithril_losses.losses.regression.mse_value", "mithril_losses.registry._SPECS",
)


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """A module on sys.path that leaves a mark when imported, and recorders around eval, exec and import_module.

    Yields a check: no mark, the sentinel not in sys.modules, no new module at all since the fixture started
    (the library is warmed up first), and none of the recorders called.
    """
    (tmp_path / f"{SENTINEL}.py").write_text(
        "import pathlib\n"
        "pathlib.Path(__file__).with_suffix('.imported').write_text('imported')\n"
        "def loss(*args, **kwargs):\n"
        "    return 0.0\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    _warm_up(tmp_path)
    calls = []
    for owner, name in ((builtins, "eval"), (builtins, "exec"), (importlib, "import_module")):
        original = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, _name=name, _original=original, **k: (
            calls.append((_name, a)), _original(*a, **k))[1])
    before = set(sys.modules)

    def check():
        assert not (tmp_path / f"{SENTINEL}.imported").exists(), "the sentinel module was imported"
        assert SENTINEL not in sys.modules
        assert set(sys.modules) - before == set(), "reading configs imported modules"
        assert calls == [], f"reading configs called {calls}"

    yield check
    sys.modules.pop(SENTINEL, None)  # a failure here leaves no trace in the other tests


def _warm_up(folder):
    """Import everything that reading a valid config or file imports, so that any import afterwards is the config's
    doing."""
    for cfg in (_COMPOSITE, {"name": "mse"}):
        mlo.from_config(cfg)
    for name, text in (("warm.json", '{"objective": {"name": "mse"}}'), ("warm.toml", '[objective]\nname = "mse"\n')):
        (folder / name).write_text(text, encoding="utf-8")
        mlo.load_objective(folder / name)
    for name in mlo.available():
        mlo.from_config(mlo.get(name).to_config())
    for bad in ({"name": "nope"}, {"composite": "nope"}):
        with pytest.raises(KeyError):
            mlo.from_config(bad)


_COMPOSITE = {
    "composite": "composite", "name": "objective", "parts": {
        "reconstruction": {"composite": "weighted", "loss": {"name": "mse"}, "weight": 0.5},
        "kl": {"composite": "scheduled", "loss": {"name": "gaussian_kl"},
               "schedule": {"kind": "linear_warmup", "warmup_steps": 4, "max_weight": 0.5}},
        "reg": {"composite": "regularization", "norm": "l2", "weight": 1e-4},
    }}


# ------------------------------------------------------------------------------------------------ from_config


def _option_cases():
    return [pytest.param(name, options, id=f"{name}-{i}") for name in mlo.available()
            for i, options in enumerate(registry.spec(name).option_cases)]


@pytest.mark.parametrize("name, options", _option_cases())
def test_every_registered_loss_and_option_case_round_trips_through_json(name, options):
    loss = mlo.get(name, **options)
    config = json.loads(json.dumps(loss.to_config()))
    rebuilt = mlo.from_config(config)
    assert type(rebuilt) is mlo.Loss and rebuilt.name == name
    assert rebuilt.to_config() == loss.to_config()


@pytest.mark.parametrize("name", [n for n in mlo.available() if len(n) > 2])
def test_a_misspelt_loss_name_is_a_key_error_naming_the_loss(name):
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    with pytest.raises(KeyError) as err:
        mlo.from_config({"name": typo, "reduction": "mean"})
    message = err.value.args[0]
    assert f"Unknown loss {typo!r}" in message
    closest = message.partition("Closest: ")[2].partition(".")[0].split(", ")
    assert name in closest or any(registry.spec(c).name == name for c in closest), message


def test_unknown_option_names_are_rejected_with_the_close_match():
    with pytest.raises(TypeError, match=r"'huber' got an unknown option `dleta`. Did you mean delta\?"):
        mlo.from_config({"name": "huber", "dleta": 2.0})
    with pytest.raises(TypeError, match=r"'focal' got an unknown option `gama`. Did you mean gamma\?"):
        mlo.from_config({"name": "focal", "gama": 2.0})
    with pytest.raises(TypeError, match=r"unknown option `__class__`"):
        mlo.from_config({"name": "mse", "__class__": "mlo.Loss"})


@pytest.mark.parametrize("config", [
    ["mse"], "mse", None, 3, {"reduction": "mean"}, {"name": 3}, {"name": ["mse"]}, {"name": None},
    {"name": {"name": "mse"}}, {"name": b"mse"}, {"name": mlo.get}, {"name": "mse", 3: "mean"},
], ids=repr)
def test_a_config_that_is_no_dict_or_whose_name_is_no_string_is_a_value_error_showing_it(config):
    with pytest.raises(ValueError, match=r"A loss config must be a dict with a string 'name'") as err:
        mlo.from_config(config)
    assert repr(config)[:20] in str(err.value)


@pytest.mark.parametrize("config, error, match", [
    ({"composite": ["weighted"], "loss": {"name": "mse"}}, KeyError, r"config: Unknown composite kind \['weighted'\]"),
    ({"composite": {"kind": "weighted"}}, KeyError, r"config: Unknown composite kind \{'kind': 'weighted'\}"),
    ({"composite": None}, KeyError, r"config: Unknown composite kind None"),
    ({"composite": "composite", "parts": {"a": {"name": "mse", "reduction": "avg"}}}, ValueError,
     r"config.parts\['a'\]: `reduction` of 'mse' must be one of 'none', 'mean', 'sum'; got 'avg'"),
    ({"composite": "collection", "parts": {"a": ["mse"]}}, ValueError, r"config.parts\['a'\]: expected a dict"),
    ({"composite": "multi_output", "outputs": {"logits": {"name": "cross_entropy", "label_smoothing": "0.1"}}},
     TypeError, r"config.outputs\['logits'\]: `label_smoothing` must be a real number; got '0.1'"),
    ({"composite": "weighted", "loss": {"composite": "weighted", "loss": {"name": "hubr"}}}, KeyError,
     r"config.loss.loss: Unknown loss 'hubr'. Closest: huber"),
], ids=repr)
def test_composite_configs_reject_what_is_not_registered_naming_the_place(config, error, match):
    with pytest.raises(error, match=match):
        mlo.from_config(config)


# ---------------------------------------------------------------------------------- nothing imported or evaluated


def _rejected_or_data(config, key=None):
    """Build ``config``: either it raises a config error, or (``key`` given) it keeps that string as data."""
    try:
        built = mlo.from_config(config)
    except (KeyError, TypeError, ValueError):
        return "rejected"
    assert key is not None, f"{config!r} was accepted"
    assert built.to_config()[key] == config[key]  # the very string, not what evaluating it would give
    return "data"


@pytest.mark.parametrize("code", CODE_LIKE)
def test_code_like_names_are_unknown_losses_and_nothing_is_imported(code, sentinel):
    for config in ({"name": code}, {"name": "mse", code: 1.0}, {"composite": code},
                   {"composite": "weighted", "loss": {"name": code}},
                   {"composite": "composite", "parts": {"a": {"name": code}}},
                   {"composite": "scheduled", "loss": {"name": "mse"}, "schedule": {"kind": code}},
                   {"composite": "regularization", "norm": code, "weight": 1.0}):
        assert _rejected_or_data(config) == "rejected"
    with pytest.raises(KeyError, match=r"Unknown loss"):
        mlo.get(code)
    for call in (lambda: mlo.set_backend(code), lambda: mlo.use_backend(code).__enter__(),
                 lambda: mlo.get("mse")(np.ones(2), np.zeros(2), backend=code)):
        with pytest.raises(KeyError, match=r"Unknown backend"):
            call()
    sentinel()


def test_code_like_option_values_are_rejected_or_kept_as_data_for_every_option_of_every_loss(sentinel):
    outcomes = {}
    code = f"__import__('{SENTINEL}').loss"
    for name in mlo.available():
        spec = registry.spec(name)
        for option in ("reduction", *spec.own_options):
            outcomes[name, option] = _rejected_or_data({"name": name, option: code}, key=option)
    # string data, by design: none of the built-in options takes an arbitrary string
    assert [k for k, v in outcomes.items() if v == "data"] == []
    # the names of objectives and parts are labels: kept as given
    label = f"__import__('{SENTINEL}')"
    assert _rejected_or_data({"composite": "weighted", "loss": {"name": "mse"}, "name": label}, key="name") == "data"
    built = mlo.from_config({"composite": "composite", "parts": {label: {"name": "mse"}}})
    assert list(built.to_config()["parts"]) == [label]
    sentinel()


def test_code_like_strings_in_files_are_rejected_and_nothing_is_imported(tmp_path, monkeypatch, sentinel):
    code = f"__import__('{SENTINEL}')"
    objective = tmp_path / "objective.json"
    objective.write_text(json.dumps({"backend": code, "objective": {"name": "mse"}}), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{objective}: Unknown backend"):
        mlo.load_objective(objective)
    objective.write_text(json.dumps({"objective": {"name": code}}), encoding="utf-8")
    with pytest.raises(KeyError, match=r"objective: Unknown loss"):
        mlo.load_objective(objective)
    toml = tmp_path / "objective.toml"
    toml.write_text(f'[objective]\ncomposite = "{SENTINEL}"\n', encoding="utf-8")
    with pytest.raises(KeyError, match=rf"In {toml}: objective: Unknown composite kind"):
        mlo.load_objective(toml)
    backend_file = tmp_path / "config.json"
    backend_file.write_text(json.dumps({"backend": SENTINEL}), encoding="utf-8")
    monkeypatch.setenv("MITHRIL_LOSSES_CONFIG", str(backend_file))
    with pytest.raises(ValueError, match=rf"{backend_file}: Unknown backend '{SENTINEL}'"):
        mlo.get_backend()
    monkeypatch.setenv("MITHRIL_LOSSES_BACKEND", f"{SENTINEL}.backend")
    with pytest.raises(KeyError, match=r"Unknown backend .*\$MITHRIL_LOSSES_BACKEND"):
        mlo.get_backend()
    sentinel()


# ----------------------------------------------------------------------------------------- malformed files


@pytest.mark.parametrize("content, problem", [
    (b"", "not readable as JSON"),
    (b"   \n", "not readable as JSON"),
    (b"{'backend': 'torch'}", "not readable as JSON"),
    (b'{"backend": "numpy",}', "not readable as JSON"),
    (b"\xff\xfe{}", "the file cannot be read"),
    (b"null", "expected a JSON object, got NoneType"),
    (b'"numpy"', "expected a JSON object, got str"),
    (b'{"backend": null}', "`backend` must be a string, got None (NoneType)"),
    (b'{"backend": ["numpy"]}', "`backend` must be a string, got ['numpy'] (list)"),
    (b'{"backend": {"name": "numpy"}}', "`backend` must be a string"),
    (b'{"device": 0}', "`device` must be a string, got 0 (int)"),
    (b'{"backend": ""}', "Unknown backend ''"),
    (b'{"backend": "pytroch"}', "Unknown backend 'pytroch'. Closest: torch"),
    (b'{"Backend": "numpy"}', "unknown keys ['Backend']; allowed: ['backend', 'device']"),
    (b'{"backend": "numpy", "objective": {"name": "mse"}}', "unknown keys ['objective']"),
], ids=repr)
@pytest.mark.parametrize("where", ["env", "xdg"])
def test_a_malformed_backend_config_file_names_the_file_and_the_problem(tmp_path, monkeypatch, content, problem,
                                                                       where):
    if where == "env":
        path = tmp_path / "my settings" / "backend.json"
        monkeypatch.setenv("MITHRIL_LOSSES_CONFIG", str(path))
    else:
        path = tmp_path / "xdg" / "mithril_losses" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    for call in (mlo.get_backend, lambda: mlo.get("mse")(np.ones(2), np.zeros(2))):
        with pytest.raises(ValueError) as err:
            call()
        assert f"Invalid mithril_losses configuration in {path}: " in str(err.value)
        assert problem in str(err.value)


def test_a_backend_config_file_that_is_a_directory_or_missing_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "xdg" / "mithril_losses" / "config.json"
    folder.mkdir(parents=True)
    with pytest.raises(ValueError, match=rf"in {folder}: the file cannot be read \(.*Is a directory"):
        mlo.get_backend()
    missing = tmp_path / "nowhere.json"
    monkeypatch.setenv("MITHRIL_LOSSES_CONFIG", str(missing))
    with pytest.raises(ValueError, match=rf"in {missing}: the file does not exist"):
        mlo.get_backend()


@pytest.mark.parametrize("name, content, error, problem", [
    ("o.json", b"", ValueError, "not readable as JSON"),
    ("o.json", b"\xff\xfe{}", ValueError, "the file cannot be read"),
    ("o.toml", b"\xff\xfe", ValueError, "the file cannot be read"),
    ("o.toml", b"objective = ", ValueError, "not readable as TOML"),
    ("o.toml", b'objective = "mse"', ValueError, "objective: expected a dict (a loss or composite config), got 'mse'"),
    ("o.toml", b'backend = 3\n[objective]\nname = "mse"', ValueError, "Unknown backend 3"),
    ("o.json", b'{"backend": ["numpy"], "objective": {"name": "mse"}}', ValueError, "Unknown backend ['numpy']"),
    ("o.toml", b'[objective]\nname = "huber"\ndelta = 1979-05-27', TypeError,
     "objective: `delta` must be a real number; got datetime.date(1979, 5, 27)"),
    ("o.json", b'{"objective": {"name": "mse", "reduction": "avg"}}', ValueError,
     "objective: `reduction` of 'mse' must be one of 'none', 'mean', 'sum'; got 'avg'"),
    ("o.json", b'{"objective": {"composite": ["weighted"]}}', KeyError,
     "objective: Unknown composite kind ['weighted']"),
    ("o.toml", b'[objective]\ncomposite = "scheduled"\nloss = { name = "mse" }\nschedule = { kind = 3 }', ValueError,
     "objective.schedule: A schedule config must be a dict with a string 'kind'"),
    ("o.json", b'{"objective": {"composite": "weighted", "loss": {"name": "mse"}, "weight": "heavy"}}', TypeError,
     "objective: `weight` must be a real number; got 'heavy'"),
], ids=repr)
def test_a_malformed_objective_file_names_the_file_and_the_problem(tmp_path, name, content, error, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error) as err:
        mlo.load_objective(path)
    message = err.value.args[0]
    assert str(path) in message and problem in message, message


def test_an_objective_file_that_is_a_directory_is_named(tmp_path):
    folder = tmp_path / "objective.json"
    folder.mkdir()
    with pytest.raises(ValueError, match=rf"in {folder}: the file cannot be read"):
        mlo.load_objective(folder)
