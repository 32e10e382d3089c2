"""Every entry point turns invalid settings into one clear line and exit status 2, not a traceback."""

from __future__ import annotations

import pytest

from fatigue.cli import main

INVALID = {
    "notifier": ("FATIGUE_DELIVERY_TIMEOUT_S", "-1", "invalid notifier settings"),
    "scorer": ("FATIGUE_BATCH_MAX_EVENTS", "0", "invalid scorer settings"),
    "topics": ("FATIGUE_PARTITIONS", "zero", "invalid topics settings"),
}


@pytest.mark.parametrize("command", sorted(INVALID))
def test_invalid_settings_exit_2_naming_the_variable(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    variable, value, message = INVALID[command]
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        main([command])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fatigue {command}: {message}")
    assert variable.removeprefix("FATIGUE_").lower() in err
    assert "Traceback" not in err
