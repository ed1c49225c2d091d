"""Bag files (jwo_nodes.bag.format): rosbag2 MCAP layout read back by our reader, by the
mcap + mcap-ros2-support libraries and by rosbags; truncated/corrupt files and unknown
types give clear errors; an unfinished recording never looks like a bag. No ROS graph."""
import shutil
import struct
import subprocess
import sys
import warnings

import pytest
import yaml
from rclpy.serialization import serialize_message

from builtin_interfaces.msg import Time
from jwo.msg import CartLine, GateEvent, Receipt, ReviewReason, WeightReading
from std_msgs.msg import Header, String

from jwo_nodes.bag.format import (BagError, BagReader, BagWriter, CorruptBagError,
                                  DefinitionSource, TruncatedBagError, UnknownMessageTypeError,
                                  cdr_header_stamp_ns, dump_qos_profiles, normalize_qos,
                                  parse_qos_profiles, starts_with_header)

S = 1_000_000_000
T0 = 1_700_000_000 * S
EVENT = {'history': 'keep_last', 'depth': 1000, 'reliability': 'reliable',
         'durability': 'volatile'}
SENSOR = {'history': 'keep_last', 'depth': 5, 'reliability': 'best_effort',
          'durability': 'volatile'}
GATES = '/jwo/gates/g1/events'
RECEIPTS = '/jwo/receipts'
RAW = '/jwo/shelves/s1/weight/raw'
CHATTER = '/chatter'
HEADERS = '/headers'


def gate(i):
    msg = GateEvent(event_id=f'g1/{i}', gate_id='g1', direction=GateEvent.EXIT if i % 2 else 0,
                    visit_code=f'v{i:04d}', credential_kind=1, group_size=1 + i % 3)
    msg.header.stamp = Time(sec=1000 + i, nanosec=500)
    msg.header.frame_id = 'g1'
    return msg


def receipt(i):
    return Receipt(receipt_id=f'r{i}', store_id='demo', visit_code=f'v{i:04d}',
                   lines=[CartLine(sku='cola', name='Cola 0.5 l', quantity=i, unit_price_cents=199,
                                   line_total_cents=199 * i, confidence=0.5)],
                   reasons=[ReviewReason(code='ambiguous_attribution', event_id=f'e{i}')],
                   subtotal_cents=199 * i, total_cents=215 * i, status=Receipt.NEEDS_REVIEW,
                   confidence=0.25)


def reading(i):
    msg = WeightReading(shelf_id='s1', bin_ids=['a', 'b'], bin_grams=[i * 1.5, -i / 3])
    msg.header.stamp = Time(sec=2000 + i)
    return msg


MESSAGES = {  # topic -> (type, qos, factory)
    GATES: ('jwo/msg/GateEvent', [EVENT], gate),
    RECEIPTS: ('jwo/msg/Receipt', [EVENT, EVENT], receipt),
    RAW: ('jwo/msg/WeightReading', [SENSOR], reading),
    CHATTER: ('std_msgs/msg/String', [], lambda i: String(data=f'hello {i} ünïcode')),
    HEADERS: ('std_msgs/msg/Header', [EVENT],
              lambda i: Header(frame_id=f'f{i}', stamp=Time(sec=i))),
}
N = 40


def write_bag(bag_dir, compression='zstd', chunk_size=4096):
    """Writes N messages per topic, log times interleaved and deliberately out of order
    within each round; returns {topic: [(log_time, publish_time, bytes, msg)]} in log order."""
    expected = {topic: [] for topic in MESSAGES}
    with BagWriter(bag_dir, compression=compression, chunk_size=chunk_size) as writer:
        for topic, (type_name, qos, _) in MESSAGES.items():
            writer.add_topic(topic, type_name, qos)
        for i in range(N):
            for k, (topic, (_, _, factory)) in enumerate(reversed(MESSAGES.items())):
                msg = factory(i)
                data = serialize_message(msg)
                log_time = T0 + i * 10_000_000 + (len(MESSAGES) - k) * 1000
                publish = T0 - 5 * S + i if topic == GATES else None
                writer.write(topic, data, log_time, publish, sequence=i + 1)
                expected[topic].append((log_time, publish or log_time, data, msg))
        assert writer.part_path.exists() and not writer.path.exists()
    return expected


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    bag_dir = tmp_path_factory.mktemp('bags') / 'bag1'
    return bag_dir, write_bag(bag_dir)


def test_format_module_does_not_import_rclpy():
    code = 'import sys, jwo_nodes.bag.format; print("rclpy" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


def test_definition_is_rosbag2s_concatenated_msg_text():
    text = DefinitionSource().full_text('jwo/msg/Receipt')
    sections = text.split('\n' + '=' * 80 + '\n')
    assert sections[0].startswith('uint8 FINAL=0')
    assert [s.splitlines()[0] for s in sections[1:]] == [
        'MSG: builtin_interfaces/Time', 'MSG: jwo/CartLine', 'MSG: jwo/ReviewReason',
        'MSG: jwo/SavingLine', 'MSG: std_msgs/Header']  # sorted, depth first, each once (Time not repeated for Header)
    assert 'builtin_interfaces/Time stamp' in sections[-1]
    assert DefinitionSource().type_hash('jwo/msg/Receipt').startswith('RIHS01_')
    assert starts_with_header(DefinitionSource().full_text('jwo/msg/GateEvent'))
    assert not starts_with_header(DefinitionSource().full_text('jwo/msg/CartLine'))


def test_header_stamp_from_cdr():
    assert cdr_header_stamp_ns(serialize_message(gate(3))) == 1003 * S + 500
    assert cdr_header_stamp_ns(serialize_message(GateEvent())) is None  # unset stamp
    assert cdr_header_stamp_ns(b'\x00\x01') is None


def test_qos_profiles_v8_numbers_become_v9_names():
    v8 = [{'history': 1, 'depth': 10, 'reliability': 2, 'durability': 1, 'liveliness': 1,
           'deadline': {'sec': 9223372036, 'nsec': 854775807}}]
    (profile,) = parse_qos_profiles(yaml.safe_dump(v8))
    assert (profile['history'], profile['reliability'], profile['durability'],
            profile['liveliness']) == ('keep_last', 'best_effort', 'transient_local', 'automatic')
    assert parse_qos_profiles(dump_qos_profiles([EVENT])) == [normalize_qos(EVENT)]


def test_layout_and_metadata_yaml(bag):
    bag_dir, expected = bag
    assert sorted(p.name for p in bag_dir.iterdir()) == ['bag1_0.mcap', 'metadata.yaml']
    info = yaml.safe_load((bag_dir / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 9 and info['storage_identifier'] == 'mcap'
    assert info['relative_file_paths'] == ['bag1_0.mcap']
    assert info['message_count'] == N * len(MESSAGES)
    first = min(e[0][0] for e in expected.values())
    last = max(e[-1][0] for e in expected.values())
    assert info['starting_time'] == {'nanoseconds_since_epoch': first}
    assert info['duration'] == {'nanoseconds': last - first}
    topics = {t['topic_metadata']['name']: t for t in info['topics_with_message_count']}
    assert set(topics) == set(MESSAGES)
    gates = topics[GATES]
    assert gates['message_count'] == N
    assert gates['topic_metadata']['type'] == 'jwo/msg/GateEvent'
    assert gates['topic_metadata']['serialization_format'] == 'cdr'
    assert gates['topic_metadata']['offered_qos_profiles'][0]['reliability'] == 'reliable'
    assert gates['topic_metadata']['type_description_hash'].startswith('RIHS01_')
    assert info['files'][0]['path'] == 'bag1_0.mcap' and info['files'][0]['message_count'] == N * 5
    # The same document sits in the file's 'rosbag2' metadata record (ros2 bag reads
    # its version from there to decode the QoS profiles of the channels).
    with BagReader(bag_dir) as reader:
        assert reader.serialized_metadata() == info


def test_own_reader_log_time_order_and_topic_filter(bag):
    bag_dir, expected = bag
    with BagReader(bag_dir / 'bag1_0.mcap') as reader:  # the file alone opens too
        assert reader.validate() == N * len(MESSAGES)
        assert {t: i.type for t, i in reader.topics.items()} == {
            t: v[0] for t, v in MESSAGES.items()}
        assert reader.topics[RECEIPTS].offered_qos_profiles == (normalize_qos(EVENT),) * 2
        assert reader.topics[CHATTER].message_count == N
        everything = list(reader.messages())
        assert [m.log_time for m in everything] == sorted(m.log_time for m in everything)
        assert len(everything) == N * len(MESSAGES)
        for topic, rows in expected.items():
            got = [m for m in everything if m.topic == topic]
            assert [(m.log_time, m.publish_time, m.data) for m in got] == [r[:3] for r in rows]
            assert [m.sequence for m in got] == list(range(1, N + 1))
        only = list(reader.messages([GATES, CHATTER]))
        assert {m.topic for m in only} == {GATES, CHATTER} and len(only) == 2 * N


@pytest.mark.parametrize('compression', ['none', 'lz4', 'zstd'])
def test_mcap_ros2_library_decodes_every_message(tmp_path, compression):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    expected = write_bag(tmp_path / 'b', compression=compression)
    with open(tmp_path / 'b' / 'b_0.mcap', 'rb') as stream:
        reader = make_reader(stream, validate_crcs=True, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == 'ros2'
        summary = reader.get_summary()
        assert {s.encoding for s in summary.schemas.values()} == {'ros2msg'}
        assert {c.message_encoding for c in summary.channels.values()} == {'cdr'}
        for channel in summary.channels.values():
            assert 'offered_qos_profiles' in channel.metadata
        assert [m.name for m in reader.iter_metadata()] == ['rosbag2']
        got = {topic: [] for topic in MESSAGES}
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            for schema, channel, message, decoded in reader.iter_decoded_messages(
                    log_time_order=True):
                got[channel.topic].append((message.log_time, decoded))
    for topic, rows in expected.items():
        assert [t for t, _ in got[topic]] == [r[0] for r in rows]
    for (_, g), (*_, msg) in zip(got[GATES], expected[GATES]):
        assert (g.event_id, g.visit_code, g.group_size, g.header.stamp.sec, g.header.frame_id) == (
            msg.event_id, msg.visit_code, msg.group_size, msg.header.stamp.sec, 'g1')
    for (_, r), (*_, msg) in zip(got[RECEIPTS], expected[RECEIPTS]):
        assert r.lines[0].quantity == msg.lines[0].quantity and r.status == Receipt.NEEDS_REVIEW
        assert r.reasons[0].code == 'ambiguous_attribution' and r.total_cents == msg.total_cents
    assert [list(w.bin_grams) for _, w in got[RAW]] == [list(r[3].bin_grams) for r in expected[RAW]]
    assert [s.data for _, s in got[CHATTER]] == [r[3].data for r in expected[CHATTER]]


def test_rosbags_reads_the_bag_directory_with_types_from_the_bag(bag):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    bag_dir, expected = bag
    typestore = get_typestore(Stores.EMPTY)  # nothing known: every type comes from the bag
    with Reader(bag_dir) as reader:
        assert reader.message_count == N * len(MESSAGES)
        types = {}
        for connection in reader.connections:
            types.update(get_types_from_msg(connection.msgdef.data, connection.msgtype))
        typestore.register(types)
        by_topic = {c.topic: c for c in reader.connections}
        qos = by_topic[RAW].ext.offered_qos_profiles
        assert len(qos) == 1 and qos[0].reliability.name == 'BEST_EFFORT' and qos[0].depth == 5
        got = {topic: [] for topic in MESSAGES}
        for connection, timestamp, raw in reader.messages():
            got[connection.topic].append(
                (timestamp, bytes(raw), typestore.deserialize_cdr(raw, connection.msgtype)))
    for topic, rows in expected.items():
        assert [(t, raw) for t, raw, _ in got[topic]] == [(r[0], r[2]) for r in rows]
    receipts = [m for _, _, m in got[RECEIPTS]]
    assert receipts[7].lines[0].sku == 'cola' and receipts[7].lines[0].quantity == 7
    assert receipts[7].reasons[0].event_id == 'e7' and receipts[7].confidence == 0.25
    gates = [m for _, _, m in got[GATES]]
    assert [g.header.stamp.sec for g in gates] == [1000 + i for i in range(N)]
    assert [h.frame_id for _, _, h in got[HEADERS]] == [f'f{i}' for i in range(N)]


def test_unfinished_recording_never_looks_like_a_bag(tmp_path):
    bag_dir = tmp_path / 'crash'
    writer = BagWriter(bag_dir)
    writer.add_topic(CHATTER, 'std_msgs/msg/String')
    for i in range(500):
        writer.write(CHATTER, serialize_message(String(data='x' * 100)), T0 + i)
    writer._writer.flush()  # chunks on disk, as after a long recording
    assert [p.name for p in bag_dir.iterdir()] == ['crash_0.mcap.part']
    with pytest.raises(TruncatedBagError, match=r'crash_0\.mcap\.part.*unfinished'):
        BagReader(bag_dir)
    writer.abort()  # the process dies: no footer, no rename, no metadata.yaml
    assert [p.name for p in bag_dir.iterdir()] == ['crash_0.mcap.part']
    with pytest.raises(TruncatedBagError, match='unfinished'):
        BagReader(bag_dir / 'crash_0.mcap.part')
    # Even renamed by hand, the half file is recognised as cut short.
    shutil.copy(bag_dir / 'crash_0.mcap.part', tmp_path / 'renamed.mcap')
    with pytest.raises(TruncatedBagError, match=r'renamed\.mcap.*no MCAP footer'):
        BagReader(tmp_path / 'renamed.mcap')


def test_output_must_be_new(tmp_path):
    (tmp_path / 'used').mkdir()
    (tmp_path / 'used' / 'x').write_text('')
    with pytest.raises(BagError, match='not an empty directory'):
        BagWriter(tmp_path / 'used')


def test_truncated_files_name_the_file(bag, tmp_path):
    data = (bag[0] / 'bag1_0.mcap').read_bytes()
    for cut in (0, 5, 30, len(data) // 2, len(data) - 1):
        path = tmp_path / f'cut{cut}.mcap'
        path.write_bytes(data[:cut])
        with pytest.raises(TruncatedBagError) as error:
            BagReader(path)
        assert str(path) in str(error.value)


def _chunk_offsets(path):
    with BagReader(path) as reader:
        return sorted(i.chunk_start_offset for i in reader._files[0].chunk_indexes)


def test_damaged_chunk_is_reported_with_its_offset(tmp_path):
    write_bag(tmp_path / 'b', compression='none')
    path = tmp_path / 'b' / 'b_0.mcap'
    offset = _chunk_offsets(path)[1]
    data = bytearray(path.read_bytes())
    data[offset + 200] ^= 0xFF  # inside the uncompressed chunk data
    path.write_bytes(bytes(data))
    with BagReader(tmp_path / 'b') as reader:  # the index is intact: opening works
        with pytest.raises(CorruptBagError, match=rf'b_0\.mcap: chunk record at offset {offset}: '
                                                  'chunk CRC mismatch'):
            reader.validate()
        with pytest.raises(CorruptBagError, match=f'offset {offset}'):
            list(reader.messages())


def test_damaged_zstd_chunk_and_bad_record_length(tmp_path):
    write_bag(tmp_path / 'z')
    path = tmp_path / 'z' / 'z_0.mcap'
    offset = _chunk_offsets(path)[0]
    data = bytearray(path.read_bytes())
    data[offset + 1:offset + 9] = struct.pack('<Q', 10 ** 12)  # chunk record length
    path.write_bytes(bytes(data))
    with BagReader(path) as reader, pytest.raises(CorruptBagError, match=f'offset {offset}'):
        reader.validate()


def test_damaged_summary_and_not_an_mcap_file(bag, tmp_path):
    data = bytearray((bag[0] / 'bag1_0.mcap').read_bytes())
    data[-40] ^= 0x55  # inside the summary section
    (tmp_path / 's.mcap').write_bytes(bytes(data))
    with pytest.raises(CorruptBagError, match='summary'):
        BagReader(tmp_path / 's.mcap')
    (tmp_path / 'text.mcap').write_text('hello, this is not a bag at all' * 3)
    with pytest.raises(BagError, match=r'text\.mcap.*not an MCAP file'):
        BagReader(tmp_path / 'text.mcap')
    (tmp_path / 'metadata-only').mkdir()
    (tmp_path / 'metadata-only' / 'metadata.yaml').write_text('rosbag2_bagfile_information: 3\n')
    with pytest.raises(CorruptBagError, match='metadata.yaml'):
        BagReader(tmp_path / 'metadata-only')


def test_unknown_message_types(tmp_path):
    with BagWriter(tmp_path / 'u') as writer:
        with pytest.raises(UnknownMessageTypeError, match=r'topic /x.*no_such_msgs/msg/Thing'):
            writer.add_topic('/x', 'no_such_msgs/msg/Thing')
        with pytest.raises(UnknownMessageTypeError, match='not a ROS 2 message type'):
            writer.add_topic('/y', 'Thing')
        # With the definition given, any type can be written (e.g. copying another bag).
        writer.add_topic('/z', 'other_msgs/msg/Thing', definition='int32 x\n')
        writer.write('/z', b'\x00\x01\x00\x00\x07\x00\x00\x00', T0)
    with BagReader(tmp_path / 'u') as reader:
        assert reader.topics['/z'].type == 'other_msgs/msg/Thing'
        assert reader.topics['/z'].where.startswith('channel record at offset')

    # A channel without a schema (another writer's file) cannot be typed.
    from mcap.writer import Writer
    path = tmp_path / 'schemaless.mcap'
    with open(path, 'wb') as stream:
        mcap = Writer(stream)
        mcap.start(profile='ros2', library='test')
        channel = mcap.register_channel('/raw', 'cdr', schema_id=0)
        mcap.add_message(channel, log_time=T0, data=b'\x00\x01\x00\x00', publish_time=T0)
        mcap.finish()
    with pytest.raises(UnknownMessageTypeError,
                       match=r'schemaless\.mcap: channel record at offset \d+ \(topic /raw\)'):
        BagReader(path)


def test_files_without_chunks_or_summary_from_other_writers(tmp_path):
    from mcap.writer import IndexType, Writer
    definition = DefinitionSource().full_text('std_msgs/msg/String')
    for name, options in (('unchunked', {'use_chunking': False}),
                          ('nosummary', {'repeat_channels': False, 'repeat_schemas': False,
                                         'use_statistics': False, 'index_types': IndexType.NONE,
                                         'use_summary_offsets': False})):
        path = tmp_path / f'{name}.mcap'
        with open(path, 'wb') as stream:
            mcap = Writer(stream, **options)
            mcap.start(profile='ros2', library='test')
            schema = mcap.register_schema('std_msgs/msg/String', 'ros2msg', definition.encode())
            channel = mcap.register_channel('/s', 'cdr', schema, {'offered_qos_profiles': ''})
            for i in (3, 1, 2):
                mcap.add_message(channel, log_time=T0 + i, publish_time=T0 + i,
                                 data=serialize_message(String(data=f's{i}')))
            mcap.finish()
        with BagReader(path) as reader:
            assert reader.validate() == 3
            assert [m.log_time - T0 for m in reader.messages()] == [1, 2, 3], name
            assert reader.topics['/s'].type == 'std_msgs/msg/String'


def test_weight_readings_read_from_their_bytes_as_rclpy_reads_them():
    """cdr.read_weight_reading (the shelves' replay input) against rclpy's own
    deserialization, for readings of every length of names and bin count, in both
    serializers' bytes; truncated bytes are a ValueError, never a wrong reading."""
    import random
    from rclpy.serialization import deserialize_message, serialize_message
    from jwo.msg import WeightReading
    from jwo_nodes.bag.cdr import read_weight_reading, serialize
    rng = random.Random(3)
    for _ in range(300):
        count = rng.randint(0, 6)
        msg = WeightReading(shelf_id='S' * rng.randint(0, 9),
                            bin_ids=['b' * rng.randint(0, 7) for _ in range(count)],
                            bin_grams=[rng.uniform(-50, 5000) for _ in range(count)])
        msg.header.stamp.sec, msg.header.stamp.nanosec = rng.randint(0, 2**31 - 1), rng.randint(0, 999_999_999)
        msg.header.frame_id = 'f' * rng.randint(0, 9)
        for data in (serialize_message(msg), serialize(msg)):
            reading = read_weight_reading(data)
            expected = deserialize_message(data, WeightReading)
            assert reading.stamp_ns == expected.header.stamp.sec * 10**9 + expected.header.stamp.nanosec
            assert (reading.shelf_id, reading.bin_ids) == (expected.shelf_id, tuple(expected.bin_ids))
            assert reading.grams == tuple(expected.bin_grams)
            if count:
                with pytest.raises(ValueError):
                    read_weight_reading(data[:-rng.randint(1, 8)])
