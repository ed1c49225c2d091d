from glob import glob

from setuptools import find_packages, setup

# The ROS 2 package (CMakeLists.txt, package.xml), whose share/ folder this fills.
package_name = 'jwo'

setup(
    # Not `jwo`: the interfaces' Python package (jwo.msg) is installed under that name.
    name='jwo_nodes',
    version='0.1.0',
    packages=find_packages(include=['jwo_nodes', 'jwo_nodes.*', 'jwo_common']) + ['jwo_cloud'],
    # The cloud side lives in cloud/ (it runs without ROS); it ships in the same wheel.
    package_dir={'jwo_cloud': 'cloud/jwo_cloud'},
    # The web pages' templates, scripts and styles (the live cart, the review console).
    package_data={'jwo_nodes.web': ['templates/*.html', 'static/*'],
                  'jwo_cloud': ['templates/*.html', 'static/*']},
    # The ament index entry and package.xml come with the interfaces (CMakeLists.txt).
    data_files=[
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
)
