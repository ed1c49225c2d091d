"""`jwo-cloud` on one machine with its embedded defaults: init, serve (prints where
receipts, clips and the review UI are), keygen / enroll / revoke."""
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'cloud'))

from jwo_cloud import cli, keys  # noqa: E402


def jwo_cloud(*args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / 'cloud'), str(REPO)]))
    return subprocess.Popen([sys.executable, '-m', 'jwo_cloud', *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_init_then_serve_prints_where_everything_is(tmp_path):
    init = jwo_cloud('init', cwd=tmp_path)
    out, _ = init.communicate(timeout=30)
    assert init.returncode == 0, out
    assert 'reviewer:     reviewer / ' in out
    assert (tmp_path / 'runs/edge/keys/store.key_secret').exists()
    assert (tmp_path / 'runs/edge/keys/ingest.key').exists()
    assert not (tmp_path / 'runs/edge/keys/ingest.key_secret').exists()   # stays in the cloud
    assert keys.enrolled_keys(tmp_path / 'runs/cloud/enrolled').keys() == {'demo'}

    serve = jwo_cloud('serve', '--bind', 'tcp://127.0.0.1:0', '--http', '127.0.0.1:0',
                      cwd=tmp_path)
    lines = {}
    try:
        for line in serve.stdout:
            name, _, value = line.partition(':')
            lines[name.strip()] = value.strip()
            if name == 'review UI':
                break
        bucket = tmp_path / 'runs/cloud/bucket'
        assert lines['ingest'].startswith('tcp://127.0.0.1:') and 'enrolled stores: demo' in lines['ingest']
        assert lines['receipts'] == f'{bucket.resolve()}/stores/<store_id>/receipts/'
        assert lines['clips'] == f'{bucket.resolve()}/stores/<store_id>/clips/'
        assert lines['review queue'] == f'{bucket.resolve()}/review/pending/'
        url = lines['review UI']
        assert urllib.request.urlopen(url + 'healthz', timeout=10).read() == b'ok\n'
        assert urllib.request.urlopen(url, timeout=10).geturl().endswith('/login')
    finally:
        serve.send_signal(signal.SIGTERM)
        out, _ = serve.communicate(timeout=20)
    assert serve.returncode == 0, out
    assert 'stopped; ingest counters' in out


def test_keygen_enroll_revoke(tmp_path, capsys):
    assert cli.main(['keygen', '--dir', str(tmp_path / 'k'), '--name', 'store7']) == 0
    assert (tmp_path / 'k/store7.key_secret').stat().st_mode & 0o077 == 0
    assert cli.main(['keygen', '--dir', str(tmp_path / 'k'), '--name', 'store7']) == 2
    enrolled = str(tmp_path / 'enrolled')
    assert cli.main(['enroll', '--enrolled', enrolled, 'store-7',
                     str(tmp_path / 'k/store7.key_secret')]) == 2        # never a secret key
    assert cli.main(['enroll', '--enrolled', enrolled, 'store-7', str(tmp_path / 'k/store7.key')]) == 0
    assert cli.main(['enroll', '--enrolled', enrolled, 'other', str(tmp_path / 'k/store7.key')]) == 2
    assert cli.main(['enroll', '--enrolled', enrolled, '../x', str(tmp_path / 'k/store7.key')]) == 2
    assert list(keys.enrolled_keys(enrolled)) == ['store-7']
    assert cli.main(['revoke', '--enrolled', enrolled, 'store-7']) == 0
    assert keys.enrolled_keys(enrolled) == {}
    assert 'error:' in capsys.readouterr().err
