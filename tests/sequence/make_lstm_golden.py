"""Generate tests/sequence/golden/lstm_torch.npz: torch.nn.LSTM reference outputs for test_lstm.py.

Run with PyTorch installed (``pip install -e ".[torch]"``)::

    python -m tests.sequence.make_lstm_golden

For every configuration (uni/bidirectional x 1/2 layers x batch_first True/False
x with/without variable lengths) it stores the random torch parameters (torch
names), the input, h0, c0, lengths, and torch's output, h_n and c_n, as plain
float32/int64 arrays (no pickle) under keys ``"<case>.<name>"``. test_lstm.py
runs the same comparisons against this file when torch is not installed, and
against live torch when it is.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden" / "lstm_torch.npz"
# small sizes: the fixture stays a few tens of kilobytes
INPUT_SIZE, HIDDEN_SIZE, BATCH, SEQ_LEN = 3, 4, 4, 6
LENGTHS = np.array([6, 2, 1, 4], dtype=np.int64)  # unsorted, includes 1 and the full length


def case_names() -> list[str]:
    return [case_name(*c) for c in itertools.product((False, True), (1, 2), (True, False), (False, True))]


def case_name(bidirectional: bool, num_layers: int, batch_first: bool, use_lengths: bool) -> str:
    return f"bi{int(bidirectional)}_L{num_layers}_bf{int(batch_first)}_len{int(use_lengths)}"


def parse_case(name: str) -> tuple[bool, int, bool, bool]:
    bi, layers, bf, ln = name.split("_")
    return bi == "bi1", int(layers[1:]), bf == "bf1", ln == "len1"


def torch_case(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random torch.nn.LSTM, inputs and its outputs for one configuration (needs torch)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    bidirectional, num_layers, batch_first, use_lengths = parse_case(name)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=num_layers,
                         bidirectional=bidirectional, batch_first=batch_first)
    with torch.no_grad():  # weights wider than torch's default init, so errors show
        for p in lstm.parameters():
            p.uniform_(-0.8, 0.8, generator=gen)
    D = 2 if bidirectional else 1
    shape = (BATCH, SEQ_LEN, INPUT_SIZE) if batch_first else (SEQ_LEN, BATCH, INPUT_SIZE)
    x = torch.randn(shape, generator=gen)
    h0 = torch.randn(num_layers * D, BATCH, HIDDEN_SIZE, generator=gen)
    c0 = torch.randn(num_layers * D, BATCH, HIDDEN_SIZE, generator=gen)
    with torch.no_grad():
        if use_lengths:
            packed = pack_padded_sequence(x, torch.from_numpy(LENGTHS), batch_first=batch_first,
                                          enforce_sorted=False)
            out, (h_n, c_n) = lstm(packed, (h0, c0))
            out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=SEQ_LEN)
        else:
            out, (h_n, c_n) = lstm(x, (h0, c0))
    case = {k: v.detach().numpy().astype(np.float32) for k, v in lstm.state_dict().items()}
    case.update(x=x.numpy(), h0=h0.numpy(), c0=c0.numpy(), output=out.numpy(),
                h_n=h_n.numpy(), c_n=c_n.numpy())
    if use_lengths:
        case["lengths"] = LENGTHS.copy()
    return case


def load_golden(path: Path = GOLDEN) -> dict[str, dict[str, np.ndarray]]:
    cases: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            case, name = key.split(".", 1)
            cases.setdefault(case, {})[name] = z[key]
    return cases


def main() -> None:
    arrays = {}
    for i, name in enumerate(case_names()):
        for k, v in torch_case(name, seed=i).items():
            arrays[f"{name}.{k}"] = v
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(GOLDEN, **arrays)
    print(f"wrote {len(case_names())} cases to {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
