"""Finding profiles by name: registered in this process, then the user's profile folder, then the package.

Built and calibrated profiles go to the user's folder (``COMPACTNAS_PROFILE_DIR``, default
``~/.compactnas/profiles``), so a profile measured once on a host is found by name afterwards.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from compactnas.core.errors import ConfigError, RegistryError
from compactnas.hw_profiles.profile import DeviceProfile
from compactnas.hw_profiles.profile_io import profile_from_json, read_profile
from compactnas.hw_profiles.runtimes import Runtime, resolve_runtime

_REGISTERED: dict[str, DeviceProfile | Path] = {}
# A board's name alone means its default runtime (microcontroller profiles are per board and runtime).
ALIASES = {"stm32f746": "stm32f746-tflm"}


def user_profile_dir() -> Path:
    return Path(
        os.environ.get("COMPACTNAS_PROFILE_DIR") or Path.home() / ".compactnas" / "profiles"
    )


def _packaged() -> dict[str, resources.abc.Traversable]:
    data = resources.files("compactnas.hw_profiles") / "data"
    if not data.is_dir():
        return {}
    return {f.name[: -len(".json")]: f for f in data.iterdir() if f.name.endswith(".json")}


def _user() -> dict[str, Path]:
    d = user_profile_dir()
    if not d.is_dir():
        return {}
    return {f.stem: f for f in d.glob("*.json")}


def list_devices() -> list[str]:
    return sorted(set(_REGISTERED) | set(_user()) | set(_packaged()) | set(ALIASES))


def register_device(name: str, path_or_profile: str | os.PathLike | DeviceProfile) -> None:
    """Make a profile loadable by ``name``; a path is read when the profile is first loaded."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("a device name must be a non-empty string")
    if isinstance(path_or_profile, DeviceProfile):
        _REGISTERED[name] = path_or_profile
    else:
        _REGISTERED[name] = Path(path_or_profile)


def unregister_device(name: str) -> None:
    _REGISTERED.pop(name, None)


def _looks_like_path(text: str) -> bool:
    return text.endswith(".json") or os.sep in text or (os.altsep is not None and os.altsep in text)


def _checked(profile: DeviceProfile, name: str, where: str) -> DeviceProfile:
    if profile.name != name:
        raise ConfigError(
            f"profile '{where}' is named '{profile.name}', not '{name}' (rename the file or the field)"
        )
    return profile


def load_profile(name_or_path: str | os.PathLike | DeviceProfile) -> DeviceProfile:
    """A profile by device name, or from a JSON file path; a DeviceProfile is returned as is."""
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    if isinstance(name_or_path, os.PathLike) or (
        isinstance(name_or_path, str) and _looks_like_path(name_or_path)
    ):
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"no profile file '{path}'")
        return read_profile(path)
    if not isinstance(name_or_path, str):
        raise ConfigError(
            f"expected a device name, a profile path or a DeviceProfile, got {type(name_or_path).__name__}"
        )
    name = name_or_path
    if name in _REGISTERED:
        entry = _REGISTERED[name]
        return entry if isinstance(entry, DeviceProfile) else read_profile(entry)
    user = _user()
    if name in user:
        return _checked(read_profile(user[name]), name, str(user[name]))
    packaged = _packaged()
    if name in ALIASES and name not in packaged:
        from dataclasses import replace

        target = load_profile(ALIASES[name])
        return replace(
            target, name=name, description=f"{target.description} (alias of {target.name})"
        )
    if name in packaged:
        label = f"{name}.json"
        return _checked(
            profile_from_json(packaged[name].read_text(encoding="utf-8"), label=label), name, label
        )
    raise RegistryError(f"unknown device '{name}' (known: {', '.join(list_devices()) or 'none'})")


def device_runtime(device: str | None) -> Runtime | None:
    """The runtime a device profile names, or None: no device, a list of devices (``a,b``: one search
    each, see search/devices.py), or a profile that names none."""
    if not device or "," in device:
        return None
    runtime = load_profile(device).runtime
    return resolve_runtime(runtime, where=f"device '{device}'") if runtime else None
