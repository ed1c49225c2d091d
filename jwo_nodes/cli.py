"""The `jwo` command: one entry point, a subcommand per tool.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so
`jwo --help` stays fast and a broken tool cannot break the others.
"""
import argparse
import importlib
import sys

SUBCOMMANDS = {
    'launch': ('jwo_nodes.launcher', 'start the node set of a store (the ros2 launch stand-in)'),
    'demo': ('jwo_nodes.demo', 'run a simulated store end to end and print receipts against the ground truth'),
    'record': ('jwo_nodes.bag.recorder', 'record topics into a rosbag2 (MCAP) bag that ros2 bag can open'),
    'replay': ('jwo_nodes.bag.replayer', 'replay a rosbag2 (MCAP) bag with its timing and /clock'),
    'eval': ('jwo_nodes.eval', 'run scenarios through the real nodes and score them against the ground truth'),
    'scenario': ('jwo_nodes.scenario_cli', 'generate random scenarios from a seed (presets easy, medium, hard)'),
    'simbag': ('jwo_nodes.simbag', 'write a scenario to a bag: raw sensor streams, gate events, tracker frames and the ground truth'),
    'bench': ('jwo_nodes.bench', 'replay throughput and sensor-to-cart latency on a large generated store, '
              'against the bare rclpy hop'),
    'bench-live-cart': ('jwo_nodes.bench_live_cart', 'cart update -> drawn on the live cart page in '
                        'headless Chromium: median and p99 over N updates'),
    'bench-vision': ('jwo_nodes.bench_vision', 'detector frames/s (batched, single, OpenCV DNN) and '
                     'how many cameras the vision tracker keeps up with'),
    'vision-check': ('jwo_nodes.vision_check', 'render, detect and track scenarios without ROS: does each '
                     "take and put-back find its visit's code on the shopper"),
    'fusion-check': ('jwo_nodes.fusion_check', 'scenarios through the change detector, tracker and fusion '
                     'without ROS: receipts scored per scenario and group'),
    'fusion-fit': ('jwo_nodes.fusion_fit', 'fit a setting fusion weighs who made a change by to scenarios: '
                   "the log loss of each change's true maker per value"),
    'product-colours': ('jwo_nodes.product_colours', "each product's packaging colour from a photo of it, for "
                        "the store config's catalogue"),
    'soak': ('jwo_nodes.soak', 'the store under steady traffic (LOAD x the medium preset) for a long '
             'wall time: per node RSS, CPU, restarts and drop counters; does memory level off'),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='jwo', description='jwo checkout-free store tools')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(module_name=module_name)
        # Arguments are added lazily below, once we know which subcommand runs.
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith('-')), None)
    if chosen in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[chosen][0])
        module.add_arguments(commands.choices[chosen])
    args = parser.parse_args(argv)
    return importlib.import_module(args.module_name).run(args)


if __name__ == '__main__':
    sys.exit(main())
