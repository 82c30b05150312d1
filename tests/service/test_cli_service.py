"""`tailorml keygen`, `tailorml users` and `tailorml serve`'s refusals, as a shell user runs
them: through `cli.main`, whose errors are one line and exit code 2 (in this process, see
`tailorml_in_process`; a subprocess per command took a minute for these two tests)."""

from __future__ import annotations

import re

import pytest

SERVICE_VARIABLES = ("TAILORML_DATA", "TAILORML_KEY_FILE", "TAILORML_SERVER_KEY")


@pytest.fixture
def tailorml(tailorml_in_process):
    """The CLI with none of the service's variables inherited, except those in `env`."""

    def run(*args, env=None):
        return tailorml_in_process(*args, env=env, unset=SERVICE_VARIABLES)

    return run


def test_accounts_from_the_shell(tmp_path, tailorml):
    data = str(tmp_path / "data")
    key = tmp_path / "server.key"
    assert tailorml("keygen", "--out", str(key)).returncode == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    again = tailorml("keygen", "--out", str(key))
    assert again.returncode == 2 and "never overwritten" in again.stderr

    added = tailorml("users", "add", "ann", "--role", "patient", "--data", data)
    assert added.returncode == 0
    token = re.search(r"tm_[A-Za-z0-9_-]{43}", added.stdout).group(0)
    assert tailorml("users", "add", "doc", "--role", "clinician", "--data", data).returncode == 0
    assert tailorml("users", "assign", "doc", "ann", "--data", data).returncode == 0
    listed = tailorml("users", "list", "--data", data)
    assert "ann" in listed.stdout and "doc" in listed.stdout and token not in listed.stdout

    for args, message in (
        (("users", "add", "ann", "--role", "patient"), "exists already"),
        (("users", "add", "eve", "--role", "admin"), "--role must be one of patient, clinician"),
        (("users", "add", "../x", "--role", "patient"), "use 1-64 letters"),
        (("users", "assign", "ann", "doc"), "is a patient, not a clinician"),
        (("users", "revoke", "nobody"), "no person named 'nobody'"),
        (("users", "erase", "ann"), "repeat with --yes"),
    ):
        result = tailorml(*args, "--data", data)
        assert result.returncode == 2, args
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    assert tailorml("users", "revoke", "ann", "--data", data).returncode == 0
    assert "revoked" in tailorml("users", "list", "--data", data).stdout


def test_serve_refuses_what_would_protect_nothing(tmp_path, tailorml):
    data = tmp_path / "data"
    data.mkdir()
    inside = data / "server.key"
    assert tailorml("keygen", "--out", str(inside)).returncode == 0
    beside = tailorml("serve", "--data", str(data), "--key-file", str(inside))
    assert beside.returncode == 2 and "inside the data directory" in beside.stderr
    outside = tmp_path / "server.key"
    tailorml("keygen", "--out", str(outside))
    empty = tailorml("serve", "--data", str(data), "--key-file", str(outside))
    assert empty.returncode == 2 and "has no predefined model" in empty.stderr
    missing = tailorml("users", "list", "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no service data at" in missing.stderr
    nokey = tailorml("serve", "--data", str(data), env={"TAILORML_SERVER_KEY": ""})
    assert nokey.returncode == 2 and "no server key" in nokey.stderr
