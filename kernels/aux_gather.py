"""AUX's per-example logits offset: a row gather-add forward and a row scatter-add update.

Forward: ``z[i, :] = logits[i, :] + lam * B[idx[i], :]``, one program per (row, column block).
Backward: ``dlogits = dz`` passes through, and B's gradient is the ``batch`` rows ``lam * dz``
at ``idx`` (a sparse COO tensor, never n x c). The optimizer applies them with
``scatter_add_rows``: ``B[idx[i], :] += alpha * rows[i, :]`` with atomic adds, so an index
that repeats within the batch gets the sum of its rows, as the dense gradient would.

Every launch touches O(batch * c) bytes, whatever the number of rows n of B.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_C = 256
NUM_WARPS = 2  # 4 columns per thread: one 128-bit load per row chunk


@triton.jit
def _gather_add_kernel(logits_ptr, table_ptr, idx_ptr, out_ptr, c, lam, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    inside = cols < c
    example = tl.load(idx_ptr + row).to(tl.int64)
    z = tl.load(logits_ptr + row * c + cols, mask=inside, other=0.0)
    b = tl.load(table_ptr + example * c + cols, mask=inside, other=0.0)
    tl.store(out_ptr + row * c + cols, z + lam * b, mask=inside)


@triton.jit
def _scatter_add_rows_kernel(table_ptr, idx_ptr, rows_ptr, c, alpha, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    inside = cols < c
    example = tl.load(idx_ptr + row).to(tl.int64)
    v = tl.load(rows_ptr + row * c + cols, mask=inside, other=0.0)
    tl.atomic_add(table_ptr + example * c + cols, alpha * v, mask=inside)


def _grid(batch: int, c: int) -> tuple[int, int]:
    return (batch, triton.cdiv(c, BLOCK_C))


def gather_add(logits: torch.Tensor, table: torch.Tensor, idx: torch.Tensor, lam: float,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """``logits + lam * table[idx]`` for contiguous fp32 ``logits`` (batch, c) and ``table`` (n, c)."""
    out = torch.empty_like(logits) if out is None else out
    if logits.numel():
        _gather_add_kernel[_grid(*logits.shape)](logits, table, idx, out, logits.shape[1], lam, BLOCK_C=BLOCK_C,
                                                  num_warps=NUM_WARPS)
    return out


def scatter_add_rows(table: torch.Tensor, idx: torch.Tensor, rows: torch.Tensor, alpha: float) -> None:
    """``table[idx[i]] += alpha * rows[i]`` for every i, repeats summed (atomic adds)."""
    if rows.numel():
        rows, idx = rows.contiguous(), idx.contiguous()  # the kernel walks dense rows of rows.shape[1]
        _scatter_add_rows_kernel[_grid(*rows.shape)](table, idx, rows, rows.shape[1], alpha, BLOCK_C=BLOCK_C,
                                                      num_warps=NUM_WARPS)


class AuxGatherAdd(torch.autograd.Function):
    """``logits + lam * table[idx]`` whose table gradient is a sparse COO tensor of the batch's rows."""

    @staticmethod
    def forward(ctx, logits, table, idx, lam):
        ctx.save_for_backward(idx)
        ctx.lam, ctx.table_shape = lam, table.shape
        return gather_add(logits.contiguous(), table, idx, lam)

    @staticmethod
    def backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = torch.sparse_coo_tensor(idx[None], ctx.lam * grad_out, ctx.table_shape, check_invariants=False)
        return grad_out, grad_table, None, None
