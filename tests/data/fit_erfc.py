# Fits the polynomial g(t) of mp__erfc_core (layers/mp_vmath.h): erfc(z) = t·exp(-z² + h(t)) with
# t = 1 / (1 + z/2) and h(t) = (t - 1)·g(t) = -(z/2)·t·g(t), so that h vanishes exactly at z = 0
# (erfc(0) = 1 and Phi(0) = 1/2 exactly). h is smooth and bounded on the whole half-line
# (h -> ln(1 / (2·sqrt(pi))) as z -> inf), so a degree-8 Chebyshev least-squares fit of g in double
# over z in (0, 10] is enough (beyond 10, erfc(z) < 2e-45 is 0 in float). The script prints the
# coefficients (highest degree first, rounded to float, as the Horner loop uses them) and the
# worst relative error of the float evaluation it simulates.
# Run: /usr/bin/python3 tests/data/fit_erfc.py
import math
import numpy as np

f32 = np.float32
z = np.linspace(1e-4, 10, 200001)
t = 1 / (1 + 0.5 * z)
h = np.log(np.array([math.erfc(v) * math.exp(v * v) for v in z]) / t)
g = h / (t - 1)
co = np.polynomial.chebyshev.Chebyshev.fit(t, g, 8).convert(kind=np.polynomial.Polynomial).coef
co = [f32(c) for c in co]
print("coefficients:", ", ".join("%.9g" % float(c) for c in co[::-1]))

zf = np.concatenate([np.linspace(0, 10, 200001), np.linspace(0, 0.01, 10001)]).astype(f32)
tf = (f32(1) / (f32(1) + f32(0.5) * zf)).astype(f32)
acc = co[-1]
for c in co[-2::-1]:
    acc = (acc * tf + c).astype(f32)
hf = (((f32(-0.5) * zf).astype(f32) * tf).astype(f32) * acc).astype(f32)
z2 = (zf * zf).astype(f32)
z2lo = (zf.astype(np.float64) ** 2 - z2).astype(f32)
s = (hf - z2).astype(f32)
bb = (s + z2).astype(f32)
e = ((hf - bb) + (-z2 - (s - bb))).astype(f32)
val = tf * np.exp(s.astype(np.float64)).astype(f32) * (f32(1) + (e - z2lo))
ref = np.array([math.erfc(v) for v in zf.astype(np.float64)])
live = ref > 1.2e-38
print("max relative error: %.3g" % (np.abs(val[live] - ref[live]) / ref[live]).max())
print("erfc(0) = %.9g" % val[0])
