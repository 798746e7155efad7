"""Multi-task learning methods of the thesis (Ye 2024) and the multi-task training loop.

bilevel.py  the MOBLO problem contract, LL descent, unrolled / implicit hypergradients
moml.py     MOML (Alg. 1): per-objective hypergradients combined by a registered weighting (MGDA)
moco.py     MoCo's tracked combination (the thesis' MoCo baseline = MOML with combiner moco)
forum.py    FORUM (Alg. 2): value-function reformulation, the (m+1)-variable direction QP
normal.py   NORMAL (Ch. 5): task positions in a heavy-ball neural ODE after the shared encoder
loop.py     the one multi-task training loop (single-level weightings, NORMAL, MOML, FORUM)
weighted.py the loop's single-level step: per-task shared gradients → a registered weighting
model.py    shared encoder, optional neck (NORMAL's ODE), one head per task
data.py     the MTL family contract (per-task tensors) and deterministic mini-batches
problems.py network MOBLO problems: multi-task data hyper-cleaning, task weighting
blobs.py    a generated multi-task classification family (tests, smoke runs)
plots.py    the figure style of the thesis' Figure A.1 (synthetic MOBLO)

Submodules are imported where they are used, so importing this package stays cheap.
"""
