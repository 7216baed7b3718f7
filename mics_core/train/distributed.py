"""Stage-1 pre-training on several GPUs of one host: torchrun, one process per GPU.

The worker calls `pretrain_distributed`, which writes the records and settings to a
spec file and launches `torchrun --standalone --nproc-per-node N -m
mics_core.train.distributed SPEC OUT`. Every process loads the pairs, joins the process
group (NCCL on GPUs, gloo on the CPU — how the tests run it) and trains its share of each
batch under DistributedDataParallel; rank 0 prints progress lines the launcher forwards
to the job's reporter, and writes the encoders. Cancelling stops the whole process group.
Fine-tuning stays on one device: it trains on cached features in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mics_core.config import TrainSettings
from mics_core.data import PairRecord, load_pairs
from mics_core.progress import SILENT, Reporter
from mics_core.store import atomic_write
from mics_core.train.pretrain import Pretrained, pretrain

PROGRESS = "MICS-PROGRESS "


def pretrain_distributed(
    records: list[PairRecord], settings: TrainSettings, processes: int, reporter: Reporter = SILENT
) -> Pretrained:
    """Pre-train with `processes` torchrun workers; same result type as `pretrain`."""
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "encoders.safetensors"
        spec.write_text(json.dumps({"settings": settings.to_dict(), "records": [_record(r) for r in records]}))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        command += ["-m", "mics_core.train.distributed", str(spec), str(out)]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        tail: list[str] = []
        try:
            for line in process.stdout:
                if line.startswith(PROGRESS):
                    step, total, losses = json.loads(line[len(PROGRESS) :])
                    reporter.step("pretrain", step, total, losses)
                else:
                    tail = [*tail[-40:], line.rstrip()]
        except BaseException:  # cancelled, or the worker itself is stopping: free the GPUs too
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
        if process.wait() != 0 or not out.exists():
            raise RuntimeError("distributed pre-training failed:\n" + "\n".join(tail[-15:]))
        meta = json.loads((Path(tmp) / "encoders.json").read_text())
        return Pretrained(load_file(str(out)), meta["history"], meta["seconds"])


def _record(record: PairRecord) -> dict:
    return {**asdict(record), "wli": str(record.wli), "nbi": str(record.nbi) if record.nbi else None}


def _run(spec_path: Path, out: Path) -> None:
    """One torchrun process: join the group, pre-train its share, rank 0 writes the result."""
    spec = json.loads(spec_path.read_text())
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    settings = TrainSettings.from_dict(spec["settings"])
    cuda = settings.device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    settings = settings.replace(device=f"cuda:{local_rank}" if cuda else "cpu")
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank()
    try:
        records = [
            PairRecord(**{**r, "wli": Path(r["wli"]), "nbi": Path(r["nbi"]) if r["nbi"] else None})
            for r in spec["records"]
        ]
        reporter = Reporter(on_step=_print_progress) if rank == 0 else SILENT
        result = pretrain(load_pairs(records, settings.pretrain.image_size), settings, reporter)
        if rank == 0:
            atomic_write(out, lambda tmp: save_file(result.state, str(tmp)))
            meta = {"history": result.history, "seconds": result.seconds}
            (out.parent / "encoders.json").write_text(json.dumps(meta))
    finally:
        torch.distributed.destroy_process_group()


def _print_progress(phase: str, step: int, total: int, losses: dict[str, float]) -> None:
    print(PROGRESS + json.dumps([step, total, losses]), flush=True)


if __name__ == "__main__":
    _run(Path(sys.argv[1]), Path(sys.argv[2]))
