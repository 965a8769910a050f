"""Lightning DDP: 2 CPU processes with the gloo backend train a few steps and agree on the weights."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
def test_two_process_ddp_ranks_agree(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PL_DISABLE_FORK="1")
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=str(Path(__file__).resolve().parents[1]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(tmp_path / "world_rank0.pt") == 2 and torch.load(tmp_path / "world_rank1.pt") == 2
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    init = torch.load(tmp_path / "init_rank0.pt")
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.allclose(w0[k], w1[k], atol=1e-6), f"ranks disagree on {k}"
    assert any(not torch.allclose(w0[k], init[k]) for k in w0), "no training happened"
