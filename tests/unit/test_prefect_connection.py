"""Where the Prefect modules take their connection from: the task's option, else the environment,
else the active Prefect profile, per setting, as Prefect's own client does."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.support import load_plugin

prefect_api = load_plugin("prefect_api", "plugins/module_utils/prefect_api.py")
NONE = {"api_url": None, "api_key": None, "api_auth_string": None}
PROFILES = """\
active = "home"

[profiles.home]
PREFECT_API_URL = "http://profile-home/api"
PREFECT_API_KEY = "pnu_profile_home"
PREFECT_API_AUTH_STRING = "home:from-profile"

[profiles.work]
PREFECT_API_URL = "http://profile-work/api"

[profiles.keyonly]
PREFECT_API_KEY = "pnu_keyonly"
"""


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(PROFILES)
    return path


def test_option_beats_environment_beats_profile_setting_by_setting(profiles: Path) -> None:
    env = {"PREFECT_PROFILES_PATH": str(profiles), "PREFECT_API_KEY": "pnu_env"}
    params = {**NONE, "api_url": "http://option/api"}
    assert prefect_api.connection_settings(params, env) == {
        "api_url": "http://option/api",
        "api_key": "pnu_env",
        "api_auth_string": "home:from-profile",
    }


def test_an_empty_option_counts_as_unset(profiles: Path) -> None:
    env = {"PREFECT_PROFILES_PATH": str(profiles), "PREFECT_API_URL": "http://env/api"}
    got = prefect_api.connection_settings({"api_url": "", "api_key": "", "api_auth_string": ""}, env)
    assert got == {"api_url": "http://env/api", "api_key": "pnu_profile_home", "api_auth_string": "home:from-profile"}


def test_prefect_profile_names_the_active_profile(profiles: Path) -> None:
    env = {"PREFECT_PROFILES_PATH": str(profiles), "PREFECT_PROFILE": "work"}
    assert prefect_api.connection_settings(NONE, env) == {**NONE, "api_url": "http://profile-work/api"}


def test_profiles_file_defaults_to_prefect_home(tmp_path: Path, profiles: Path) -> None:
    assert prefect_api.profiles_path({"PREFECT_HOME": str(tmp_path)}) == profiles
    assert prefect_api.profiles_path({}) == Path("~/.prefect/profiles.toml").expanduser()
    assert (
        prefect_api.connection_settings(NONE, {"PREFECT_HOME": str(tmp_path)})["api_url"] == "http://profile-home/api"
    )


def test_the_profile_is_not_read_when_nothing_is_missing(tmp_path: Path) -> None:
    broken = tmp_path / "profiles.toml"
    broken.write_text("this is = not [ toml")
    env = {"PREFECT_PROFILES_PATH": str(broken)}
    full = {"api_url": "http://a/api", "api_key": "k", "api_auth_string": "u:p"}
    assert prefect_api.connection_settings(full, env) == full
    with pytest.raises(prefect_api.PrefectAPIError, match="cannot read the Prefect profiles file"):
        prefect_api.connection_settings({**full, "api_key": None}, env)


def test_no_url_anywhere_says_what_to_set(tmp_path: Path, profiles: Path) -> None:
    with pytest.raises(prefect_api.PrefectAPIError, match=r"set api_url \(prefect_api_url\), PREFECT_API_URL"):
        prefect_api.connection_settings(NONE, {"PREFECT_HOME": str(tmp_path / "nowhere")})
    with pytest.raises(prefect_api.PrefectAPIError, match=r"profile 'keyonly' in .* sets none"):
        prefect_api.connection_settings(NONE, {"PREFECT_PROFILES_PATH": str(profiles), "PREFECT_PROFILE": "keyonly"})


def test_without_tomllib_only_a_needed_profile_is_an_error(profiles: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_api, "tomllib", None)
    env = {"PREFECT_PROFILES_PATH": str(profiles)}
    full = {"api_url": "http://a/api", "api_key": "k", "api_auth_string": "u:p"}
    assert prefect_api.connection_settings(full, env) == full
    with pytest.raises(prefect_api.PrefectAPIError, match=r"needs Python 3.11 or later \(tomllib\)"):
        prefect_api.connection_settings({**full, "api_auth_string": None}, env)


def test_the_auth_string_is_sent_as_basic_auth_in_place_of_the_key() -> None:
    both = prefect_api.PrefectClient("http://a/api", api_key="pnu_key", auth_string="user:pass")
    assert both._authorization() == "Basic " + base64.b64encode(b"user:pass").decode()
    assert prefect_api.PrefectClient("http://a/api", api_key="pnu_key")._authorization() == "Bearer pnu_key"
    assert prefect_api.PrefectClient("http://a/api")._authorization() is None


class _Module:
    def __init__(self, params: dict) -> None:
        self.params = params
        self.no_log_values: set[str] = set()

    def fail_json(self, **kwargs: object) -> None:
        raise AssertionError(kwargs)


def test_credentials_from_the_environment_or_a_profile_are_hidden_in_the_output(
    profiles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PREFECT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    module = _Module(dict(NONE))
    client = prefect_api.PrefectClient.from_module(module)
    assert (client.api_url, client.auth_string) == ("http://profile-home/api", "home:from-profile")
    assert module.no_log_values == {"pnu_profile_home", "home:from-profile"}
