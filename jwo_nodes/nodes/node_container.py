"""node_container: several jwo nodes in one process, as a ROS 2 component container
holds components.

    node_container --node weight_sensor_node --ros-args -r __node:=weight_sensor_node \\
        -r __ns:=/jwo/shelves/S1 -p shelf_id:=S1 ... -- --node weight_sensor_node ...

Each ``--node EXECUTABLE`` is followed by that node's own ``--ros-args ... --`` block
(its name, namespace, params file and parameters, exactly what the executable alone
would get), so every node keeps its name, namespace, parameters and diagnostics. The
nodes share one context (one DDS participant: far less memory and discovery traffic
than a process each) and one executor; they are built in order, and a configuration
error in any of them exits 2, as run_node does. jwo_nodes.graph decides which nodes
share a container.
"""
import importlib
import sys

from jwo_nodes.ros_common import run_nodes

# Executables a container can hold: module in jwo_nodes.nodes and Node class.
COMPOSABLE = {
    'camera_node': 'CameraNode',
    'clip_node': 'ClipNode',
    'fusion_node': 'FusionNode',
    'gate_node': 'GateNode',
    'shopper_sim_node': 'ShopperSimNode',
    'uplink_node': 'UplinkNode',
    'vision_tracker_node': 'VisionTrackerNode',
    'weight_sensor_node': 'WeightSensorNode',
}
NODE_FLAG = '--node'


class UsageError(ValueError):
    pass


def parse_nodes(argv: list) -> list:
    """[(executable, ros args)] from ``--node EXE --ros-args ... -- --node ...``; the
    closing ``--`` of the last block may be left out. Raises UsageError."""
    nodes, i = [], 0
    while i < len(argv):
        if argv[i] != NODE_FLAG or i + 1 == len(argv):
            raise UsageError(f'expected {NODE_FLAG} EXECUTABLE [--ros-args ... --], got {argv[i:i + 2]}')
        executable = argv[i + 1]
        if executable not in COMPOSABLE:
            raise UsageError(f'{executable!r} cannot be composed; known: {", ".join(sorted(COMPOSABLE))}')
        i += 2
        ros_args = []
        if i < len(argv) and argv[i] == '--ros-args':
            end = argv.index('--', i) if '--' in argv[i:] else len(argv)
            ros_args = argv[i:end]
            i = end + 1
        nodes.append((executable, ros_args))
    if not nodes:
        raise UsageError(f'no nodes: expected {NODE_FLAG} EXECUTABLE [--ros-args ... --] ...')
    return nodes


def node_factory(executable: str, ros_args: list):
    """A factory of the node with only its own arguments (none of another node's)."""
    node_class = getattr(importlib.import_module(f'jwo_nodes.nodes.{executable}'), COMPOSABLE[executable])
    return lambda: node_class(cli_args=ros_args, use_global_arguments=False)


def main(args=None):
    argv = sys.argv if args is None else args
    try:
        nodes = parse_nodes(argv[1:])
    except UsageError as error:
        print(f'error: {error}', file=sys.stderr, flush=True)
        sys.exit(2)
    run_nodes([node_factory(executable, ros_args) for executable, ros_args in nodes], args=argv[:1])


if __name__ == '__main__':
    main()
