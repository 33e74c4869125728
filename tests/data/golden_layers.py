# Reference values for tests/test_layers_golden.c, in double precision, independent of the C code.
# Run: python3 tests/data/golden_layers.py  (prints the literals pasted into the test).
import math
M=(1<<64)-1
def sm(x):
    x=(x+0x9e3779b97f4a7c15)&M; z=x
    z=((z^(z>>30))*0xbf58476d1ce4e5b9)&M
    z=((z^(z>>27))*0x94d049bb133111eb)&M
    return (z^(z>>31)), x
def hash4(a,b,c,d):
    x=(a*0x9e3779b97f4a7c15)&M; h,_=sm(x)
    x=h^((b*0xc2b2ae3d27d4eb4f)&M); h,_=sm(x)
    x=h^((c*0x165667b19e3779f9)&M); h,_=sm(x)
    x=h^((d*0x27d4eb2f165667c5)&M); h,_=sm(x)
    return h
def mask_hash(key,g):
    z=(key+(g+1)*0x9e3779b97f4a7c15)&M
    z=((z^(z>>30))*0xbf58476d1ce4e5b9)&M
    z=((z^(z>>27))*0x94d049bb133111eb)&M
    return z^(z>>31)
def f(v):
    s="%.9g"%v
    return (s if ("." in s or "e" in s) else s+".0")+"f"
def arr(vs): return "{"+", ".join(f(v) for v in vs)+"}"
# dropout: seed 42, layer index 1, step 7, micro 2, features 8, samples 0..1 with sample_base 1 , P=0.5
key=hash4(42,1,7,2)
x=[0.5*i-1.75 for i in range(16)]
y=[]
for s in range(2):
    for j in range(8):
        g=(1+s)*8+j
        u=(mask_hash(key,g)>>40)/16777216.0
        y.append(x[s*8+j]*2.0 if u>=0.5 else 0.0)
print("dropout x",arr(x)); print("dropout y",arr(y))
# activations
xa=[-2.0,-0.5,0.25,0.7,1.5,3.0]
dy=[0.3,-1.2,0.8,0.5,-0.7,1.1]
Phi=lambda t:0.5*(1+math.erf(t/math.sqrt(2)))
phi=lambda t:math.exp(-t*t/2)/math.sqrt(2*math.pi)
print("relu y",arr([max(t,0) for t in xa])); print("relu dx",arr([d if t>0 else 0 for t,d in zip(xa,dy)]))
print("gelu y",arr([t*Phi(t) for t in xa])); print("gelu dx",arr([d*(Phi(t)+t*phi(t)) for t,d in zip(xa,dy)]))
print("tanh y",arr([math.tanh(t) for t in xa])); print("tanh dx",arr([d*(1-math.tanh(t)**2) for t,d in zip(xa,dy)]))
sg=lambda t:1/(1+math.exp(-t))
print("sigmoid y",arr([sg(t) for t in xa])); print("sigmoid dx",arr([d*sg(t)*(1-sg(t)) for t,d in zip(xa,dy)]))
# layernorm: 2 samples of 5, w,b, dy; numeric derivative in python double
X=[[1.0,2.0,3.0,4.0,6.0],[-1.0,0.5,0.0,2.0,-0.5]]
W=[1.0,0.5,-1.0,2.0,1.5]; B=[0.0,0.1,-0.2,0.3,0.0]
DY=[[0.2,-0.1,0.4,0.3,-0.5],[1.0,0.0,-1.0,0.5,0.25]]
def ln(xs,w,b):
    n=len(xs); m=sum(xs)/n; v=sum((t-m)**2 for t in xs)/n; r=1/math.sqrt(v+1e-5)
    return [(t-m)*r*w[j]+b[j] for j,t in enumerate(xs)]
Y=[ln(xs,W,B) for xs in X]
def L(X,W,B): return sum(sum(d*y for d,y in zip(DY[s],ln(X[s],W,B))) for s in range(2))
h=1e-6
DX=[]
for s in range(2):
    for j in range(5):
        Xp=[r[:] for r in X]; Xm=[r[:] for r in X]; Xp[s][j]+=h; Xm[s][j]-=h
        DX.append((L(Xp,W,B)-L(Xm,W,B))/(2*h))
DW=[];DB=[]
for j in range(5):
    Wp=W[:];Wm=W[:];Wp[j]+=h;Wm[j]-=h; DW.append((L(X,Wp,B)-L(X,Wm,B))/(2*h))
    Bp=B[:];Bm=B[:];Bp[j]+=h;Bm[j]-=h; DB.append((L(X,W,Bp)-L(X,W,Bm))/(2*h))
print("ln y",arr(Y[0]+Y[1])); print("ln dx",arr(DX)); print("ln dw",arr(DW)); print("ln db",arr(DB))
# softmax_xent: 2 samples of 4, labels 2, 0; global batch 4
Z=[[1.0,2.0,3.0,0.5],[-1.0,0.0,4.0,2.0]]; lab=[2,0]; GB=4
P=[];loss=0
for s in range(2):
    m=max(Z[s]); e=[math.exp(t-m) for t in Z[s]]; S=sum(e); p=[t/S for t in e]; P+=p
    loss+= -math.log(p[lab[s]])
DXs=[]
for s in range(2):
    for j in range(4): DXs.append((P[s*4+j]-(1 if j==lab[s] else 0))/GB)
print("xent p",arr(P)); print("xent loss %.17g"%loss); print("xent dx",arr(DXs))
# mse: same Z, labels, global batch 4
loss=0; DXm=[]
for s in range(2):
    t=[1.0 if j==lab[s] else 0.0 for j in range(4)]
    loss+=sum((a-b)**2 for a,b in zip(Z[s],t))/4
    DXm+=[2*(a-b)/(4*GB) for a,b in zip(Z[s],t)]
print("mse loss %.17g"%loss); print("mse dx",arr(DXm))
