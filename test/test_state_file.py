"""Small state files (jwo_nodes/core/state_file.py): atomic replacement, owner-only
files, and what reading back a missing or broken file gives."""
import os

import pytest

from jwo_nodes.core import state_file
from jwo_nodes.core.state_file import StateFileError, read_state, write_state


def test_a_document_round_trips_into_an_owner_only_file(tmp_path):
    path = tmp_path / 'gate-G1.json'
    assert read_state(path) is None                 # a first start
    write_state(path, {'visits': [{'code': 'v-a'}], 'n': 1})
    write_state(path, {'visits': [], 'n': 2})
    assert read_state(path) == {'visits': [], 'n': 2}
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ['gate-G1.json']   # no temporary file left


def test_a_failed_write_leaves_the_old_document(tmp_path, monkeypatch):
    path = tmp_path / 'shelf-S1.json'
    write_state(path, {'levels': [1.0]})

    def no_rename(*args):
        raise OSError('disk gone')
    monkeypatch.setattr(state_file.os, 'replace', no_rename)
    with pytest.raises(OSError):
        write_state(path, {'levels': [2.0]})
    assert read_state(path) == {'levels': [1.0]}
    assert os.listdir(tmp_path) == ['shelf-S1.json']
    with pytest.raises(TypeError):
        write_state(path, {'levels': object()})     # not JSON: nothing written
    assert read_state(path) == {'levels': [1.0]}


@pytest.mark.parametrize('content', [b'{"levels": [1.0', b'\xff\xfe', b'[1, 2]', b''])
def test_a_broken_file_is_an_error_not_a_document(tmp_path, content):
    path = tmp_path / 'shelf-S1.json'
    path.write_bytes(content)
    with pytest.raises(StateFileError):
        read_state(path)
