import os

import pytest

from zephserver.launch.apps import AppConfigError, ParamError, parse_apps

BASE = {
    "argv": ["$python", "-c", "pass", "$steps", "$mode", "$deck"],
    "params": {
        "steps": {"type": "int", "default": 2, "min": 1, "max": 10},
        "mode": {"type": "str", "inList": ["fast", "slow"], "default": "fast"},
        "tag": {"type": "str", "regexp": r"[a-z]{1,8}", "default": "x"},
        "deck": {"type": "path", "root": "/", "must_exist": False, "default": None},
        "ncpu": {"type": "int", "default": 1, "min": 1, "max": 8},
    },
    "env": {"OMP_NUM_THREADS": "$ncpu"},
    "resources": {"cores": "$ncpu", "memory": 100, "licenses": {"dyna": "$ncpu"}},
}


def app(**changes):
    return parse_apps({"a": {**BASE, **changes}})["a"]


def test_clean_params_fills_defaults_and_checks_rules(tmp_path):
    a = app(params={**BASE["params"], "deck": {"type": "path", "root": str(tmp_path),
                                               "must_exist": False, "default": None}})
    assert a.clean_params({"steps": 3}) == {"steps": 3, "mode": "fast", "tag": "x",
                                            "deck": None, "ncpu": 1}
    cases = {"steps": 0, "mode": "medium", "tag": "x1", "ncpu": True, "other": 1}
    for name, value in cases.items():
        with pytest.raises(ParamError) as err:
            a.clean_params({name: value})
        assert err.value.field == name
    with pytest.raises(ParamError, match="whole number"):
        a.clean_params({"steps": 2.5})
    assert a.clean_params({"steps": 4.0})["steps"] == 4


def test_regexp_is_anchored():
    a = app()
    with pytest.raises(ParamError):
        a.clean_params({"tag": "abc; rm -rf /"})


def test_path_param_cannot_escape_its_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "deck.k").write_text("")
    outside = tmp_path / "outside.k"
    outside.write_text("")
    os.symlink(outside, root / "link.k")
    a = app(params={"deck": {"type": "path", "root": str(root)}},
            argv=["x", "$deck"], env={}, resources={})
    assert a.clean_params({"deck": "sub/deck.k"})["deck"] == str(root / "sub" / "deck.k")
    for bad in ("../outside.k", "link.k", str(outside), "sub/../../outside.k"):
        with pytest.raises(ParamError, match="escapes its root"):
            a.clean_params({"deck": bad})
    with pytest.raises(ParamError, match="no such file"):
        a.clean_params({"deck": "sub/missing.k"})


def test_prepare_substitutes_one_argv_element_at_a_time():
    a = app()
    params = a.clean_params({"steps": 3, "ncpu": 2})
    spec = a.prepare({**params, "mode": "slow"}, {"job_id": "7", "job_dir": "/j/7",
                                                  "data_dir": "/d", "user": "u", "node": "n"})
    assert spec.argv[3:5] == ["3", "slow"]
    assert spec.cwd == "/j/7"
    assert spec.env["OMP_NUM_THREADS"] == "2"
    assert spec.resources == {"cores": 2, "memory": 100, "licenses": {"dyna": 2}}


def test_bad_definitions_are_all_reported():
    with pytest.raises(AppConfigError) as err:
        parse_apps({
            "shell": {"argv": "rm -rf $dir"},
            "bad": {"argv": ["x", "$undeclared"], "kind": "daemon",
                    "params": {"free": {"type": "str"}, "n": {"type": "int"}},
                    "resources": {"cores": "$free"}, "grace": -1, "parser": {"progress": "("},
                    "controls": {"sw1": {"file": "../d3kil"}}, "colour": "blue"},
            "bad name!": {"argv": ["x"]},
        })
    text = "\n".join(err.value.problems)
    for expected in ("argv must be a non-empty list", "$undeclared", "kind must be one of",
                     "needs an inList or regexp", "needs min and max", "must be an int or $",
                     "grace must be", "bad regexp", "plain name", "unknown key(s) colour",
                     "app name 'bad name!'"):
        assert expected in text, expected


def test_default_must_pass_its_own_rule():
    with pytest.raises(AppConfigError, match="default refused"):
        parse_apps({"a": {"argv": ["x"], "params": {
            "n": {"type": "int", "min": 1, "max": 3, "default": 9}}}})
