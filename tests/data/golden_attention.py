# Reference values for tests/test_attention.c from PyTorch's own nn.MultiheadAttention, in double
# precision: independent of mpipe's kernels (they share only the parameter layout, DESIGN.md §9).
# Inputs, parameters and dL/dy are the small dyadic fractions below (exact in float and double),
# which the test rebuilds with the same formulas. Run: /usr/bin/python3 tests/data/golden_attention.py
import torch

def val(i, mul, mod, off, den):
    return ((i * mul) % mod - off) / den

def case(name, B, T, C, H, causal):
    mha = torch.nn.MultiheadAttention(C, H, bias=True, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.tensor([val(i, 5, 11, 5, 16) for i in range(3 * C * C)],
                                              dtype=torch.float64).view(3 * C, C))
        mha.in_proj_bias.copy_(torch.tensor([val(i, 3, 7, 3, 32) for i in range(3 * C)],
                                            dtype=torch.float64))
        mha.out_proj.weight.copy_(torch.tensor([val(i, 11, 9, 4, 16) for i in range(C * C)],
                                               dtype=torch.float64).view(C, C))
        mha.out_proj.bias.copy_(torch.tensor([val(i, 2, 5, 2, 32) for i in range(C)],
                                             dtype=torch.float64))
    x = torch.tensor([val(i, 7, 13, 6, 8) for i in range(B * T * C)],
                     dtype=torch.float64).view(B, T, C).requires_grad_()
    dy = torch.tensor([val(i, 13, 17, 8, 16) for i in range(B * T * C)],
                      dtype=torch.float64).view(B, T, C)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1) if causal else None
    y, _ = mha(x, x, x, attn_mask=mask, need_weights=False)
    y.backward(dy)
    out = [("y", y), ("dx", x.grad), ("d_in_w", mha.in_proj_weight.grad),
           ("d_in_b", mha.in_proj_bias.grad), ("d_out_w", mha.out_proj.weight.grad),
           ("d_out_b", mha.out_proj.bias.grad)]
    for what, t in out:
        vs = t.detach().reshape(-1).tolist()
        body = ", ".join("%.9g" % v for v in vs)
        print("static const double %s_%s[%d] = {%s};" % (name, what, len(vs), body))

case("causal", 2, 5, 6, 2, True)
case("full", 1, 4, 6, 3, False)
