#!/usr/bin/env bash
# Runs every benchmark the issues name, one after another, appending JSON lines
# to the file given (default bench-results.jsonl). Run on an otherwise idle
# machine: on 2 cores, anything else running halves the figures.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-results.jsonl}
SF="node dist/src/cli/main.js"
run() { echo "+ shardface $*" >&2; $SF "$@" | grep '^{' | tee -a "$OUT"; }

for w in 2 4; do for f in 1000000 10000000 25000000; do run bench collectives --workers $w --floats $f --reps 5; done; done
run bench kernels
run bench profile --backbone mobilefacenet --batch 32
run bench profile --backbone iresnet50 --batch 16
run bench profile --backbone vargfacenet --batch 32
run bench classifier --workers 1 --classes 100000 --dim 512 --batch 128 --sample-rate 1
run bench classifier --workers 1 --classes 100000 --dim 512 --batch 128 --sample-rate 0.1
run bench classifier --workers 1 --classes 200000 --dim 512 --batch 64
run bench classifier --workers 2 --classes 200000 --dim 512 --batch 64
run bench classifier --workers 2 --classes 1000000 --dim 512 --batch 64 --sample-rate 0.1 --steps 3
run bench classifier --workers 2 --classes 2000000 --dim 512 --batch 64 --sample-rate 0.1 --steps 3
run bench classifier --classifier dcq --workers 2 --classes 10000 --batch 128
run bench classifier --classifier dcq --workers 2 --classes 1000000 --batch 128
run bench classifier --classifier dcq --workers 2 --classes 100000 --batch 128 --queue-size 65536
run bench train --backbone mobilefacenet --workers 2 --batch 32 --image-size 112 --steps 6
run bench data --data synthetic-rec:3000 --batch 128
run bench occlusion
run bench occlusion --train-occluders 0.2
# the run's own log records (the restart's) share stdout: keep the bench line only
echo "+ shardface bench recovery" >&2; $SF bench recovery | grep '^{"bench"' | tee -a "$OUT"
