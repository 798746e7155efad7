"""The message-passing network of the thesis' QM9 table (Gilmer et al. 2017's MPNN as PyTorch Geometric's
QM9 example builds it, the encoder of Nash-MTL's and FORUM's code), on molecules packed as dense tensors.

A molecule of k ≤ ``MAX_ATOMS`` atoms is one row [MAX_ATOMS, PACKED] of the family's input array
(taskbal/data/qm9_tasks.py): per atom slot, a presence flag, PyTorch Geometric's 11 atom features, the 3
coordinates and the bond type (0 none, 1–4 single, double, triple, aromatic) to every other slot; the
atoms fill the first k slots. Dense rows let the multi-task loop batch, index and hold molecules like
images. :func:`graph_batch` turns a batch of rows into PyTorch Geometric's sparse form: the complete graph
of every molecule (PyG's ``Complete`` transform), each edge's attribute the one-hot bond type (zeros where
there is no bond) and the distance between its atoms (``Distance(norm=False)``).

The network: Linear(11 → 64) + ReLU; three rounds of ``NNConv`` (edge network Linear(5 → 128) + ReLU +
Linear(128 → 64 · 64), mean aggregation) + ReLU, each followed by a ``GRU`` step; ``Set2Set`` (3 processing
steps) to a molecule vector of 128; Linear(128 → 64) + ReLU. Each task's head is a Linear(64 → 1).
"""
from __future__ import annotations

import torch
from torch import nn

MAX_ATOMS = 29  # QM9's largest molecule
ATOM_FEATURES = 11  # PyG's QM9 x: one-hot H C N O F, atomic number, aromatic, sp, sp2, sp3, hydrogens
BOND_TYPES = 4
PRESENT, FEATURES, POSITION = slice(0, 1), slice(1, 1 + ATOM_FEATURES), slice(1 + ATOM_FEATURES, 4 + ATOM_FEATURES)
BONDS = slice(4 + ATOM_FEATURES, 4 + ATOM_FEATURES + MAX_ATOMS)
PACKED = 4 + ATOM_FEATURES + MAX_ATOMS  # channels per atom slot
WIDTH = 64


def graph_batch(packed: torch.Tensor):
    """(x [atoms, 11], edge_index [2, edges], edge_attr [edges, 5], batch [atoms]) of a batch of packed
    molecules [B, MAX_ATOMS, PACKED]: every molecule's complete graph (both directions, no self-loops)."""
    present = packed[..., PRESENT].squeeze(-1) > 0.5
    atoms = present.sum(1)
    offsets = torch.cumsum(atoms, 0) - atoms
    x = packed[..., FEATURES][present]
    pairs = present[:, :, None] & present[:, None, :] & ~torch.eye(packed.shape[1], dtype=torch.bool,
                                                                   device=packed.device)
    b, i, j = pairs.nonzero(as_tuple=True)
    edge_index = torch.stack([offsets[b] + i, offsets[b] + j])
    bond = packed[..., BONDS][b, i, j].round().long()
    one_hot = nn.functional.one_hot(bond, BOND_TYPES + 1)[:, 1:].to(packed.dtype)  # type 0 (none): all zeros
    distance = (packed[b, i, POSITION] - packed[b, j, POSITION]).norm(dim=-1, keepdim=True)
    batch = torch.repeat_interleave(torch.arange(len(atoms), device=packed.device), atoms)
    return x, edge_index, torch.cat([one_hot, distance], 1), batch


class MPNNEncoder(nn.Module):
    def __init__(self, width: int = WIDTH, steps: int = 3):
        super().__init__()
        from torch_geometric.nn import NNConv, Set2Set

        self.steps = steps
        self.embed = nn.Linear(ATOM_FEATURES, width)
        edge_network = nn.Sequential(nn.Linear(BOND_TYPES + 1, 128), nn.ReLU(), nn.Linear(128, width * width))
        self.conv = NNConv(width, width, edge_network, aggr="mean")
        self.gru = nn.GRU(width, width)
        self.readout = Set2Set(width, processing_steps=3)
        self.out = nn.Linear(2 * width, width)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        x, edge_index, edge_attr, batch = graph_batch(packed)
        state = torch.relu(self.embed(x))
        hidden = state.unsqueeze(0)
        for _ in range(self.steps):
            message = torch.relu(self.conv(state, edge_index, edge_attr))
            state, hidden = self.gru(message.unsqueeze(0), hidden)
            state = state.squeeze(0)
        return torch.relu(self.out(self.readout(state, batch, dim_size=packed.shape[0])))
