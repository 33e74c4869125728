#!/usr/bin/env python3
"""Structure-aware inputs for fuzz_topo: N topologies that are well-formed XML, most of them one
edit away from a real export, so that they reach past the XML parser into every rule of
partitioner/mp_topo_xml.c and, when the check passes them, into hwloc itself.

Usage: tests/fuzz/topo_mutants.py N DIR [SEED]
Each base document is an lstopo synthetic export of a random machine (packages, dies, groups,
NUMA nodes, caches, cores, PUs); each mutant applies one or two edits: an attribute removed or
renamed, a set replaced by random bits (often a subset or superset of the old one), two objects'
sets swapped, an object duplicated, moved under another parent or retyped, an element removed,
os_index changed, allowed sets shrunk. Replay them through the in-process loader under ASan:
  ls DIR/* | xargs build-fuzz/tests/fuzz/fuzz_topo
(a crash is a document the check let through and hwloc fell over). A printed summary counts how
many `mpipe plan` would accept (with --count-accepted MPIPE, slower: one process per file)."""
import os
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

LEVELS = [("pack", 1, 3), ("die", 1, 2), ("group", 1, 2), ("numa", 1, 2), ("l3", 1, 2),
          ("l2", 1, 3), ("core", 1, 3), ("pu", 1, 3)]
TYPES = ["Machine", "Package", "Die", "Core", "PU", "Group", "L1Cache", "L2Cache", "L3Cache",
         "L1iCache", "NUMANode", "MemCache", "Misc", "Bridge"]
SETS = ["cpuset", "complete_cpuset", "nodeset", "complete_nodeset"]


def synthetic(rng):
    parts = []
    for name, lo, hi in LEVELS:
        if name in ("pack", "core", "pu") or rng.random() < 0.4:
            parts.append(f"{name}:{rng.randint(lo, hi)}")
    r = subprocess.run(["lstopo-no-graphics", "-i", " ".join(parts), "--of", "xml", "-"],
                       capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def bits(rng, n):
    """A random hwloc bitmap text of up to n bits (sometimes several words, sometimes empty)."""
    v = rng.getrandbits(n) if rng.random() < 0.9 else 0
    words = []
    while True:
        words.append(v & 0xFFFFFFFF)
        v >>= 32
        if not v:
            break
    return ",".join(f"0x{w:08x}" for w in reversed(words))


def mutate(root, rng):
    objs = [o for o in root.iter("object")]
    if not objs:
        return
    o = rng.choice(objs)
    kind = rng.randrange(10)
    if kind == 0 and o.attrib:
        del o.attrib[rng.choice(sorted(o.attrib))]
    elif kind == 1:
        a = rng.choice(SETS + ["allowed_cpuset", "allowed_nodeset"])
        o.set(a, bits(rng, rng.choice((4, 8, 40, 70))))
    elif kind == 2:
        p, q = rng.sample(objs, 2) if len(objs) > 1 else (o, o)
        for a in rng.sample(SETS, rng.randint(1, 4)):
            pa, qa = p.get(a), q.get(a)
            if pa is not None and qa is not None:
                p.set(a, qa)
                q.set(a, pa)
    elif kind == 3:
        parent = next((x for x in root.iter() if o in list(x)), None)
        if parent is not None:
            parent.append(ET.fromstring(ET.tostring(o)))
    elif kind == 4:
        parent = next((x for x in root.iter() if o in list(x)), None)
        target = rng.choice(objs)
        if parent is not None and target is not o and o not in target.iter():
            parent.remove(o)
            target.append(o)
    elif kind == 5:
        o.set("type", rng.choice(TYPES))
    elif kind == 6:
        parent = next((x for x in root.iter() if o in list(x)), None)
        if parent is not None:
            parent.remove(o)
    elif kind == 7:
        o.set("os_index", str(rng.choice((0, 1, 3, 31, 32, 63, 64, 65535, 65536))))
    elif kind == 8 and o.attrib:
        a = rng.choice(sorted(o.attrib))
        o.attrib[a[:-1] + "X"] = o.attrib.pop(a)
    else:
        o.set(rng.choice(SETS), "0x0")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    n, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    os.makedirs(out, exist_ok=True)
    made, bases = 0, []
    while made < n:
        if len(bases) < 50 or rng.random() < 0.02:
            doc = synthetic(rng)
            if doc:
                bases.append(doc)
        base = rng.choice(bases)
        root = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", base).encode())
        for _ in range(rng.choice((0, 1, 1, 1, 2))):
            mutate(root, rng)
        path = os.path.join(out, f"mutant-{made:06d}.xml")
        with open(path, "wb") as f:
            f.write(b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root))
        made += 1
    print(f"{made} documents from {len(bases)} synthetic machines in {out}")


if __name__ == "__main__":
    main()
