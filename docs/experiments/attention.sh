#!/bin/sh
# The experiment of docs/experiments/attention.md, end to end (30-60 minutes on a 2-core CPU;
# one thread per run, as docs/training.md advises on a shared machine).
#   sh docs/experiments/attention.sh [RUNS]        (default RUNS=runs/attn)
set -e
runs=${1:-runs/attn}
export OMP_NUM_THREADS=1
for seed in 0 1 2; do
    skdsl train specs/sknet_tiny.sk --data synthetic:scale=0.2-0.95 --epochs 8 \
        --schedule cosine --seed $seed --out $runs/tiny32-seed$seed
    skdsl train docs/experiments/sknet_scale64.sk --data synthetic:train=6000,val=1000,scale=0.2-0.95 \
        --epochs 6 --schedule cosine --seed $seed --out $runs/scale64-seed$seed
done
for net in tiny32:specs/sknet_tiny.sk scale64:docs/experiments/sknet_scale64.sk; do
    name=${net%%:*} spec=${net#*:}
    for seed in 0 1 2; do
        for protocol in render zoom; do
            skdsl inspect attention $spec --checkpoint $runs/$name-seed$seed/best.pt \
                --protocol $protocol --out $runs/$name-seed$seed-$protocol
        done
    done
    for protocol in render zoom; do
        python docs/experiments/attention_seeds.py $runs/$name-seed*-$protocol/attention.json
    done
done
