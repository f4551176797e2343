"""nn.LSTM written out step by step from linear ops, for export to ExecuTorch's int8 path.

PT2E quantizers annotate `aten.linear`, never the fused `aten.lstm` op, so an exported LSTM keeps its
weights float32. `unroll_lstms(model)` returns a copy of the model whose LSTMs compute the same thing
as a loop of linear ops over the fixed sequence length: one input projection for all time steps,
then per step the one recurrent weight (the same parameter at every step, so a quantizer sees one
constant, not one per step), gates i, f, g, o in PyTorch's order, biases b_ih + b_hh summed once.

It runs over every position as nn.LSTM does without packing (our text models pre-pad with 0 and read
the state after the last token); bidirectional and stacked layers are handled; `proj_size` is not.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from modelshrink.errors import IncompatibleModelError


class UnrolledLSTM(nn.LSTM):
    """An nn.LSTM (same parameters, same state dict, same outputs) whose forward is unrolled linear ops.

    A subclass, so models that ask `isinstance(m, nn.LSTM)` or read `.bidirectional` run unchanged.
    Build it with `UnrolledLSTM.of(lstm)`; the initial state is zero (an `hx` argument is refused).
    """

    @classmethod
    def of(cls, lstm: nn.LSTM) -> UnrolledLSTM:
        if lstm.proj_size:
            raise IncompatibleModelError(f"cannot unroll an LSTM with proj_size={lstm.proj_size} for int8 export")
        new = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias, lstm.batch_first, 0.0,
                  lstm.bidirectional)  # fmt: skip
        new.load_state_dict(lstm.state_dict())
        for name in [n for n, _ in new.named_parameters() if n.startswith("weight_ih")]:
            suffix = name.removeprefix("weight_ih")  # _l0, _l0_reverse, ...
            b = (
                (getattr(new, f"bias_ih{suffix}") + getattr(new, f"bias_hh{suffix}")).detach().clone()
                if new.bias
                else None
            )
            new.register_buffer(f"bias{suffix}", b, persistent=False)  # one constant bias per direction: b_ih + b_hh
        return new.train(lstm.training)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if hx is not None:
            raise IncompatibleModelError("UnrolledLSTM starts from the zero state; it takes no hx")
        seq = x if self.batch_first else x.transpose(0, 1)  # (B, T, features)
        h_last: list[torch.Tensor] = []
        c_last: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            outs = []
            for reverse in [False, True] if self.bidirectional else [False]:
                out, h, c = self._direction(seq, f"_l{layer}{'_reverse' if reverse else ''}", reverse)
                outs.append(out)
                h_last.append(h)
                c_last.append(c)
            seq = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        out = seq if self.batch_first else seq.transpose(0, 1)
        return out, (torch.stack(h_last), torch.stack(c_last))

    def _direction(self, seq: torch.Tensor, suffix: str, reverse: bool) -> tuple[torch.Tensor, ...]:
        """One direction of one layer: (B, T, H) outputs and the last (B, H) states h, c.

        States stay (B, 1, H) and gates are sliced (not chunked or selected), so XNNPACK takes the whole
        loop into its delegate (it lowers slice_copy, not split or select)."""
        b, steps, hid = seq.shape[0], seq.shape[1], self.hidden_size
        w_hh = getattr(self, f"weight_hh{suffix}")
        projected = F.linear(seq, getattr(self, f"weight_ih{suffix}"), getattr(self, f"bias{suffix}"))  # (B, T, 4H)
        h = seq.new_zeros(b, 1, hid)
        c = seq.new_zeros(b, 1, hid)
        outs: list[torch.Tensor] = [h] * steps
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            gates = projected[:, t : t + 1] + F.linear(h, w_hh)  # (B, 1, 4H): i, f, g, o
            i, f = torch.sigmoid(gates[..., :hid]), torch.sigmoid(gates[..., hid : 2 * hid])
            g, o = torch.tanh(gates[..., 2 * hid : 3 * hid]), torch.sigmoid(gates[..., 3 * hid :])
            c = f * c + i * g
            h = o * torch.tanh(c)
            outs[t] = h
        return torch.cat(outs, dim=1), h.reshape(b, hid), c.reshape(b, hid)


def unroll_lstms(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of `model` with every nn.LSTM replaced by its UnrolledLSTM, and the names replaced."""
    model = copy.deepcopy(model)
    names = [name for name, m in model.named_modules() if type(m) is nn.LSTM]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, UnrolledLSTM.of(getattr(parent, child)))
    return model, names
