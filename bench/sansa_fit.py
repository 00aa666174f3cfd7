"""Fit sansa on X (users x items, npz) and write the dense B = W' W_r (npz); run by
bench/rerank_variants.py in an interpreter that has sansa (not a project dependency)."""

import sys
import time

import numpy as np
import scipy.sparse as sp
from sansa import (  # type: ignore[import-not-found]
    SANSA,
    CHOLMODGramianFactorizerConfig,
    ICFGramianFactorizerConfig,
    SANSAConfig,
    UMRUnitLowerTriangleInverterConfig,
)

x = sp.load_npz(sys.argv[1]).tocsr()
out = sys.argv[2]
res = {}
for spec in sys.argv[3:]:
    l2, density, fact = spec.split("/")
    fc = CHOLMODGramianFactorizerConfig() if fact == "cholmod" else ICFGramianFactorizerConfig()
    cfg = SANSAConfig(
        l2=float(l2),
        weight_matrix_density=float(density),
        gramian_factorizer_config=fc,
        lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig(
            scans=1, finetune_steps=10
        ),
    )
    t = time.time()
    m = SANSA(cfg).fit(x)
    w, wr = m.weights
    b = (w @ wr).toarray()
    print(spec, f"{time.time() - t:.1f}s nnz(W)={w.nnz} nnz(Wr)={wr.nnz}", file=sys.stderr)
    res[spec.replace("/", "_").replace(".", "p")] = b.astype(np.float32)
np.savez(out, **res)
