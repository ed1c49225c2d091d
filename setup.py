from glob import glob

from setuptools import find_packages, setup

package_name = 'jwo_nodes'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=['jwo_nodes', 'jwo_nodes.*']) + ['jwo_cloud'],
    # The cloud side lives in cloud/ (it runs without ROS); it ships in the same wheel.
    package_dir={'jwo_cloud': 'cloud/jwo_cloud'},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config/stores', glob('config/stores/*.yaml')),
        ('share/' + package_name + '/config/params', glob('config/params/*.yaml')),
        ('share/' + package_name + '/config/scenarios', glob('config/scenarios/*.yaml')),
        ('share/' + package_name + '/models', glob('models/*.onnx')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='jwo maintainers',
    maintainer_email='maintainers@jwo-store.org',
    description='jwo checkout-free store: edge nodes, simulator and launcher.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'jwo = jwo_nodes.cli:main',
            'camera_node = jwo_nodes.nodes.camera_node:main',
            'weight_sensor_node = jwo_nodes.nodes.weight_sensor_node:main',
            'gate_node = jwo_nodes.nodes.gate_node:main',
            'fusion_node = jwo_nodes.nodes.fusion_node:main',
            'shopper_sim_node = jwo_nodes.nodes.shopper_sim_node:main',
            'vision_tracker_node = jwo_nodes.nodes.vision_tracker_node:main',
            'uplink_node = jwo_nodes.nodes.uplink_node:main',
            'clip_node = jwo_nodes.nodes.clip_node:main',
            'node_container = jwo_nodes.nodes.node_container:main',
            'jwo-cloud = jwo_cloud.cli:main',
        ],
    },
)
