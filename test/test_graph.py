"""The node graph of a store (jwo_nodes.graph), shared by `jwo launch` and
launch/store.launch.py."""
import importlib.util
import py_compile
import sys
import types
from pathlib import Path

import pytest
import yaml

from jwo_nodes.core.config import ConfigError
from jwo_nodes import graph
from jwo_nodes.graph import NodeSpec, compose, format_param_value, store_graph

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / 'config' / 'stores' / 'demo.yaml'
START_NS = 1_700_000_000_123_456_789


@pytest.fixture
def params_dir(tmp_path):
    directory = tmp_path / 'params'
    directory.mkdir()
    for executable in ('weight_sensor_node', 'fusion_node'):
        (directory / f'{executable}.yaml').write_text(
            f'/**/{executable}:\n  ros__parameters:\n    answer: 42\n')
    return directory


@pytest.fixture
def scenario(tmp_path, monkeypatch):
    """The demo scenario once there is one (store_graph validates it with the
    simulator's load_scenario), else a placeholder with validation switched off."""
    demo = REPO / 'config' / 'scenarios' / 'demo.yaml'
    if demo.is_file() and importlib.util.find_spec('jwo_nodes.core.sim') is not None:
        return demo
    monkeypatch.setattr(graph, '_validate_scenario', lambda path, store: None)
    path = tmp_path / 'scenario.yaml'
    path.write_text('seed: 1\n')
    return path


def by_executable(specs, executable):
    return [spec for spec in specs if spec.executable == executable]


def test_live_graph_of_the_demo_store(params_dir):
    specs = store_graph(DEMO, params_dir=params_dir)
    assert [s.executable for s in specs].count('weight_sensor_node') == 5
    assert [s.executable for s in specs].count('gate_node') == 1
    assert [s.executable for s in specs].count('camera_node') == 2
    assert [s.executable for s in specs].count('fusion_node') == 1
    assert 'shopper_sim_node' not in [s.executable for s in specs]
    assert len(specs) == 9
    assert specs[0].executable == 'fusion_node'   # listens before events flow
    assert [s.fqn for s in specs] == [
        '/jwo/fusion_node',
        '/jwo/shelves/S1/weight_sensor_node', '/jwo/shelves/S2/weight_sensor_node',
        '/jwo/shelves/S3/weight_sensor_node', '/jwo/shelves/S4/weight_sensor_node',
        '/jwo/shelves/S5/weight_sensor_node',
        '/jwo/gates/G1/gate_node',
        '/jwo/cameras/cam_front/camera_node', '/jwo/cameras/cam_back/camera_node']
    store_config = str(DEMO.resolve())
    for spec in specs:
        assert spec.package == 'jwo'
        assert spec.name == spec.executable
        assert spec.respawn is True
        assert spec.parameters['store_config'] == store_config
        for key in ('scenario', 'sim_start_ns', 'time_scale'):
            assert key not in spec.parameters
    shelves = by_executable(specs, 'weight_sensor_node')
    assert [s.parameters['shelf_id'] for s in shelves] == ['S1', 'S2', 'S3', 'S4', 'S5']
    assert [s.namespace for s in shelves] == [f'/jwo/shelves/S{i}' for i in range(1, 6)]
    assert all(s.parameters['source'] == 'sim' for s in shelves)   # as the store config says
    assert by_executable(specs, 'gate_node')[0].parameters == {
        'store_config': store_config, 'gate_id': 'G1', 'source': 'sim'}
    cameras = by_executable(specs, 'camera_node')
    assert [(c.namespace, c.parameters['camera_id']) for c in cameras] == [
        ('/jwo/cameras/cam_front', 'cam_front'), ('/jwo/cameras/cam_back', 'cam_back')]
    assert by_executable(specs, 'fusion_node')[0].parameters == {'store_config': store_config}


def test_params_files_are_given_when_they_exist(params_dir):
    specs = store_graph(DEMO, params_dir=params_dir)
    for spec in specs:
        if spec.executable in ('weight_sensor_node', 'fusion_node'):
            assert spec.params_file == str(params_dir / f'{spec.executable}.yaml')
            assert Path(spec.params_file).is_absolute()
        else:
            assert spec.params_file is None
    assert all(s.params_file is None for s in store_graph(DEMO, params_dir=None))


def test_sim_graph(params_dir, scenario):
    specs = store_graph(DEMO, params_dir=params_dir, scenario=scenario,
                        sim_start_ns=START_NS, time_scale=2)
    assert len(specs) == 10
    sim = by_executable(specs, 'shopper_sim_node')
    assert len(sim) == 1 and sim[0].fqn == '/jwo/shopper_sim_node'
    expected = {'scenario': str(scenario.resolve()), 'sim_start_ns': START_NS, 'time_scale': 2.0}
    assert sim[0].parameters == {'store_config': str(DEMO.resolve()), **expected}
    assert isinstance(sim[0].parameters['time_scale'], float)   # a double parameter
    for spec in specs:
        if spec.executable in ('weight_sensor_node', 'gate_node', 'camera_node'):
            assert spec.parameters['source'] == 'sim'
            assert {k: spec.parameters[k] for k in expected} == expected
    fusion = by_executable(specs, 'fusion_node')[0]
    assert 'source' not in fusion.parameters and 'scenario' not in fusion.parameters


def test_sim_start_defaults_to_a_little_after_now(scenario):
    import time
    before = time.time_ns()
    specs = store_graph(DEMO, params_dir=None, scenario=scenario)
    start = by_executable(specs, 'gate_node')[0].parameters['sim_start_ns']
    assert before < start < time.time_ns() + 60 * 10**9
    assert len({s.parameters.get('sim_start_ns') for s in specs if s.executable != 'fusion_node'}) == 1


def test_state_dir_reaches_the_nodes_that_keep_state(tmp_path, scenario):
    for specs in (store_graph(DEMO, params_dir=None, state_dir=tmp_path / 'run' / 'state'),
                  store_graph(DEMO, params_dir=None, scenario=scenario, sim_start_ns=1,
                              state_dir=tmp_path / 'run' / 'state')):
        for executable in ('weight_sensor_node', 'gate_node'):
            for spec in by_executable(specs, executable):
                assert spec.parameters['state_dir'] == str(tmp_path / 'run' / 'state')
    assert not [s for s in store_graph(DEMO, params_dir=None) if 'state_dir' in s.parameters]


def test_without_cameras(scenario):
    assert not by_executable(store_graph(DEMO, params_dir=None, with_cameras=False), 'camera_node')
    specs = store_graph(DEMO, params_dir=None, scenario=scenario, sim_start_ns=1, with_cameras=False)
    assert len(specs) == 8 and not by_executable(specs, 'camera_node')


def test_uplink_brings_the_clip_writer_when_cameras_run(params_dir, tmp_path):
    (params_dir / 'uplink_node.yaml').write_text(
        '/**/uplink_node:\n  ros__parameters:\n    clip_root: somewhere/clips\n')
    specs = store_graph(DEMO, params_dir=params_dir, with_uplink=True)
    [clips] = by_executable(specs, 'clip_node')
    assert clips.fqn == '/jwo/clip_node'
    assert clips.parameters == {'store_config': str(DEMO.resolve()), 'clip_root': 'somewhere/clips'}
    assert [s.executable for s in specs][-2:] == ['clip_node', 'uplink_node']
    # The repository's params: clip_node writes where the uplink reads.
    uplink = yaml.safe_load((REPO / 'config/params/uplink_node.yaml').read_text())
    [clips] = by_executable(store_graph(DEMO, params_dir=REPO / 'config/params', with_uplink=True),
                            'clip_node')
    assert clips.parameters['clip_root'] == uplink['/**/uplink_node']['ros__parameters']['clip_root']
    assert clips.params_file == str((REPO / 'config/params/clip_node.yaml').resolve())
    # No uplink params file: the uplink's default, the working directory.
    [clips] = by_executable(store_graph(DEMO, params_dir=None, with_uplink=True), 'clip_node')
    assert clips.parameters['clip_root'] == '.'
    # No clips without the uplink or without cameras.
    assert not by_executable(store_graph(DEMO, params_dir=params_dir), 'clip_node')
    assert not by_executable(store_graph(DEMO, params_dir=params_dir, with_uplink=True,
                                         with_cameras=False), 'clip_node')
    document = yaml.safe_load(DEMO.read_text())
    del document['cameras']
    store = tmp_path / 'nocam.yaml'
    store.write_text(yaml.safe_dump(document))
    assert not by_executable(store_graph(store, params_dir=None, with_uplink=True), 'clip_node')


def test_the_staff_view_runs_with_a_pin_file(tmp_path, scenario):
    pin_file = tmp_path / 'staff-pin'
    for specs in (store_graph(DEMO, params_dir=REPO / 'config/params', staff_pin_file=pin_file),
                  store_graph(DEMO, params_dir=REPO / 'config/params', scenario=scenario, sim_start_ns=1,
                              staff_pin_file=pin_file)):
        [staff] = by_executable(specs, 'staff_view_node')
        assert staff.fqn == '/jwo/staff_view_node'
        assert staff.parameters['pin_file'] == str(pin_file.resolve())
        assert staff.params_file == str((REPO / 'config/params/staff_view_node.yaml').resolve())
    assert not by_executable(store_graph(DEMO, params_dir=REPO / 'config/params'), 'staff_view_node')


def test_live_cart_runs_with_a_handoff_folder_that_every_gate_gets(tmp_path, scenario):
    handoff = tmp_path / 'run' / 'access'
    for specs in (store_graph(DEMO, params_dir=REPO / 'config/params', live_cart_handoff=handoff),
                  store_graph(DEMO, params_dir=REPO / 'config/params', scenario=scenario, sim_start_ns=1,
                              live_cart_handoff=handoff)):
        [live] = by_executable(specs, 'live_cart_node')
        assert live.fqn == '/jwo/live_cart_node'
        assert live.parameters == {'store_config': str(DEMO.resolve())}
        assert live.params_file == str((REPO / 'config/params/live_cart_node.yaml').resolve())
        assert [g.parameters['access_dir'] for g in by_executable(specs, 'gate_node')] == [str(handoff)]
    specs = store_graph(DEMO, params_dir=None)
    assert not by_executable(specs, 'live_cart_node')
    assert not [g for g in by_executable(specs, 'gate_node') if 'access_dir' in g.parameters]


def test_store_without_cameras(tmp_path):
    document = yaml.safe_load(DEMO.read_text())
    del document['cameras']
    store = tmp_path / 'nocam.yaml'
    store.write_text(yaml.safe_dump(document))
    assert len(store_graph(store, params_dir=None)) == 7


def test_bad_store_config_raises_config_error(tmp_path):
    document = yaml.safe_load(DEMO.read_text())
    document['gates'][0]['radius_m'] = -1
    store = tmp_path / 'broken.yaml'
    store.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as error:
        store_graph(store, params_dir=None)
    assert error.value.file == str(store)
    assert error.value.key == 'gates[0].radius_m'
    with pytest.raises(ConfigError) as error:
        store_graph(tmp_path / 'missing.yaml', params_dir=None)
    assert error.value.key == '<file>'


def test_missing_scenario_raises_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        store_graph(DEMO, params_dir=None, scenario=tmp_path / 'nope.yaml')
    assert error.value.file == str(tmp_path / 'nope.yaml')


def test_bad_scenario_raises_config_error(tmp_path):
    if importlib.util.find_spec('jwo_nodes.core.sim') is None:
        pytest.skip('no simulator (jwo_nodes.core.sim) yet')
    path = tmp_path / 'bad-scenario.yaml'
    path.write_text('- not a scenario\n')
    with pytest.raises(ConfigError):
        store_graph(DEMO, params_dir=None, scenario=path)


def test_bad_time_scale(scenario):
    for bad in (0, -1.0, float('nan')):
        with pytest.raises(ValueError):
            store_graph(DEMO, params_dir=None, scenario=scenario, time_scale=bad)


def test_ros_args_formatting():
    spec = NodeSpec(executable='gate_node', name='gate_node', namespace='/jwo/gates/G1',
                    parameters={'store_config': '/s/demo.yaml', 'gate_id': 'G1', 'source': 'sim',
                                'sim_start_ns': START_NS, 'time_scale': 1.0, 'flag': False},
                    params_file='/p/gate_node.yaml')
    assert spec.ros_args() == [
        '--ros-args', '-r', '__node:=gate_node', '-r', '__ns:=/jwo/gates/G1',
        '--params-file', '/p/gate_node.yaml',
        '-p', 'store_config:=/s/demo.yaml', '-p', 'gate_id:=G1', '-p', 'source:=sim',
        '-p', f'sim_start_ns:={START_NS}', '-p', 'time_scale:=1.0', '-p', 'flag:=false']
    bare = NodeSpec(executable='fusion_node', name='fusion_node', namespace='/jwo')
    assert bare.ros_args() == ['--ros-args', '-r', '__node:=fusion_node', '-r', '__ns:=/jwo']
    assert bare.launch_parameters() == []
    assert spec.launch_parameters() == ['/p/gate_node.yaml', spec.parameters]


@pytest.mark.parametrize('value, text', [
    (True, 'true'), (False, 'false'), (0, '0'), (-7, '-7'), (START_NS, str(START_NS)),
    (1.0, '1.0'), (2.5, '2.5'), (1e20, '1e+20'), (float('inf'), '.inf'),
    ('S1', 'S1'), ('/a/b-c.yaml', '/a/b-c.yaml'), ('sim', 'sim'),
    ('true', "'true'"), ('on', "'on'"), ('1', "'1'"), ('1.5', "'1.5'"), ('inf', "'inf'"),
    ('', "''"), ('a b', "'a b'"), ("it's", "'it''s'"), ('x: y', "'x: y'"), ('#c', "'#c'"),
    ('-x', "'-x'"), ([1, 2], '[1, 2]'), (['a', 'true'], "[a, 'true']"),
])
def test_param_value_text(value, text):
    assert format_param_value(value) == text


def test_param_value_rejects_other_types():
    with pytest.raises(TypeError):
        format_param_value({'a': 1})
    with pytest.raises(TypeError):
        format_param_value(None)


def test_ros_parses_the_arguments_back(params_dir, scenario):
    """rcl itself reads ros_args(): name, namespace, params file and typed overrides."""
    rclpy = pytest.importorskip('rclpy')
    from rclpy.node import Node
    specs = store_graph(DEMO, params_dir=params_dir, scenario=scenario,
                        sim_start_ns=START_NS, time_scale=3)
    spec = by_executable(specs, 'weight_sensor_node')[1]
    spec = NodeSpec(**{**spec.__dict__, 'parameters': {**spec.parameters, 'tricky': 'true',
                                                      'quote': "it's: 1", 'on': True}})
    context = rclpy.Context()
    rclpy.init(args=['weight_sensor_node', *spec.ros_args()], context=context)
    try:
        node = Node('placeholder', context=context,
                    automatically_declare_parameters_from_overrides=True)
        assert node.get_fully_qualified_name() == '/jwo/shelves/S2/weight_sensor_node'
        values = {name: node.get_parameter(name).value for name in spec.parameters}
        assert values == spec.parameters
        assert type(values['time_scale']) is float and type(values['sim_start_ns']) is int
        assert node.get_parameter('answer').value == 42   # from the params file
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_launch_file_compiles_and_uses_the_shared_graph(monkeypatch, tmp_path, params_dir, scenario):
    """store.launch.py with stand-ins for launch/launch_ros (not installable here):
    its actions are exactly the processes of store_graph's specs: a Node per process
    of one node, an ExecuteProcess of node_container for the shelves."""
    launch_file = REPO / 'launch' / 'store.launch.py'
    py_compile.compile(str(launch_file), cfile=str(tmp_path / 'store.launch.pyc'), doraise=True)

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    fakes = {
        'launch': types.SimpleNamespace(LaunchDescription=lambda actions: list(actions)),
        'launch.actions': types.SimpleNamespace(
            DeclareLaunchArgument=type('DeclareLaunchArgument', (Action,), {}),
            ExecuteProcess=type('ExecuteProcess', (Action,), {}),
            OpaqueFunction=type('OpaqueFunction', (Action,), {})),
        'launch.substitutions': types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        'launch_ros': types.SimpleNamespace(),
        'launch_ros.actions': types.SimpleNamespace(Node=type('Node', (Action,), {})),
        'launch_ros.substitutions': types.SimpleNamespace(ExecutableInPackage=lambda e, p: f'<{p}/{e}>'),
        'ament_index_python.packages': types.SimpleNamespace(
            get_package_share_directory=lambda package: str(REPO)),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location('store_launch', launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    description = module.generate_launch_description()
    defaults = {a.args[0]: a.kwargs['default_value'] for a in description
                if type(a).__name__ == 'DeclareLaunchArgument'}
    assert defaults['store'] == str(REPO / 'config' / 'stores' / 'demo.yaml')
    opaque = [a for a in description if type(a).__name__ == 'OpaqueFunction']
    assert len(opaque) == 1

    context = {**defaults, 'store': str(DEMO), 'params_dir': str(params_dir),
               'scenario': str(scenario), 'time_scale': '2.0',
               'start_delay': '3', 'cameras': 'false'}
    actions = opaque[0].kwargs['function'](context)
    sim_start = actions[1].kwargs['parameters'][-1]['sim_start_ns']
    expected = compose(store_graph(DEMO, params_dir=params_dir, scenario=context['scenario'],
                                   sim_start_ns=sim_start, time_scale=2.0, with_cameras=False))
    assert [type(a).__name__ for a in actions] == ['Node', 'Node', 'ExecuteProcess', 'Node']
    assert [a.kwargs for a in actions] == [
        dict(cmd=['<jwo/node_container>', *p.ros_args()], name=p.label, respawn=True,
             respawn_delay=module.RESPAWN_DELAY_S, output='screen') if len(p.nodes) > 1 else
        dict(package=s.package, executable=s.executable, name=s.name, namespace=s.namespace,
             parameters=s.launch_parameters(), respawn=s.respawn,
             respawn_delay=module.RESPAWN_DELAY_S, output='screen')
        for p in expected for s in p.nodes[:1]]

    live = opaque[0].kwargs['function']({**context, 'scenario': '', 'cameras': 'true'})
    assert [type(a).__name__ for a in live] == ['Node', 'ExecuteProcess', 'Node', 'Node', 'Node']
    assert all('scenario' not in a.kwargs['parameters'][-1] for a in live if type(a).__name__ == 'Node')
    apart = opaque[0].kwargs['function']({**context, 'scenario': '', 'shelves_per_process': '1'})
    assert [type(a).__name__ for a in apart] == ['Node'] * 7



def test_shelves_are_composed_in_containers_of_the_given_size(params_dir, scenario):
    specs = store_graph(DEMO, params_dir=params_dir, scenario=scenario, sim_start_ns=1)
    shelves = [s for s in specs if s.executable == 'weight_sensor_node']
    processes = compose(specs, 3)
    # The containers take the first shelf's place; every other node runs alone, in order.
    assert [p.executable for p in processes] == [
        'fusion_node', 'shopper_sim_node', 'node_container', 'node_container', 'gate_node',
        *['camera_node'] * (len(specs) - 3 - len(shelves))]
    assert [n for p in processes for n in p.nodes] == specs
    assert processes[2].nodes == tuple(shelves[:3]) and processes[2].label == '/jwo/shelves/{S1..S3}'
    assert processes[3].nodes == tuple(shelves[3:]) and processes[3].label == '/jwo/shelves/{S4..S5}'
    assert all(len(p.nodes) == 1 for p in compose(specs, 1))
    with pytest.raises(ValueError):
        compose(specs, 0)
