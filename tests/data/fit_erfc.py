# Fits the polynomial g(t) of mp__erfcx (layers/mp_vmath.h): erfc(z) = exp(-z²) · t · q(t) with
# t = 1 / (1 + z/2) and q(t) = 1 + (t - 1)·g(t) = 1 - (z/2)·t·g(t), so that q(1) = 1 exactly
# (erfc(0) = 1 and Phi(0) = 1/2 exactly). q = erfc(z)·exp(z²)/t is smooth and bounded on the
# whole half-line (q -> 1 / (2·sqrt(pi))·... as z -> inf), so a degree-9 Chebyshev least-squares
# fit of g in double over z in (0, 9.3] is enough (beyond, erfc(z) < 1e-38 is 0 in float). The
# exp(-z²) factor is computed apart (it is also the normal density GELU's backward needs). Prints
# the coefficients (highest degree first, rounded to float, as the Horner loop uses them) and the
# worst relative error of the float evaluation it simulates.
# Run: /usr/bin/python3 tests/data/fit_erfc.py
import math
import numpy as np

f32 = np.float32
z = np.linspace(1e-4, 9.3, 300001)
t = 1 / (1 + 0.5 * z)
q = np.array([math.erfc(v) * math.exp(v * v) for v in z]) / t
g = (q - 1) / (t - 1)
co = np.polynomial.chebyshev.Chebyshev.fit(t, g, 9).convert(kind=np.polynomial.Polynomial).coef
co = [f32(c) for c in co]
print("coefficients:", ", ".join("%.9g" % float(c) for c in co[::-1]))

zf = np.concatenate([np.linspace(0, 9.2, 200001), np.linspace(0, 0.01, 1001)]).astype(f32)
tf = (f32(1) / (f32(1) + f32(0.5) * zf)).astype(f32)
acc = co[-1]
for c in co[-2::-1]:
    acc = (acc * tf + c).astype(f32)
qf = (f32(1) + ((f32(-0.5) * zf).astype(f32) * tf).astype(f32) * acc).astype(f32)
z2 = (zf * zf).astype(f32)
z2lo = (zf.astype(np.float64) ** 2 - z2).astype(f32)
e = (np.exp(-z2.astype(np.float64)).astype(f32) * (f32(1) - z2lo)).astype(f32)
val = (tf * qf).astype(f32) * e
ref = np.array([math.erfc(v) for v in zf.astype(np.float64)])
live = ref > 1.2e-38
print("max relative error: %.3g" % (np.abs(val[live] - ref[live]) / ref[live]).max())
print("erfc(0) = %.9g" % val[0])
