"""Account hygiene from the shell (in-process): ending a clinician's access, rotating a leaked
token, and data files readable by the server's user only."""

from __future__ import annotations

import os
import re

import pytest
from typer.testing import CliRunner

from tailorml.cli import app
from tailorml.errors import TailormlError
from tailorml.registry.models import Registry
from tailorml.registry.people import PeopleStore
from tailorml.service.auth import AuthError, may_access, resolve

TOKEN = re.compile(r"tm_[A-Za-z0-9_-]{43}")


@pytest.fixture
def shell(tmp_path):
    """`tailorml users ...` on a fresh data folder; the test process's umask is restored."""
    before = os.umask(0o022)
    os.umask(before)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, ["users", *args, "--data", str(tmp_path / "data")])

    yield run, tmp_path / "data"
    os.umask(before)


def test_unassign_ends_a_clinicians_access(shell):
    run, data = shell
    assert run("add", "ann", "--role", "patient").exit_code == 0
    assert run("add", "doc", "--role", "clinician").exit_code == 0
    assert run("assign", "doc", "ann").exit_code == 0
    store = PeopleStore(data)
    ann, doc = store.by_name("ann"), store.by_name("doc")
    assert may_access(store, doc, ann.id)
    ended = run("unassign", "doc", "ann")
    assert ended.exit_code == 0 and "no longer sees ann" in ended.stdout
    assert not may_access(store, doc, ann.id)
    again = run("unassign", "doc", "ann")  # main() prints this in one line, exit 2
    assert isinstance(again.exception, TailormlError)
    assert "doc is not assigned to ann; nothing to end" in str(again.exception)


def test_rotate_refuses_the_old_token_and_keeps_the_account(shell):
    run, data = shell
    old = TOKEN.search(run("add", "ann", "--role", "patient").stdout).group(0)
    store = PeopleStore(data)
    ann = store.by_name("ann")
    assert run("revoke", "ann").exit_code == 0
    rotated = run("rotate", "ann")
    assert rotated.exit_code == 0
    new = TOKEN.search(rotated.stdout).group(0)
    assert new != old
    with pytest.raises(AuthError):
        resolve(store, token=old)
    assert resolve(store, token=new).id == ann.id  # active again, same account
    actions = [line.action for line in Registry(data).audit(ann.id)]
    assert "rotate_token" in actions


def test_the_service_data_is_readable_by_its_user_only(shell):
    run, data = shell
    assert run("add", "ann", "--role", "patient").exit_code == 0
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "registry.sqlite").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name", ["eve\n", "eve\r\n", "e ve", "eve\t"])
def test_a_name_with_a_newline_or_space_cannot_pose_as_another(shell, name):
    run, _ = shell
    assert run("add", "eve", "--role", "patient").exit_code == 0
    refused = run("add", name, "--role", "patient")
    assert isinstance(refused.exception, TailormlError)
    assert "use 1-64 letters" in str(refused.exception)


def test_a_second_serving_process_on_the_same_data_is_refused(tmp_path):
    from tailorml.cli_service import hold_serve_lock

    first = hold_serve_lock(tmp_path)
    with pytest.raises(TailormlError, match="another `tailorml serve` is running"):
        hold_serve_lock(tmp_path)
    first.close()  # the first process ends: the lock is free again
    hold_serve_lock(tmp_path).close()


def test_an_erased_person_cannot_be_assigned(shell):
    run, data = shell
    assert run("add", "ann", "--role", "patient").exit_code == 0
    assert run("add", "doc", "--role", "clinician").exit_code == 0
    store = PeopleStore(data)
    store.erase(store.by_name("ann").id, "test", retired_models=[])
    refused = run("assign", "doc", "ann")
    assert isinstance(refused.exception, TailormlError)
    assert "'ann' was erased on" in str(refused.exception)
    assert store.patients_of(store.by_name("doc").id) == []
