"""The B-DENSE / SFD student step in PyTorch eager: the peer `bdense bench train` is compared
with on the GPU machine (pipeline/torch/gpu_bench.sh). Same U-Net shape as bdense's (base 16,
mults [1, 2], 2x2 pixel patches, GroupNorm + SiLU residual blocks, additive skips), EDM
preconditioning per branch, one Euler step per branch, L1 to random targets, AdamW.

    python3 student_step.py --k 4 --n 4 --batch 128 --steps 50 --device cuda
"""
import argparse
import time

import torch
import torch.nn.functional as F


class ResBlock(torch.nn.Module):
    def __init__(self, i, o, emb):
        super().__init__()
        self.n1, self.c1 = torch.nn.GroupNorm(8, i), torch.nn.Conv2d(i, o, 3, padding=1)
        self.e = torch.nn.Linear(emb, o)
        self.n2, self.c2 = torch.nn.GroupNorm(8, o), torch.nn.Conv2d(o, o, 3, padding=1)
        self.skip = torch.nn.Conv2d(i, o, 1) if i != o else torch.nn.Identity()

    def forward(self, x, emb):
        h = self.c1(F.silu(self.n1(x))) + self.e(F.silu(emb))[:, :, None, None]
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class UNet(torch.nn.Module):
    def __init__(self, out_channels, base=16, emb=64, fourier=16):
        super().__init__()
        self.fourier = fourier
        self.emb_in, self.emb_out = torch.nn.Linear(2 * fourier, emb), torch.nn.Linear(emb, emb)
        self.conv_in = torch.nn.Conv2d(4, base, 3, padding=1)
        self.down = torch.nn.ModuleList([ResBlock(base, base, emb), ResBlock(base, 2 * base, emb)])
        self.mid = ResBlock(2 * base, 2 * base, emb)
        self.up = ResBlock(2 * base, base, emb)
        self.norm_out = torch.nn.GroupNorm(8, base)
        self.conv_out = torch.nn.Conv2d(base, out_channels * 4, 3, padding=1)

    def forward(self, x, c_noise):
        freqs = 100.0 ** (torch.arange(self.fourier, device=x.device) / (self.fourier - 1))
        phase = c_noise[:, None] * freqs[None]
        emb = self.emb_out(F.silu(self.emb_in(torch.cat([phase.cos(), phase.sin()], 1))))
        h = self.conv_in(F.pixel_unshuffle(x, 2))
        h0 = self.down[0](h, emb)
        h = self.mid(self.down[1](F.avg_pool2d(h0, 2), emb), emb)
        h = self.up(F.interpolate(h, scale_factor=2, mode="nearest"), emb) + h0
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), 2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    dev = torch.device(a.device)
    net = UNet(a.k).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    sigmas = [80.0, 9.723, 0.470, 0.002][: a.n] if a.n <= 4 else [80.0, 17.5, 2.5, 0.17, 0.002]
    sd = 0.5
    x0 = torch.randn(a.batch, 1, 28, 28, device=dev) * 80.0
    targets = torch.randn(a.batch, a.n - 1, a.k, 1, 28, 28, device=dev)
    times = []
    for step in range(a.steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        x = x0
        for i in range(a.n - 1):
            s = sigmas[i]
            ts = torch.linspace(sigmas[i + 1], sigmas[i + 1], a.k).tolist()
            c_in, c_skip, c_out = 1 / (s * s + sd * sd) ** 0.5, sd * sd / (s * s + sd * sd), s * sd / (s * s + sd * sd) ** 0.5
            f = net(x * c_in, torch.full((a.batch,), torch.log(torch.tensor(s)).item() / 4, device=dev))
            loss = 0
            for k in range(a.k):
                d = c_skip * x + c_out * f[:, k:k + 1]
                xhat = x + (ts[k] - s) * (x - d) / s
                loss = loss + (xhat - targets[:, i, k]).abs().mean()
                end = xhat
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            x = end.detach()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    steady = times[5:] or times
    print(f"pytorch eager K={a.k} N={a.n} batch {a.batch}: {a.batch / (sum(steady) / len(steady)):.1f} traj/s")


if __name__ == "__main__":
    main()
