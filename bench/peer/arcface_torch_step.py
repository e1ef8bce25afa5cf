#!/usr/bin/env python3
"""Peer figure for `shardface bench train --peer-arcface-torch DIR`.

Times one backbone training step of insightface's arcface_torch, the PyTorch
reference shardface is compared against: forward, backward from a fixed
gradient of the embeddings, and an SGD step (momentum 0.9, weight decay 5e-4,
arcface_torch's defaults) of the backbone. The classifier is left out on both
sides of the comparison: this measures the backbone, which dominates the step.

DIR is the user's own checkout of recognition/arcface_torch (the folder that
holds `backbones/`); nothing of it is shipped with shardface. Prints one JSON
line: the median seconds of the timed steps (after the warm-up steps) and the
images/s that follow from it.
"""
import argparse
import json
import os
import statistics
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arcface-torch', required=True, help='arcface_torch folder (holds backbones/)')
    p.add_argument('--network', required=True, help='arcface_torch backbone name: mbf, r50, ...')
    p.add_argument('--batch', type=int, required=True)
    p.add_argument('--image-size', type=int, default=112)
    p.add_argument('--embedding-size', type=int, default=512)
    p.add_argument('--threads', type=int, required=True, help='torch.set_num_threads')
    p.add_argument('--steps', type=int, default=4, help='timed steps (median reported)')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps first')
    return p.parse_args()


def main():
    a = parse_args()
    root = os.path.abspath(a.arcface_torch)
    if not os.path.isfile(os.path.join(root, 'backbones', '__init__.py')):
        print(f'arcface_torch_step: {root} has no backbones/__init__.py (give the recognition/arcface_torch folder)', file=sys.stderr)
        return 2
    if a.image_size != 112:
        # arcface_torch's heads (IResNet's fc, MobileFaceNet's 7x7 GDC) are sized for 112x112 input
        print(f'arcface_torch_step: arcface_torch backbones take 112x112 input, not {a.image_size}', file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sys.path.insert(0, root)
    from backbones import get_model  # the user's checkout

    net = get_model(a.network, num_features=a.embedding_size)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, a.image_size, a.image_size)
    # stands in for the gradient the classifier hands back to the backbone
    grad = torch.randn(a.batch, a.embedding_size) / a.batch

    def step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        emb = net(x)
        emb.backward(grad)
        opt.step()
        return time.perf_counter() - t0

    for _ in range(a.warmup):
        step()
    times = [step() for _ in range(a.steps)]
    sec = statistics.median(times)
    print(json.dumps({
        'peer': 'arcface_torch',
        'network': a.network,
        'batch': a.batch,
        'image_size': a.image_size,
        'threads': a.threads,
        'torch': torch.__version__,
        'steps': len(times),
        'step_seconds': sec,
        'images_per_s': a.batch / sec,
    }))
    return 0


if __name__ == '__main__':
    sys.exit(main())
