"""`jwo simbag` and `jwo eval` on bags: a scenario becomes the same bag byte for byte,
independent readers open it, and bad input (a scenario naming an unknown bin, a bag
whose stamps run backwards, a truncated bag) is one error line naming the file and the
record, a non-zero exit and no report that looks complete."""
import json
import struct
import subprocess

import pytest
from rclpy.serialization import deserialize_message

from conftest import BIN
from jwo.msg import WeightReading
from jwo_nodes.bag.format import BagReader, BagWriter
from jwo_nodes.simbag import (EPOCH_NS, GROUND_TRUTH_TOPIC, POSITIONS_TOPIC,
                              gate_topic, raw_topic)

SCENARIO = 'test/scenarios/hard-adjacent-same-moment.yaml'


def jwo(repo, *args, timeout=120):
    return subprocess.run([str(BIN / 'jwo'), *map(str, args)], cwd=repo, capture_output=True,
                          text=True, timeout=timeout)


def test_same_scenario_same_bag_and_the_streams_a_store_records(repo, tmp_path):
    for name in ('a', 'b'):
        result = jwo(repo, 'simbag', SCENARIO, '-o', tmp_path / name / 'bag', '--quiet')
        assert result.returncode == 0, result.stderr
    assert (tmp_path / 'a/bag/bag_0.mcap').read_bytes() == (tmp_path / 'b/bag/bag_0.mcap').read_bytes()
    with BagReader(tmp_path / 'a/bag') as reader:
        topics = set(reader.topics)
        assert {raw_topic('S1'), raw_topic('S4'), gate_topic('G1'), POSITIONS_TOPIC,
                GROUND_TRUTH_TOPIC} <= topics
        readings = [m for m in reader.messages([raw_topic('S2')])]
    first = deserialize_message(readings[0].data, WeightReading)
    assert first.shelf_id == 'S2' and len(first.bin_grams) == len(first.bin_ids) > 1
    stamps = [m.publish_time for m in readings]
    assert stamps == sorted(stamps) and stamps[0] >= EPOCH_NS
    assert 45 <= len(stamps) / ((stamps[-1] - stamps[0]) / 1e9) <= 55  # 50 Hz by default


def test_rosbags_reads_a_simbag(repo, tmp_path):
    from rosbags.highlevel import AnyReader
    assert jwo(repo, 'simbag', SCENARIO, '-o', tmp_path / 'bag', '--quiet').returncode == 0
    with AnyReader([tmp_path / 'bag']) as reader:
        connections = [c for c in reader.connections if c.topic == gate_topic('G1')]
        events = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections)]
    assert [e.direction for e in events].count(0) == 3  # three ENTRY events, in the bag's types


def test_unknown_bin_in_the_scenario_names_file_and_key(repo, tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text((repo / SCENARIO).read_text().replace('take: {bin: S2-B1}', 'take: {bin: NOPE-9}'))
    result = jwo(repo, 'simbag', bad, '-o', tmp_path / 'bag')
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {bad}: parties[0].script[2].take.bin: unknown bin 'NOPE-9'"
    assert not (tmp_path / 'bag').exists() or not any((tmp_path / 'bag').iterdir())


def test_eval_refuses_a_bag_whose_stamps_run_backwards(repo, tmp_path):
    good = tmp_path / 'good'
    assert jwo(repo, 'simbag', SCENARIO, '-o', good, '--quiet').returncode == 0
    bad = tmp_path / 'backwards'
    with BagReader(good) as reader, BagWriter(bad) as writer:
        for topic, info in reader.topics.items():
            writer.add_topic(topic, info.type, info.offered_qos_profiles)
        shifted = 0
        for m in reader.messages():
            data, publish = m.data, m.publish_time
            if m.topic == raw_topic('S3') and not shifted and publish > EPOCH_NS + 5 * 10**9:
                publish -= 2 * 10**9          # one sample stamped 2 s in the past
                data = bytearray(data)
                struct.pack_into('<iI', data, 4, *divmod(publish, 10**9))   # header.stamp
                shifted += 1
            writer.write(m.topic, bytes(data), m.log_time, publish_time_ns=publish)
    out = tmp_path / 'eval'
    result = jwo(repo, 'eval', bad, '--max', '--out', out)
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f'error: {bad}') and 'time runs backwards' in line
    assert raw_topic('S3') in line and 'message' in line
    assert not (out / 'report.json').exists() and not (out / 'report.html').exists()


def test_eval_refuses_a_truncated_bag(repo, tmp_path):
    bag = tmp_path / 'bag'
    assert jwo(repo, 'simbag', SCENARIO, '-o', bag, '--quiet').returncode == 0
    mcap = bag / 'bag_0.mcap'
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 2 // 3])
    out = tmp_path / 'eval'
    result = jwo(repo, 'eval', bag, '--max', '--out', out)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f'error: {mcap}'), result.stderr
    assert not (out / 'report.json').exists()


@pytest.mark.slow(45)
def test_replay_at_1x_and_at_max_gives_identical_receipts(repo, tmp_path):
    """Detection, fusion and receipts decide from stamps, not arrival times: the bag of
    two shoppers reaching into adjacent bins at the same moment replays to the same
    receipts in real time and as fast as the nodes keep up."""
    bag = tmp_path / 'bag'
    assert jwo(repo, 'simbag', SCENARIO, '-o', bag, '--quiet').returncode == 0
    receipts = {}
    for name, speed in (('1x', ['--time-scale', '1']), ('max', ['--max'])):
        out = tmp_path / name
        result = jwo(repo, 'eval', bag, *speed, '--out', out, '--grace', '15', timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        report = json.loads((out / 'report.json').read_text())
        receipts[name] = report['scenarios'][0]['receipts']
        assert report['scenarios'][0]['failure'] is None
    assert len(receipts['max']) == 3
    assert receipts['1x'] == receipts['max']


def test_a_bag_recorded_with_another_message_definition_is_refused(repo, tmp_path):
    good = tmp_path / 'good'
    assert jwo(repo, 'simbag', SCENARIO, '-o', good, '--quiet').returncode == 0
    old = tmp_path / 'old'
    with BagReader(good) as reader, BagWriter(old) as writer:
        for topic, info in reader.topics.items():
            changed = topic == POSITIONS_TOPIC     # as if written before a field was added
            writer.add_topic(topic, info.type, info.offered_qos_profiles,
                             type_hash='RIHS01_' + '0' * 64 if changed else None)
        for m in reader.messages():
            writer.write(m.topic, m.data, m.log_time, publish_time_ns=m.publish_time)
    for args in (('eval', old, '--max', '--out', tmp_path / 'eval'), ('replay', old, '--max')):
        result = jwo(repo, *args)
        assert result.returncode == 1, result.stdout + result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f'error: {old}') and 'another definition' in line
        assert POSITIONS_TOPIC in line
    assert not (tmp_path / 'eval' / 'report.json').exists()
