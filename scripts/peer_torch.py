#!/usr/bin/env python3
"""Peer for `rliv bench learner`: the same MTCL network in PyTorch eager mode
(dense Adam over every parameter, embedding tables included), on synthetic
batches of the same shape. Prints TD samples per second.

    pip install torch
    python3 scripts/peer_torch.py [--threads 2] [--steps 30] [--rows 1048576]
"""
import argparse
import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--batch", type=int, default=1024)
ap.add_argument("--rows", type=int, default=1 << 20)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

E, B, GAMMA, TAU = 32, args.batch, 0.9, 0.005
TOWERS, NETS = 4, 3  # click, watch, follow, gift x (reward head, V1, V2)


def mlp(i):
    return nn.Sequential(nn.Linear(i, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.user = nn.Embedding(args.rows, E)
        self.author = nn.Embedding(args.rows, E)
        self.item = nn.Embedding(args.rows, E)
        self.feature = nn.Embedding(1 << 16, E)
        self.counter = nn.Embedding(5 * 32, E)
        self.towers = nn.ModuleList([mlp(3 * E) for _ in range(TOWERS * NETS)])
        self.assist = nn.Sequential(nn.Linear(2 * E, 64), nn.ReLU(), nn.Linear(64, 1))

    def h(self, u, a, i, uf, itf, c):
        h_u = self.user(u) + self.feature(uf).sum(1)
        h_a = self.author(a) + self.item(i) + self.feature(itf).sum(1)
        h_ua = self.counter(c).sum(1)
        return torch.cat([h_u, h_a, h_ua], 1)


def q_values(towers, h):
    out = torch.stack([net(h).squeeze(1) for net in towers]).view(TOWERS, NETS, -1)
    rhat = out[:, 0]
    q = rhat.unsqueeze(1) + GAMMA * out[:, 1:]
    return rhat, q


model = Model()
target = copy.deepcopy(model.towers)
for p in target.parameters():
    p.requires_grad_(False)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)


def batch():
    u = torch.randint(0, args.rows, (B,))
    a = torch.randint(0, args.rows, (B,))
    i = torch.randint(0, args.rows, (B,))
    uf = torch.randint(0, 1 << 16, (B, 3))
    itf = torch.randint(0, 1 << 16, (B, 2))
    c = torch.randint(0, 5 * 32, (B, 5))
    cn = torch.randint(0, 5 * 32, (B, 5))
    r = torch.rand(TOWERS, B)
    gift = (torch.rand(B) < 0.01).float()
    return u, a, i, uf, itf, c, cn, r, gift


def step(b):
    u, a, i, uf, itf, c, cn, r, gift = b
    with torch.no_grad():
        hn = model.h(u, a, i, uf, itf, cn)
        _, qn = q_values(target, hn)
        y = r + GAMMA * qn.min(1).values
    h = model.h(u, a, i, uf, itf, c)
    rhat, q = q_values(model.towers, h)
    loss = F.huber_loss(rhat, r, reduction="none").mean(1).sum()
    loss = loss + F.huber_loss(q, y.unsqueeze(1).expand_as(q), reduction="none").mean(2).sum()
    logits = model.assist(h[:, : 2 * E]).squeeze(1)
    loss = loss + F.binary_cross_entropy_with_logits(logits, gift)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        for tp, p in zip(target.parameters(), model.towers.parameters()):
            tp.mul_(1 - TAU).add_(p, alpha=TAU)
    return loss.item()


batches = [batch() for _ in range(8)]
for k in range(3):
    step(batches[k % 8])
t = time.time()
for k in range(args.steps):
    last = step(batches[k % 8])
dt = time.time() - t
print(
    f"torch {torch.__version__} eager, dense Adam, {args.threads} threads, batch {B}, rows {args.rows}: "
    f"{args.steps * B / dt:.0f} TD samples/s ({args.steps / dt:.1f} updates/s), last loss {last:.4f}"
)
