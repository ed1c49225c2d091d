"""The node graph of a store: which jwo nodes run, under which names, with which
parameters.

The one place that knows it. Both front ends build their processes from
``store_graph(...)``: the project's own launcher (``jwo launch``, jwo_nodes.launcher)
and ``launch/store.launch.py`` for ``ros2 launch`` on a full ROS 2 install.
Pure: no rclpy, no launch imports.
"""
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.sim import load_scenario
from jwo_nodes.paths import PACKAGE, data_path

ROOT_NAMESPACE = '/jwo'

# Seconds between `ros2 launch` and scenario time 0 when no start time is given (the
# project's own launcher starts a scenario when the graph reports ready instead):
# long enough for every node process to start and discover the others.
DEFAULT_START_DELAY_S = 5.0


@dataclass(frozen=True)
class NodeSpec:
    """One node process: what to run and the ROS arguments it gets."""

    executable: str
    name: str
    namespace: str
    # Per-instance parameter overrides (``-p name:=value``), in order.
    parameters: dict = field(default_factory=dict)
    # config/params/<executable>.yaml, or None when there is none.
    params_file: Optional[str] = None
    respawn: bool = True
    package: str = PACKAGE

    @property
    def fqn(self) -> str:
        """Fully qualified node name, e.g. ``/jwo/shelves/S1/weight_sensor_node``."""
        return f'{self.namespace.rstrip("/")}/{self.name}'

    def ros_args(self) -> list:
        """The ``--ros-args ...`` argv that gives the node its name, namespace and
        parameters (the params file first, so ``-p`` overrides win)."""
        args = ['--ros-args', '-r', f'__node:={self.name}', '-r', f'__ns:={self.namespace}']
        if self.params_file:
            args += ['--params-file', str(self.params_file)]
        for name, value in self.parameters.items():
            args += ['-p', f'{name}:={format_param_value(value)}']
        return args

    def launch_parameters(self) -> list:
        """``parameters=`` of a launch_ros Node: the params file, then the overrides."""
        parameters = [str(self.params_file)] if self.params_file else []
        if self.parameters:
            parameters.append(dict(self.parameters))
        return parameters


# The executable that holds several nodes in one process (jwo_nodes/nodes/node_container.py).
CONTAINER = 'node_container'
# Weight sensor nodes composed into one process by default: a process per shelf costs
# about 80 MB and a DDS participant each (README "Processes"); a store with more shelves
# gets more containers, so its shelves are not held to one Python thread (one core).
SHELVES_PER_CONTAINER = 25


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the graph: one node run by its own executable, or several in a
    node_container, each with its own name, namespace and parameters."""

    nodes: tuple

    @property
    def executable(self) -> str:
        return self.nodes[0].executable if len(self.nodes) == 1 else CONTAINER

    @property
    def package(self) -> str:
        return self.nodes[0].package

    @property
    def respawn(self) -> bool:
        return all(node.respawn for node in self.nodes)

    @property
    def label(self) -> str:
        """The node's name, or the container's: ``/jwo/shelves/{S1..S25}`` (the range of
        its nodes' namespaces)."""
        if len(self.nodes) == 1:
            return self.nodes[0].fqn
        parent, first = self.nodes[0].namespace.rsplit('/', 1)
        last = self.nodes[-1].namespace.rsplit('/', 1)[1]
        return f'{parent}/{{{first}..{last}}}'

    @property
    def node_fqns(self) -> tuple:
        return tuple(node.fqn for node in self.nodes)

    def ros_args(self) -> list:
        """The arguments after the executable."""
        if len(self.nodes) == 1:
            return self.nodes[0].ros_args()
        return [arg for node in self.nodes for arg in ('--node', node.executable, *node.ros_args(), '--')]


def compose(specs: list, shelves_per_container: int = SHELVES_PER_CONTAINER) -> list:
    """The processes that run ``specs``: the weight sensor nodes in containers of up to
    ``shelves_per_container`` (1: a process each), placed where the first of them was;
    every other node in a process of its own, in spec order."""
    if shelves_per_container < 1:
        raise ValueError(f'shelves_per_container must be at least 1, got {shelves_per_container}')
    shelves = [spec for spec in specs if spec.executable == 'weight_sensor_node']
    groups = [tuple(shelves[i:i + shelves_per_container])
              for i in range(0, len(shelves), shelves_per_container)]
    processes = []
    for spec in specs:
        if spec.executable != 'weight_sensor_node':
            processes.append(ProcessSpec((spec,)))
        elif spec is shelves[0]:
            processes += [ProcessSpec(group) for group in groups]
    return processes


# Words the ROS parameter parser (rcl_yaml_param_parser) reads as bool or null.
_SPECIAL_WORDS = {'y', 'n', 'yes', 'no', 'true', 'false', 'on', 'off', 'null', '~', ''}
_PLAIN = re.compile(r'[A-Za-z0-9_/.][A-Za-z0-9_/.@%+~-]*')


def format_param_value(value) -> str:
    """The text of ``-p name:=<text>`` that ROS parses back to ``value`` with its type.

    bool -> true/false, int -> digits, float -> always with a '.' or exponent (an
    integer-looking text would make a double parameter an integer one), str -> as is
    when ROS would read it back as that string, otherwise YAML single-quoted.
    Lists of one of these types are written as YAML flow sequences.
    """
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return '.nan'
        if math.isinf(value):
            return '.inf' if value > 0 else '-.inf'
        return repr(value)
    if isinstance(value, str):
        return value if _is_plain_string(value) else "'" + value.replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(format_param_value(item) for item in value) + ']'
    if isinstance(value, Path):
        return format_param_value(str(value))
    raise TypeError(f'cannot pass a {type(value).__name__} as a ROS parameter: {value!r}')


def _is_plain_string(text: str) -> bool:
    if not _PLAIN.fullmatch(text) or text.lower() in _SPECIAL_WORDS:
        return False
    for parse in (float, lambda t: int(t, 0)):
        try:
            parse(text)
            return False
        except ValueError:
            pass
    return not text.lower().lstrip('+-').startswith(('.inf', '.nan', 'inf', 'nan'))


def default_params_dir() -> Optional[Path]:
    """Where the per-executable params files are: the checkout's config/params
    (editable installs), else <prefix>/share/jwo/config/params."""
    found = data_path('config', 'params')
    return found if found is not None and found.is_dir() else None


def _params_file(params_dir, executable: str) -> Optional[str]:
    if params_dir is None:
        return None
    path = Path(params_dir) / f'{executable}.yaml'
    return str(path.resolve()) if path.is_file() else None


def store_graph(store_path, *, params_dir, scenario=None, sim_start_ns: Optional[int] = None,
                time_scale: float = 1.0, with_cameras: bool = True,
                with_uplink: bool = False, vision: bool = False, state_dir=None,
                live_cart_handoff=None, staff_pin_file=None) -> list:
    """The NodeSpecs of a store, in start order.

    fusion_node (/jwo) first so it listens before events flow, then with a scenario
    the shopper_sim_node (/jwo), then one weight_sensor_node per shelf
    (/jwo/shelves/<id>), one gate_node per gate (/jwo/gates/<id>) and, unless
    with_cameras is false, one camera_node per camera (/jwo/cameras/<id>), and, with
    with_uplink, the uplink_node (/jwo) that sends receipts and review requests to the
    cloud ingest (its keys and endpoint from config/params/uplink_node.yaml) and, when
    cameras run too, the clip_node (/jwo) that writes the review clips it sends, with
    ``clip_root`` the uplink's (from its params file; '.' where that has none, the
    uplink's default of the working directory).

    With ``live_cart_handoff`` (a folder) the live_cart_node (/jwo) serves the shoppers'
    live carts (its address from config/params/live_cart_node.yaml), and every gate
    hands each visit's token to the shopper through that folder (``access_dir``,
    absolute; the stand-in for the shopper's app).

    With ``staff_pin_file`` (a file holding the staff PIN) the staff_view_node (/jwo)
    serves the associates' page (ID checks; its address from
    config/params/staff_view_node.yaml).

    With ``vision`` the shoppers are tracked on camera frames: the vision_tracker_node
    (/jwo) runs, the cameras always run (in sim mode with a scenario), and the
    simulator's shopper_sim_node does not.

    Every node gets ``store_config`` (absolute path) and its params file
    ``<params_dir>/<executable>.yaml`` when that exists. With a scenario the sensor
    nodes also get ``source: sim``, ``scenario``, ``sim_start_ns`` (default: now +
    DEFAULT_START_DELAY_S; 0: they wait for the launcher's start signal, sent when the
    graph is ready) and ``time_scale``; the simulator gets the last three.
    With ``state_dir`` (e.g. a folder of the run's output) the nodes that keep state
    across their restarts (fusion, weight sensors, gates) get it as ``state_dir``
    (absolute). Without it fusion keeps its journal where its params file says, except
    in a simulation: that numbers its events from 1 again, so it gets a folder of its
    own (run_state_dir).

    Raises ConfigError for a bad store config or scenario, ValueError for a
    non-positive time_scale.
    """
    store = load_store_config(store_path)
    store_config = str(Path(store_path).resolve())
    sim = {}
    if scenario is not None:
        scenario = str(scenario)
        if not (isinstance(time_scale, (int, float)) and math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f'time_scale must be a positive number, got {time_scale!r}')
        load_scenario(scenario, store)
        if sim_start_ns is None:
            sim_start_ns = time.time_ns() + int(DEFAULT_START_DELAY_S * 1e9)
        sim = {'scenario': str(Path(scenario).resolve()), 'sim_start_ns': int(sim_start_ns),
               'time_scale': float(time_scale)}
    sensor_sim = {'source': 'sim', **sim} if sim else {}
    state = {'state_dir': str(Path(state_dir).resolve())} if state_dir is not None else {}

    def spec(executable: str, namespace: str, **parameters) -> NodeSpec:
        return NodeSpec(executable=executable, name=executable, namespace=namespace,
                        parameters={'store_config': store_config, **parameters},
                        params_file=_params_file(params_dir, executable))

    fusion_state = state or ({'state_dir': run_state_dir(store.store_id, sim_start_ns or time.time_ns())}
                             if sim else {})
    specs = [spec('fusion_node', ROOT_NAMESPACE, **fusion_state)]
    if vision:
        if not store.cameras:
            raise ValueError(f'{store_path}: vision needs cameras in the store config')
        with_cameras = True
        specs.append(spec('vision_tracker_node', ROOT_NAMESPACE))
    elif sim:
        specs.append(spec('shopper_sim_node', ROOT_NAMESPACE, **sim))
    # Live, each device reads the source the store config names; a scenario replaces
    # them all with the simulator.
    for shelf_id, shelf in store.shelves.items():
        specs.append(spec('weight_sensor_node', f'{ROOT_NAMESPACE}/shelves/{shelf_id}',
                          shelf_id=shelf_id, **(sensor_sim or {'source': shelf.source}), **state))
    handoff = {'access_dir': str(Path(live_cart_handoff).resolve())} if live_cart_handoff is not None else {}
    for gate_id, gate in store.gates.items():
        specs.append(spec('gate_node', f'{ROOT_NAMESPACE}/gates/{gate_id}',
                          gate_id=gate_id, **(sensor_sim or {'source': gate.source}), **state, **handoff))
    if with_cameras:
        for camera_id in store.cameras:
            specs.append(spec('camera_node', f'{ROOT_NAMESPACE}/cameras/{camera_id}',
                              camera_id=camera_id, **sensor_sim))
    if handoff:
        specs.append(spec('live_cart_node', ROOT_NAMESPACE))
    if staff_pin_file is not None:
        specs.append(spec('staff_view_node', ROOT_NAMESPACE, pin_file=str(Path(staff_pin_file).resolve())))
    if with_uplink:
        if with_cameras and store.cameras:
            specs.append(spec('clip_node', ROOT_NAMESPACE,
                              clip_root=_uplink_clip_root(params_dir)))
        specs.append(spec('uplink_node', ROOT_NAMESPACE))
    return specs


def run_state_dir(store_id: str, run_ns: int) -> str:
    """The state folder of one simulated or replayed run (in the temporary folder), so
    that it never finds another run's fusion journal, whose event ids it would reuse."""
    return str(Path(tempfile.gettempdir()) / f'jwo-state-{store_id}-{run_ns}')


def _uplink_clip_root(params_dir) -> str:
    path = _params_file(params_dir, 'uplink_node')
    if path is None:
        return '.'
    with open(path) as handle:
        document = yaml.safe_load(handle) or {}
    for section in document.values():
        clip_root = ((section or {}).get('ros__parameters') or {}).get('clip_root')
        if clip_root:
            return str(clip_root)
    return '.'


def processing_graph(store_path, *, params_dir, rate_hz: Optional[int] = None) -> list:
    """The NodeSpecs that process recorded sensor streams, e.g. a bag from `jwo simbag`
    or `jwo record` played by `jwo replay`, in start order: fusion_node (/jwo), then
    one weight_sensor_node per shelf (/jwo/shelves/<id>) with ``source: topic``, whose
    detector reads the replayed ``weight/raw``. No simulator, no gate nodes (the gate
    events are in the bag and go straight to fusion), no cameras.

    ``rate_hz``: the rate of the recorded samples (the detector's windows are counted
    in samples); default: the params file's. fusion journals its inputs in a folder of
    this run's own (run_state_dir). Raises ConfigError for a bad store config.
    """
    store = load_store_config(store_path)
    store_config = str(Path(store_path).resolve())

    def spec(executable: str, namespace: str, **parameters) -> NodeSpec:
        return NodeSpec(executable=executable, name=executable, namespace=namespace,
                        parameters={'store_config': store_config, **parameters},
                        params_file=_params_file(params_dir, executable))

    rate = {} if rate_hz is None else {'rate_hz': int(rate_hz)}
    specs = [spec('fusion_node', ROOT_NAMESPACE, state_dir=run_state_dir(store.store_id, time.time_ns()))]
    for shelf_id in store.shelves:
        specs.append(spec('weight_sensor_node', f'{ROOT_NAMESPACE}/shelves/{shelf_id}',
                          shelf_id=shelf_id, source='topic', **rate))
    return specs
