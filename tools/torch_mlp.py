"""PyTorch baseline for tools/bench-vs-torch: the same MLP / CNN as models/mlp.mp and models/cnn.mp,
trained with Adam on Fashion-MNIST like mpipe (samples/s over the training loop only).
Usage: python3 tools/torch_mlp.py mlp|cnn BATCH STEPS   (threads from OMP/OPENBLAS env; torch.set_num_threads(1))
Prints one line: TORCH samples_per_s=... loss=..."""
import gzip, sys, time
import numpy as np
import torch
import torch.nn as nn

D = "/usr/share/datasets/fashion-mnist/"


def idx(name, off):
    with gzip.open(D + name) as f:
        return np.frombuffer(f.read(), np.uint8, offset=off)


model_name, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
torch.manual_seed(0)
x = torch.from_numpy(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float32) / 255)
y = torch.from_numpy(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
if model_name == "mlp":
    w = 1024
    layers = [nn.Linear(784, w), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Linear(w, w), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(w, 10))
else:
    x = x.reshape(-1, 1, 28, 28)
    model = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
perm = torch.randperm(len(x))
t0 = None
for s in range(steps + 1):  # step 0 is warm-up, not timed
    if s == 1:
        t0 = time.perf_counter()
    i = perm[(s * batch) % (len(x) - batch):][:batch]
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x[i]), y[i])
    loss.backward()
    opt.step()
dt = time.perf_counter() - t0
print(f"TORCH samples_per_s={steps * batch / dt:.1f} loss={loss.item():.4f}")
