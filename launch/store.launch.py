"""ros2 launch front end of the jwo node graph (full ROS 2 installs).

    ros2 launch jwo store.launch.py store:=config/stores/demo.yaml
    ros2 launch jwo store.launch.py store:=<store.yaml> scenario:=<scenario.yaml> time_scale:=2.0

The nodes, names, namespaces and parameters come from jwo_nodes.graph.store_graph
and their grouping into processes from jwo_nodes.graph.compose, the functions `jwo
launch` (jwo_nodes.launcher) uses too; this file only turns a process of one node into
a launch_ros Node action and a node_container of several (the shelves) into an
ExecuteProcess. Without launch/launch_ros (the PyPI wheels) use `jwo launch` instead:
same arguments, same graph.
"""
import os
import time

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import ExecutableInPackage

from jwo_nodes.graph import DEFAULT_START_DELAY_S, SHELVES_PER_CONTAINER, compose, store_graph

# launch_ros restarts with a fixed delay (jwo launch backs off exponentially).
RESPAWN_DELAY_S = 2.0


def _share(*parts: str) -> str:
    return os.path.join(get_package_share_directory('jwo'), *parts)


def _nodes(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    scenario = arg('scenario') or None
    sim_start_ns = None
    if scenario:
        sim_start_ns = time.time_ns() + int(float(arg('start_delay')) * 1e9)
    specs = store_graph(
        arg('store'),
        params_dir=arg('params_dir') or None,
        scenario=scenario,
        sim_start_ns=sim_start_ns,
        time_scale=float(arg('time_scale')),
        with_cameras=arg('cameras').lower() in ('true', '1', 'yes', 'on'),
        with_uplink=arg('uplink').lower() in ('true', '1', 'yes', 'on'),
        live_cart_handoff=arg('live_cart_handoff') or None,
        staff_pin_file=arg('staff_pin_file') or None)
    return [_action(process) for process in compose(specs, int(arg('shelves_per_process')))]


def _action(process):
    if len(process.nodes) > 1:
        return ExecuteProcess(cmd=[ExecutableInPackage(process.executable, process.package),
                                   *process.ros_args()],
                              name=process.label, respawn=process.respawn,
                              respawn_delay=RESPAWN_DELAY_S, output='screen')
    [spec] = process.nodes
    return Node(package=spec.package, executable=spec.executable, name=spec.name,
                namespace=spec.namespace, parameters=spec.launch_parameters(),
                respawn=spec.respawn, respawn_delay=RESPAWN_DELAY_S, output='screen')


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument('store', default_value=_share('config', 'stores', 'demo.yaml'),
                              description='store config YAML'),
        DeclareLaunchArgument('scenario', default_value='',
                              description='scenario YAML: simulate the store (empty: live sensors)'),
        DeclareLaunchArgument('time_scale', default_value='1.0',
                              description='scenario seconds per wall second'),
        DeclareLaunchArgument('start_delay', default_value=str(DEFAULT_START_DELAY_S),
                              description='seconds from launch to scenario time 0'),
        DeclareLaunchArgument('params_dir', default_value=_share('config', 'params'),
                              description='directory of the <executable>.yaml params files'),
        DeclareLaunchArgument('cameras', default_value='true',
                              description='start the camera nodes'),
        DeclareLaunchArgument('uplink', default_value='false',
                              description='start the uplink to the cloud ingest (and, with '
                                          'cameras, the review clip writer)'),
        DeclareLaunchArgument('live_cart_handoff', default_value='',
                              description="folder through which the gates hand each visit's "
                                          'live-cart token to the shopper; with it the live cart '
                                          'web service runs (empty: none)'),
        DeclareLaunchArgument('staff_pin_file', default_value='',
                              description="file holding the staff PIN; with it the associates' "
                                          'staff view (ID checks) runs (empty: none)'),
        DeclareLaunchArgument('shelves_per_process', default_value=str(SHELVES_PER_CONTAINER),
                              description='weight sensor nodes composed into one process '
                                          '(1: a process per shelf)'),
        OpaqueFunction(function=_nodes),
    ])
