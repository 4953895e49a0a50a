# Source this in the repository root on a bare GPU machine:   . dev/gpu_wheels.sh
# (or run it and eval what it prints:   eval "$(bash dev/gpu_wheels.sh)").
#
# Installs the wheels carried in .whl/ (brotli, constriction, python-minifier, and papermill/nbconvert/ipykernel with
# their dependencies, for CPython 3.12 x86-64; the machine's image has the rest: numpy, pyyaml, jinja2,
# requests, ...) into $GOLF_SITE (default /tmp/site), registers the python3 kernel there and exports
# PYTHONPATH and the Jupyter folders, so `golf run`/`golf study` execute notebooks through papermill
# and nothing is written outside /tmp. No debugpy (ipykernel runs without it, debugging off) and no
# jedi/parso (IPython imports jedi only to complete names).
_gw_site=${GOLF_SITE:-/tmp/site}
_gw_ok=1
if ! compgen -G ".whl/*.whl" >/dev/null; then
  echo "gpu_wheels.sh: no .whl/*.whl here (run it in the repository root, carry .whl)" >&2; _gw_ok=0
elif ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$_gw_site" .whl/*.whl >/tmp/gpu_wheels_pip.txt 2>&1; then
  echo "gpu_wheels.sh: pip install failed (/tmp/gpu_wheels_pip.txt)" >&2; _gw_ok=0
fi
_gw_env="export PYTHONPATH=$_gw_site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export JUPYTER_PATH=$_gw_site/share/jupyter
export JUPYTER_DATA_DIR=/tmp/jupyter/data
export JUPYTER_RUNTIME_DIR=/tmp/jupyter/runtime
export JUPYTER_CONFIG_DIR=/tmp/jupyter/config
export JUPYTER_PLATFORM_DIRS=1
export IPYTHONDIR=/tmp/jupyter/ipython"
if [ "$_gw_ok" = 1 ]; then
  eval "$_gw_env"
  mkdir -p /tmp/jupyter/ipython
  # python3 kernel: <site>/share/jupyter/kernels/python3/kernel.json, found through JUPYTER_PATH
  python3 -m ipykernel install --prefix "$_gw_site" --name python3 >>/tmp/gpu_wheels_pip.txt 2>&1 \
    || { echo "gpu_wheels.sh: kernel registration failed (/tmp/gpu_wheels_pip.txt)" >&2; _gw_ok=0; }
fi
if [ "$_gw_ok" = 1 ] && [ "${BASH_SOURCE[0]}" = "$0" ]; then echo "$_gw_env"; fi
[ "$_gw_ok" = 1 ]
