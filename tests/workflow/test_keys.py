"""Workspace keys and paths (backend/workflow/keys.py, SPEC 4.2 and 9.5)."""

from __future__ import annotations

import hashlib
import re

import pytest

from backend.workflow.keys import workspace_key, workspace_path


def test_a_clean_identifier_is_its_own_key():
    assert workspace_key("MT-1") == "MT-1"
    assert workspace_key("shop.2_x") == "shop.2_x"


def test_other_characters_become_underscores_and_a_hash_of_the_original_follows():
    digest = hashlib.sha256("MT 1/x".encode()).hexdigest()[:16]
    assert workspace_key("MT 1/x") == f"MT_1_x-{digest}"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", workspace_key("ÄBC-1 ../../etc"))


def test_identifiers_that_sanitize_alike_get_different_keys():
    assert workspace_key("A/1") != workspace_key("A:1")
    assert workspace_key("A/1") != workspace_key("A_1")  # the clean one has no suffix


def test_the_path_is_directly_inside_the_root(tmp_path):
    assert workspace_path(tmp_path, "MT-1") == tmp_path / "MT-1"
    escaped = workspace_path(tmp_path, "../../etc/passwd")
    assert escaped.parent == tmp_path and escaped.name.startswith(".._.._etc_passwd-")


@pytest.mark.parametrize("identifier", ["", ".", ".."])
def test_names_that_are_no_folder_of_their_own_are_refused(tmp_path, identifier):
    with pytest.raises(ValueError):
        workspace_path(tmp_path, identifier)
