"""Exports a toy EDM-preconditioned denoiser D(x, sigma) as TorchScript for `--teacher torchscript:FILE`,
and (with --reference) the probability-flow ODE states that bdense must reproduce from it.

    python3 export_toy_denoiser.py OUT.pt [--reference OUT.npy --count N --seed S --grid G]

The reference uses bdense's seed policy (store/src/seeds.rs: splitmix64 + Box-Muller) for the
start noise and Euler steps on the EDM polynomial grid, all in float32 like bdense.
"""
import argparse
import math

import numpy as np
import torch


class ToyDenoiser(torch.nn.Module):
    """c_skip x + c_out F(c_in x; c_noise) with a two-layer conv F and fixed random weights."""

    def __init__(self, channels=1, hidden=8, sigma_data=0.5):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.sigma_data = sigma_data
        self.conv1 = torch.nn.Conv2d(channels + 1, hidden, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(hidden, channels, 3, padding=1)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x, sigma):
        s = sigma.reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (s * s + sd2)
        c_out = s * self.sigma_data / torch.sqrt(s * s + sd2)
        c_in = 1.0 / torch.sqrt(s * s + sd2)
        c_noise = torch.log(s) / 4.0
        h = torch.cat([x * c_in, c_noise.expand(-1, 1, x.shape[2], x.shape[3])], dim=1)
        f = self.conv2(torch.tanh(self.conv1(h)))
        return c_skip * x + c_out * f


MASK = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


def trajectory_seed(base, traj_id):
    s = ((traj_id * 0xD1B54A32D192ED03) & MASK) ^ base
    return splitmix64(s)[1]


def standard_normal(seed, n):
    out, state = [], seed
    while len(out) < n:
        state, a = splitmix64(state)
        state, b = splitmix64(state)
        u1 = ((a >> 11) + 1) * (1.0 / (1 << 53))
        u2 = ((b >> 11) + 1) * (1.0 / (1 << 53))
        r = math.sqrt(-2.0 * math.log(u1))
        out += [r * math.cos(2 * math.pi * u2), r * math.sin(2 * math.pi * u2)]
    return np.array(out[:n], dtype=np.float32)


def polynomial_sigmas(points, smin=0.002, smax=80.0, rho=7.0):
    a, b = smax ** (1 / rho), smin ** (1 / rho)
    return [(a + i / (points - 1) * (b - a)) ** rho for i in range(points)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--reference")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=int, default=9)
    p.add_argument("--hw", type=int, default=16)
    a = p.parse_args()
    model = ToyDenoiser().eval()
    scripted = torch.jit.script(model)
    scripted.save(a.out)
    if a.reference:
        sigmas = polynomial_sigmas(a.grid)
        d = a.hw * a.hw
        x = np.stack([standard_normal(trajectory_seed(a.seed, i), d) * np.float32(sigmas[0]) for i in range(a.count)])
        x = torch.from_numpy(x.reshape(a.count, 1, a.hw, a.hw))
        states = [x.numpy().copy()]
        with torch.no_grad():
            for s, s_next in zip(sigmas[:-1], sigmas[1:]):
                den = scripted(x, torch.full((a.count,), s, dtype=torch.float32))
                x = x + (x - den) / np.float32(s) * np.float32(s_next - s)
                states.append(x.numpy().copy())
        np.save(a.reference, np.stack(states))


if __name__ == "__main__":
    main()
