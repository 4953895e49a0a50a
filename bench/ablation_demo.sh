#!/usr/bin/env bash
# The demo-size ablation as it was first run (bench/RESULTS.md): bash bench/ablation_demo.sh "1 2"
exec bash "$(dirname "$0")/ablation.sh" demo "${1:-1}"
